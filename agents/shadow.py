"""A shadow policy: another classifier and allocator configuration run on the live samples,
beside the live one, whose plans are recorded and never applied.

It reads what the live agents read (samples, labels, containers, host samples, commands,
strategy choices) and runs the same cores (``HostClassifiers``, ``Planner``) under its own
configuration. Its plans go to ``corelane.shadow.decisions`` with its name in ``policy``;
the applier never reads that topic, and the recorder stores it in ``shadow_decisions``, so
``corelane replay --shadow NAME`` can compare it with what the live policy did.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agents.allocation import pool_states, to_decisions
from agents.allocation.hosts import Planner
from agents.classification.hosts import HostClassifiers
from agents.classification.model import OnlineModel
from agents.classification.rules import load_rule_set
from agents.classification.snapshots import load_model
from agents.contract import AgentStats, Handler, Position, Timer, event_health, keep_going
from pipeline.bus import Publisher
from pipeline.events import Envelope, ShadowDecisions
from pipeline.health import PartHealth
from pipeline.settings import ConfigError, Settings, load_settings
from pipeline.stats import counter
from pipeline.topology import Topology, cpulist_format

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class ShadowSpec:
    name: str
    settings: Settings


def parse_shadow(given: str) -> ShadowSpec:
    """``NAME=FILE`` as given to ``--shadow``; raises ConfigError saying what is wrong."""
    name, sep, path = given.partition("=")
    if not sep or not path:
        raise ConfigError(f"--shadow {given!r}: give NAME=FILE, e.g. "
                          f"--shadow no-exclusive=shadow.yml")
    if not _NAME.match(name) or name == "live":
        raise ConfigError(f"--shadow {given!r}: a shadow policy's name is 1 to 40 letters, "
                          f"digits, '-' or '_', and not 'live'")
    return ShadowSpec(name, load_settings(path))


@dataclass
class ShadowStats(AgentStats):
    plans: int = counter("plans made")
    published: int = counter("plans published (changed, or a heartbeat)")


class ShadowAgent:
    def __init__(self, spec: ShadowSpec, publisher: Publisher, topology: Topology,
                 housekeeping_pids: Callable[[], Iterable[int]],
                 model: OnlineModel | None = None) -> None:
        self.policy = spec.name
        self.name = f"shadow-{spec.name}"
        self.settings = spec.settings
        self.publisher = publisher
        cfg = spec.settings.classifier
        # Its own copy of the live model where the kind matches: it learns apart from it.
        if model is None:
            model = load_model(spec.settings)
            if model.kind != cfg.model:
                model = OnlineModel(cfg.model, drift_delta=cfg.drift_delta)
        self.classifiers = HostClassifiers(cfg, model, load_rule_set(spec.settings))
        self.planner = Planner(spec.settings, topology, publisher.stamper.host,
                               housekeeping_pids)
        self.stats = ShadowStats()

    def handlers(self) -> Sequence[Handler]:
        return [Handler("process_samples", self._samples), Handler("label", self._label),
                Handler("container_samples", self._containers),
                Handler("host_sample", self._host_sample), Handler("command", self._command),
                Handler("strategy", self._strategy)]

    def timers(self) -> Sequence[Timer]:
        return [Timer("plan cycle", self.settings.allocator.interval_s, self._cycle)]

    async def warm_up(self) -> None:
        await self.publisher.publish(self.settings.configuration(policy=self.policy))

    def on_samples(self, event: Envelope) -> bool:
        """Returns whether a class or tier changed (a reason to plan at once)."""
        self.planner.on_samples(event)
        return self.planner.take_classes(event.host,
                                         self.classifiers.on_samples(event).classifications)

    async def _samples(self, event: Envelope, at: Position) -> None:
        if self.on_samples(event):
            await self.replan(event.host)

    async def _label(self, event: Envelope, at: Position) -> None:
        self.classifiers.on_label(event)

    async def _containers(self, event: Envelope, at: Position) -> None:
        self.classifiers.on_containers(event)
        self.planner.on_containers(event)

    async def _host_sample(self, event: Envelope, at: Position) -> None:
        self.classifiers.on_host_sample(event)
        self.planner.on_host_sample(event)

    async def _command(self, event: Envelope, at: Position) -> None:
        forced = set(self.planner.on_command(event))
        for host in list(self.planner.hosts):
            await self.replan(host, force=host in forced)

    async def _strategy(self, event: Envelope, at: Position) -> None:
        self.planner.on_strategy(event)
        await self.replan(event.host)

    async def _cycle(self) -> None:
        for host in list(self.planner.hosts):
            with keep_going(f"shadow {self.policy}: planning for {host}", self.stats):
                await self.replan(host)

    async def replan(self, host: str, force: bool = False) -> None:
        now = time.time()
        result = self.planner.make_plan(host, now)
        if result is None:
            return
        self.stats.plans += 1
        decisions = to_decisions(result)
        if not self.planner.due(host, result, decisions, now, force):
            return
        stamp = self.publisher.stamper.stamp
        await self.publisher.publish_many([stamp(part, host=host) for part in self.publisher.batch(
            ShadowDecisions, decisions, "items", plan_seq=result.seq, mode=result.mode,
            strategy=result.strategy, pools=pool_states(result),
            reserve=cpulist_format(result.reserve), policy=self.policy)])
        self.stats.published += 1

    def health(self, now: float) -> PartHealth:
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        pass
