"""The allocator agent: faust agents that keep each host's latest view and turn it into plans.

A plan is made every ``allocator.interval_s`` and at once when a process's class or tier
changes. It is published as one ``decisions`` batch per host (chunked), numbered by plan
sequence, when it differs from the last one published or every ``heartbeat_s``. Every live
process gets a decision: one without a class yet is housekeeping, so that nothing but the
critical tiers runs on their cores.

Each host's topology comes with its host samples (a collector sends it on its first sweep
and every minute). Until a host's has arrived, this host's own (or the configured profile)
stands in for this host, and another host waits: a plan for the wrong CPUs is worse than
none.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Iterable

import faust

from agents.allocation import (HOUSEKEEPING, MODES, ContainerTarget, Plan, ProcessTarget,
                               Utilization, plan, process_targets, to_decisions)
from agents.classification.classes import TIERS
from pipeline.app import decoded, keep_going
from pipeline.bus import Publisher, replay_topic, topic_types
from pipeline.events import (Classification, Command, ContainerSample, Decision, Decisions,
                             Envelope, HostSample, ProcessSample)
from pipeline.settings import DAYS, Settings
from pipeline.topology import Topology

log = logging.getLogger(__name__)


@dataclass
class HostView:
    """What the allocator knows of one host: the newest of each input."""
    classes: dict[tuple[int, int], Classification] = field(default_factory=dict)
    samples: dict[tuple[int, int], ProcessSample] = field(default_factory=dict)
    sweep: dict[tuple[int, int], ProcessSample] = field(default_factory=dict)  # being filled
    sweep_batch: str | None = None
    containers: dict[str, ContainerSample] = field(default_factory=dict)
    host_sample: HostSample | None = None
    topology: Topology | None = None
    commanded_mode: str | None = None
    previous: Plan | None = None
    planned_with: Topology | None = None     # the topology ``previous`` was made for
    published: tuple | None = None           # (mode, decision_key) of the last plan sent
    published_at: float = 0.0


def scheduled_mode(settings: Settings, now: datetime) -> str | None:
    """The mode of the first schedule entry covering ``now`` (local time), if any."""
    day = DAYS[now.weekday()]
    clock = now.strftime("%H:%M")
    for entry in settings.allocator.schedule:
        if day not in entry.days:
            continue
        inside = (entry.start <= clock < entry.end) if entry.start <= entry.end \
            else (clock >= entry.start or clock < entry.end)  # a span across midnight
        if inside:
            return entry.mode
    return None


def container_targets(view: HostView) -> list[ContainerTarget]:
    """Each container at the most protected tier among its processes' classes (housekeeping
    while none of them is classified): a container holds one service, and its cpuset must
    suit the part of it that needs the most."""
    rank = {tier: i for i, tier in enumerate(TIERS)}
    tiers: dict[str, str] = {}
    for key, sample in view.samples.items():
        c = view.classes.get(key)
        if sample.container_id and c is not None and c.tier in rank:
            old = tiers.get(sample.container_id)
            if old is None or rank[c.tier] < rank[old]:
                tiers[sample.container_id] = c.tier
    return [ContainerTarget(container_id=cid, tier=tiers.get(cid, HOUSEKEEPING),
                            cpu_share=c.cpu_share, name=c.name)
            for cid, c in sorted(view.containers.items())]


def decision_key(decisions: Iterable[Decision]) -> tuple:
    """What the applier acts on, without the reasons (their demand figures move every cycle)."""
    return tuple((d.target, d.pid, d.start_time, d.container_id, d.cpus, d.nice, d.ioclass,
                  d.iolevel, d.policy, d.cpu_shares, d.idle_latency_us) for d in decisions)


class AllocatorAgent:
    def __init__(self, settings: Settings, app: faust.App, publisher: Publisher,
                 topology: Topology, housekeeping_pids: Callable[[], Iterable[int]]) -> None:
        self.settings = settings
        self.publisher = publisher
        self.topology = topology
        self.housekeeping_pids = housekeeping_pids
        self.hosts: dict[str, HostView] = {}
        self.commanded_mode: str | None = None    # by a command for every host
        self._types = topic_types(settings, ("classifications", "process_samples",
                                             "container_samples", "host_sample", "command"))
        self.stats = {"plans": 0, "published": 0, "decisions": 0}
        self._install(app)

    # --- the view, driven by events ---------------------------------------------------------

    def view(self, host: str) -> HostView:
        return self.hosts.setdefault(host, HostView())

    def on_classifications(self, event: Envelope) -> bool:
        """Returns whether any class or tier changed (a reason to plan at once)."""
        view = self.view(event.host)
        changed = False
        for c in event.data.items:
            key = (c.pid, c.start_time)
            old = view.classes.get(key)
            changed |= old is None or (old.cls, old.tier) != (c.cls, c.tier)
            view.classes[key] = c
        return changed

    def on_samples(self, event: Envelope) -> None:
        # A sweep arrives in chunks; only a whole sweep says which processes are gone.
        view = self.view(event.host)
        data = event.data
        if data.batch != view.sweep_batch:
            view.sweep_batch, view.sweep = data.batch, {}
        view.sweep.update(((s.pid, s.start_time), s) for s in data.samples)
        if data.chunk == data.chunks - 1:
            view.samples = view.sweep
            live = view.samples.keys()
            view.classes = {k: c for k, c in view.classes.items() if k in live}

    def on_containers(self, event: Envelope) -> None:
        view = self.view(event.host)
        data = event.data
        if data.chunk == 0:
            view.containers = {}
        view.containers.update((c.id, c) for c in data.samples)

    def on_host_sample(self, event: Envelope) -> None:
        view = self.view(event.host)
        sample: HostSample = event.data
        view.host_sample = sample
        if sample.topology is not None:
            try:
                topology = Topology.from_dict(sample.topology)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("host %s sent a topology that cannot be read (%s); keeping the "
                            "last one", event.host, exc)
                return
            view.topology = topology

    def topology_for(self, host: str) -> Topology | None:
        """The host's own topology, else this host's for this host, else None (wait)."""
        view = self.view(host)
        if view.topology is not None:
            return view.topology
        return self.topology if host == self.publisher.stamper.host else None

    def on_command(self, event: Envelope) -> None:
        command: Command = event.data
        if command.name != "mode":
            return
        mode = command.args.get("mode")
        if mode != "auto" and mode not in MODES:
            log.warning("command %s asks for unknown mode %r; ignored", event.id, mode)
            return
        wanted = None if mode == "auto" else mode
        hosts = command.args.get("hosts")
        if hosts:
            for host in hosts:
                self.view(host).commanded_mode = wanted
        else:
            # Every host, those not seen yet included; it supersedes per-host commands.
            self.commanded_mode = wanted
            for view in self.hosts.values():
                view.commanded_mode = None
        log.info("mode %s for %s by command %s", mode, ", ".join(hosts or ["every host"]),
                 event.id)

    async def warm_up(self) -> int:
        """Replay the command topic so a mode an operator asked for before a restart still
        holds after it (the last command per host wins). Returns the commands read."""
        read = 0
        async for event in replay_topic(self.settings, "command", self._types):
            self.on_command(event)
            read += 1
        return read

    def mode_for(self, host: str, now: float) -> str:
        """A commanded mode (until 'auto'), else the schedule, else allocator.mode."""
        return (self.view(host).commanded_mode or self.commanded_mode
                or scheduled_mode(self.settings, datetime.fromtimestamp(now))
                or self.settings.allocator.mode)

    def make_plan(self, host: str, now: float) -> Plan | None:
        view = self.view(host)
        topology = self.topology_for(host)
        if not view.samples or topology is None:
            return None
        classified = process_targets(view.classes.values(), view.samples.values(),
                                     housekeeping_pids=self.housekeeping_pids())
        known = {(t.pid, t.start_time) for t in classified}
        own = set(self.housekeeping_pids())
        unclassified = [ProcessTarget(pid=s.pid, start_time=s.start_time, tier=HOUSEKEEPING,
                                      cls="unclassified", container_id=s.container_id,
                                      cpu_share=s.cpu_share, kernel_thread=s.kernel_thread,
                                      housekeeping=s.pid in own)
                        for key, s in view.samples.items() if key not in known]
        previous = view.previous
        if previous is not None and view.planned_with != topology:
            # Other CPUs: the old pools mean nothing now, but the sequence goes on.
            previous = replace(previous, pools=(), assignments=(), reserve=(), unused=())
        result = plan(topology, classified + unclassified + container_targets(view),
                      Utilization.from_host_sample(view.host_sample),
                      mode=self.mode_for(host, now), policy=self.settings.allocator.policy,
                      previous_plan=previous)
        view.previous, view.planned_with = result, topology
        self.stats["plans"] += 1
        return result

    # --- the shell ---------------------------------------------------------------------------

    async def replan(self, host: str) -> None:
        now = time.time()
        result = self.make_plan(host, now)
        if result is None:
            return
        view = self.view(host)
        decisions = to_decisions(result)
        key = (result.mode, decision_key(decisions))   # a new mode is news even if nothing moves
        if key == view.published and now - view.published_at < self.settings.allocator.heartbeat_s:
            return
        stamp = self.publisher.stamper.stamp
        events = [stamp(part, host=host) for part in self.publisher.batch(
            Decisions, decisions, "items", plan_seq=result.seq, mode=result.mode)]
        await self.publisher.publish_many(events)
        view.published, view.published_at = key, now
        self.stats["published"] += 1
        self.stats["decisions"] += len(decisions)

    def _install(self, app: faust.App) -> None:
        topics = app.corelane_topics  # type: ignore[attr-defined]
        prefix = self.settings.kafka.topic_prefix

        @app.agent(topics["classifications"], name=f"{prefix}allocator.classifications")
        async def classifications(stream: faust.StreamT) -> None:
            async for event in decoded(stream, self._types, self.publisher):
                with keep_going(log, f"planning for {event.host}"):
                    if self.on_classifications(event):
                        await self.replan(event.host)

        @app.agent(topics["process_samples"], name=f"{prefix}allocator.samples")
        async def samples(stream: faust.StreamT) -> None:
            async for event in decoded(stream, self._types, self.publisher):
                self.on_samples(event)

        @app.agent(topics["container_samples"], name=f"{prefix}allocator.containers")
        async def containers(stream: faust.StreamT) -> None:
            async for event in decoded(stream, self._types, self.publisher):
                self.on_containers(event)

        @app.agent(topics["host_sample"], name=f"{prefix}allocator.hosts")
        async def hosts(stream: faust.StreamT) -> None:
            async for event in decoded(stream, self._types, self.publisher):
                self.on_host_sample(event)

        @app.agent(topics["command"], name=f"{prefix}allocator.commands")
        async def commands(stream: faust.StreamT) -> None:
            async for event in decoded(stream, self._types, self.publisher):
                with keep_going(log, f"command {event.id}"):
                    self.on_command(event)
                    for host in list(self.hosts):
                        await self.replan(host)

        @app.timer(self.settings.allocator.interval_s)
        async def cycle() -> None:
            for host in list(self.hosts):
                with keep_going(log, f"planning for {host}"):
                    await self.replan(host)
