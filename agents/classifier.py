"""The classifier agent: faust agents around the pure ``Classifier``.

It consumes process sample batches (one chunk at a time), labels and container samples,
publishes each cycle's classifications as one batch per host and drift as alerts, and
snapshots the model. Each host has its own ``Classifier`` (identities never mix across
hosts); all of them share one online model and one rule set.

Windows survive a restart by re-reading the window's span of the samples topic before the
agent starts (``warm_up``): the span is seconds of data, where one faust table write per
process per second would be more than faust carries at 1,000 processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from agents.classification.decide import SweepResult
from agents.classification import sharing
from agents.classification.hosts import HostClassifiers
from agents.classification.model import OnlineModel
from agents.classification.rules import RuleSet, load_rule_set
from agents.classification.snapshots import load_model, model_shelf
from agents.contract import AgentStats, Handler, Position, Timer, event_health
from agents.ownership import Ownership, OwnsHosts, read_tails
from pipeline.bus import Publisher, read_tail, replay_topic, topic_types
from pipeline.events import Classification, Classifications, Envelope
from pipeline.health import PartHealth
from pipeline.settings import Settings
from pipeline.stats import counter

log = logging.getLogger(__name__)

@dataclass
class ClassifierStats(AgentStats):
    sweeps: int = counter("sample chunks classified")
    classifications: int = counter("classifications published")
    alerts: int = counter("alerts published (model drift)")
    learned: int = counter("labelled windows the model learned from")
    shared: int = counter("model snapshots published for the other workers")
    merged: int = counter("other workers' model snapshots merged into this one")


class ClassifierAgent(HostClassifiers, OwnsHosts):
    """The per-host classifiers (``agents.classification.hosts``) on the bus."""
    name = "classifier"

    def __init__(self, settings: Settings, publisher: Publisher,
                 model: OnlineModel | None = None, rules: RuleSet | None = None,
                 ownership: Ownership | None = None, share_model: bool = False) -> None:
        """With ``ownership`` (a worker of a group) it judges only the hosts of its
        partitions and rebuilds a host's windows when it takes the host over; without, it
        judges every host and rebuilds them all on start. ``share_model``: the model meets
        the other workers' (``agents.classification.sharing``)."""
        super().__init__(settings.classifier,
                         model if model is not None else load_model(settings),
                         rules if rules is not None else load_rule_set(settings))
        self.settings = settings
        self.publisher = publisher
        self.ownership = ownership
        self.share_model = share_model
        self.origin = f"{settings.host}:{os.getpid()}"   # this worker, to the others
        self._learned_before = self.model.n_learned      # what it knew on start...
        self._given = 0                                  # ...and what the others gave it
        self.last_offset: int | None = None
        self.last_ts: float | None = None      # of the last sample event learned from
        self.stats = ClassifierStats()

    def on_samples(self, event: Envelope) -> SweepResult:
        result = super().on_samples(event)
        self.stats.sweeps += 1
        self.stats.learned += result.learned
        return result

    # --- the shell: the contract, publishing, snapshots -------------------------------------

    def handlers(self) -> Sequence[Handler]:
        return [Handler("process_samples", self._samples),
                Handler("container_samples", self._containers),
                Handler("host_sample", self._host_sample),
                *(() if self.ownership is not None else self.broadcasts())]

    def broadcasts(self) -> Sequence[Handler]:
        """What every worker of a group reads on every partition (``follow_broadcasts``):
        a label by pattern reaches every host, whichever worker judges it."""
        return [Handler("label", self._label)]

    def timers(self) -> Sequence[Timer]:
        return [Timer("model snapshot", self.settings.classifier.snapshot_interval_s,
                      self._snapshot)]

    async def _samples(self, event: Envelope, at: Position) -> None:
        if not self.mine(event.host):
            return
        await self._publish(event.host, self.on_samples(event))
        self.last_offset, self.last_ts = at.offset, event.ts

    async def _label(self, event: Envelope, at: Position) -> None:
        # every worker keeps every host's labels: the one that takes a host over has them
        self.on_label(event)

    async def _containers(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_containers(event)

    async def _host_sample(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_host_sample(event)

    async def _snapshot(self) -> None:
        await asyncio.to_thread(self.save_model)
        if self.share_model:
            await self.exchange_model()

    @property
    def learned_here(self) -> int:
        """Windows this worker's model learned itself since it started (its weight when
        the models meet)."""
        return self.model.n_learned - self._learned_before - self._given

    async def exchange_model(self, publish: bool = True) -> int:
        """Publish this model for the other workers (``publish``), then merge in the newest
        snapshot of each other worker (``agents.classification.sharing``); returns how many
        were merged."""
        if publish:
            mine = sharing.export(self.model, self.origin, self.learned_here)
            if mine is not None and mine.learned > 0:
                await self.publisher.publish(mine)
                self.stats.shared += 1
        span = 3 * self.settings.classifier.snapshot_interval_s
        peers = sharing.newest_per_origin(
            [e.data async for e in read_tail(self.settings, "model_snapshot",
                                             topic_types(self.settings, ["model_snapshot"]),
                                             span)], skip=self.origin)
        before = self.model.n_learned
        merged = sharing.merge(self.model, self.learned_here, peers)
        self._given += self.model.n_learned - before
        if merged:
            self.stats.merged += merged
            log.debug("model %s merged with %d other workers' (%s)", self.model.tag, merged,
                      ", ".join(p.origin for p in peers))
        return merged

    def health(self, now: float) -> PartHealth:
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        self.save_model()

    async def _publish(self, host: str, result: SweepResult) -> None:
        # The envelope's host is where the processes run, not where this worker runs.
        stamp = self.publisher.stamper.stamp
        events = []
        if result.classifications:
            events += [stamp(part, host=host) for part in self.publisher.batch(
                Classifications, result.classifications, "items")]
        events += [stamp(alert, host=host) for alert in result.alerts]
        if events:
            await self.publisher.publish_many(events)
            self.stats.classifications += len(result.classifications)
            self.stats.alerts += len(result.alerts)

    def save_model(self) -> None:
        if not self.model.n_learned:
            return  # nothing learned: a snapshot would only hide that
        shelf = model_shelf(self.settings)
        version = shelf.save(self.model, self.last_offset, self.last_ts)
        shelf.prune(self.settings.storage.raw_retention_h * 3600)
        log.info("model snapshot v%d saved to %s", version, shelf.folder)

    async def warm_up(self) -> None:
        if self.share_model:
            # a worker that joins judges with what the group has learned from the start
            merged = await self.exchange_model(publish=False)
            if merged:
                log.info("model %s: took in what %d other workers learned", self.model.tag,
                         merged)
        if self.ownership is None:
            await self.rebuild_windows()
        # else: no host is this worker's until faust assigns it partitions (take_over)

    def release(self, partitions: frozenset[int]) -> None:
        """Forget the hosts of partitions another worker owns now."""
        gone = self.hosts_on(partitions)
        self.forget_hosts(gone)
        if gone:
            log.info("classifier: hosts %s handed on with partitions %s", ", ".join(gone),
                     sorted(partitions))

    async def take_over(self, partitions: frozenset[int]) -> None:
        """The hosts of ``partitions`` are this worker's now: each process's class as it was
        last said (the tail of the classifications topic, one heartbeat and a window back)
        is taken as the judgement in force, so that it changes only as it would have under
        the previous owner, then the windows are rebuilt from the samples topic."""
        cfg = self.settings.classifier
        self.forget_hosts(self.hosts_on(partitions))   # what it held is older than the topics
        # ... and each host's boot time, which its processes' ages (their start-up) count from
        tails = await read_tails(self.settings, partitions, {
            "classifications": cfg.heartbeat_s + cfg.window_s,
            "host_sample": 2 * self.settings.collector.interval_s})
        judged, booted = tails["classifications"], tails["host_sample"]
        said: dict[str, dict[tuple[int, int], tuple[float, Classification]]] = {}
        for event in judged:
            classes = said.setdefault(event.host, {})
            for c in event.data.items:
                classes[(c.pid, c.start_time)] = (event.ts, c)
        for host, classes in said.items():
            self.seed(host, classes)
        for event in booted:
            self.on_host_sample(event)
        read = await self.rebuild_windows(partitions=partitions)
        log.info("classifier took over partitions %s: %d hosts' classes, %d sample batches",
                 sorted(partitions), len(said), read)

    async def rebuild_windows(self, window_s: float | None = None,
                              partitions: frozenset[int] | None = None) -> int:
        """Rebuild every process's window (of the hosts on ``partitions``, when given) from
        the last ``window_s`` of samples on the topic, then say each rebuilt class once (as
        a heartbeat would), so that readers need not wait for a change. Returns the number
        of sample batches read."""
        window_s = self.settings.classifier.window_s if window_s is None else window_s
        read = 0
        seen: dict[str, set[tuple[int, int]]] = {}
        types = topic_types(self.settings, ["process_samples"])
        async for event in replay_topic(self.settings, "process_samples", types,
                                        since_s=window_s, partitions=partitions):
            self.on_samples(event)
            seen.setdefault(event.host, set()).update(
                (s.pid, s.start_time) for s in event.data.samples)
            read += 1
        for host, keys in seen.items():
            decider = self.hosts[host].decider
            current = []
            for pid, start_time in keys:
                state = decider.current((pid, start_time))
                if state is not None and state.cls is not None and state.tier is not None:
                    current.append(Classification(
                        pid=pid, start_time=start_time, cls=state.cls, tier=state.tier,
                        confidence=state.confidence, source=state.source or "model",
                        reason=f"{state.reason} (after restart)".strip()))
            await self._publish(host, SweepResult(classifications=current))
        if read:
            log.info("classifier windows rebuilt from %d sample batches of the last %.0f s",
                     read, window_s)
        return read

