"""The tuner agent: host-local; the closed loop around ``StrategyTuner``.

It follows its host's plans (``decisions``) and which of them is applied (``enforcements``),
so it knows where the critical tiers run, with which priorities, and under which
strategy. While they have members it checks the placement in force: a burst of the
built-in wake-up probe where they run, and what the batch tiers and the critical tiers did
meanwhile, read from /proc. Each check is a ``measurement`` event; each decision of the
tuner (try a strategy, keep one, undo one) a ``strategy`` event with the figures that
decided it, which the allocator plans with.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agents.allocation.strategy import Check, StrategyTuner, Switch, percentile
from agents.applier import make_guard
from agents.contract import AgentStats, Handler, Position, Timer, event_health
from pipeline import procfs
from pipeline.bus import Publisher, read_tail, topic_types
from pipeline.collectors.wakeup_probe import ProbeError, WakeupProbe
from pipeline.events import (Chunks, Decision, Decisions, Envelope, Measurement, StrategyChoice,
                             joined)
from pipeline.health import PartHealth
from pipeline.settings import Settings
from pipeline.stats import counter, gauge, note
from pipeline.topology import cpulist_format, cpulist_parse
from pipeline.vocabulary import BATCH_TIERS, TIERS

log = logging.getLogger(__name__)

# Plans remembered while their enforcement is on its way.
KEEP_PLANS = 8


@dataclass(frozen=True)
class PlanView:
    """What the tuner needs of one plan."""
    plan_id: str
    strategy: str
    critical: tuple[tuple[int, int], ...]    # (pid, start_time) of the critical tiers
    batch: tuple[tuple[int, int], ...]
    cpus: tuple[int, ...]                    # where the most protected critical tier runs
    nice: int | None
    policy: str | None


def plan_view(plan_id: str, data: Decisions, critical_tiers: Sequence[str],
              manageable: Callable[[int, int], bool] = lambda pid, start: True) -> PlanView:
    """What the tuner needs of a plan; only the processes corelane may change count (work
    it may not place makes no strategy better or worse)."""
    procs = [d for d in data.items if d.target == "process" and d.pid is not None
             and manageable(d.pid, d.start_time or 0)]
    critical = [d for d in procs if d.tier in critical_tiers]
    first: list[Decision] = []
    for tier in critical_tiers:
        first = [d for d in critical if d.tier == tier]
        if first:
            break
    cpus = sorted({c for d in first for c in cpulist_parse(d.cpus)})
    return PlanView(plan_id=plan_id, strategy=data.strategy,
                    critical=tuple((d.pid, d.start_time or 0) for d in critical),
                    batch=tuple((d.pid, d.start_time or 0) for d in procs if d.tier in BATCH_TIERS),
                    cpus=tuple(cpus), nice=first[0].nice if first else None,
                    policy=first[0].policy if first else None)


@dataclass
class TunerStats(AgentStats):
    checks: int = counter("checks of the placement in force (probe bursts)")
    switches: int = counter("strategies tried, chosen or undone")
    last_p99_us: float | None = gauge("the last check's p99 wake-up lateness (µs)")
    strategy: str | None = note("the strategy in force")
    phase: str | None = note("idle (no critical work), settle, explore (trying) or exploit")


@dataclass
class _Reading:
    """Counters of the tiers' processes at one moment, per identity."""
    at: float
    batch_cpu_s: dict[tuple[int, int], float] = field(default_factory=dict)
    critical_delay_ns: dict[tuple[int, int], int] = field(default_factory=dict)


def _moved(before: dict, after: dict) -> dict:
    """The growth of each counter, over the processes read both times (one that came or
    went between the readings says nothing of the span)."""
    return {k: max(after[k] - v, 0) for k, v in before.items() if k in after}

# A batch process using this much of a core counts as busy batch work.
BUSY_SHARE = 0.1


class TunerAgent:
    name = "tuner"

    def __init__(self, settings: Settings, publisher: Publisher,
                 probe: WakeupProbe | None = None) -> None:
        self.settings = settings
        self.cfg = settings.closed_loop
        self.publisher = publisher
        self.probe = probe or WakeupProbe()
        self.tuner = StrategyTuner(self.cfg)
        self.critical_tiers = [t for t in TIERS if settings.allocator.policy.tier(t).exclusive]
        self.plans: dict[str, PlanView] = {}
        self._chunks: Chunks[Decisions] = Chunks()
        self.current: PlanView | None = None
        self.last_check: float | None = None
        self._busy = False
        self._guard = make_guard(settings, ())
        self._manageable: dict[tuple[int, int], bool] = {}
        self.stats = TunerStats(strategy=self.tuner.in_force, phase=self.tuner.phase)

    # --- events ------------------------------------------------------------------------------

    def handlers(self) -> Sequence[Handler]:
        return [Handler("decisions", self._decisions), Handler("enforcements", self._applied)]

    def timers(self) -> Sequence[Timer]:
        return [Timer("check", self.cfg.explore_every_s, self.tick)]

    async def warm_up(self) -> None:
        """The probe, started now so that the collector knows its pid before it sees any
        process start; and the strategy chosen by the previous run, with its trials."""
        await asyncio.to_thread(self.probe.start)
        span = self.cfg.reexplore_s
        newest: Envelope | None = None
        async for event in read_tail(self.settings, "strategy",
                                     topic_types(self.settings, ["strategy"]), span):
            if event.host == self.settings.host:
                newest = event
        if newest is not None:
            data: StrategyChoice = newest.data
            self.tuner.restore(data.strategy, data.state, data.figures, newest.ts,
                               data.load or "quiet")
            self.stats.strategy = self.tuner.in_force

    async def _decisions(self, event: Envelope, at: Position) -> None:
        if event.host != self.settings.host:
            return
        data: Decisions = event.data
        parts = self._chunks.add(data)
        if parts is None:
            return
        whole = Decisions(batch=data.batch, plan_seq=data.plan_seq, mode=data.mode,
                          strategy=data.strategy, items=joined(parts, "items"))
        self.plans[data.batch] = plan_view(data.batch, whole, self.critical_tiers,
                                           self.manageable)
        while len(self.plans) > KEEP_PLANS:
            self.plans.pop(next(iter(self.plans)))

    def manageable(self, pid: int, start: int) -> bool:
        """Whether the applier may change this process (in scope, not protected)."""
        key = (pid, start)
        known = self._manageable.get(key)
        if known is None:
            proc = self.settings.host_paths.proc
            stat = procfs.read_stat(proc, pid)
            known = stat is not None and stat.start_time == start and \
                self._guard.check(pid, stat, proc) is None
            if len(self._manageable) > 10_000:
                self._manageable.clear()
            self._manageable[key] = known
        return known

    async def _applied(self, event: Envelope, at: Position) -> None:
        if event.host != self.settings.host or event.data.chunk != event.data.chunks - 1:
            return
        view = self.plans.get(event.data.plan_id)
        if view is None:
            return
        before = self.current
        self.current = view
        if before is None or bool(before.critical) != bool(view.critical) \
                or before.strategy != view.strategy:
            self.last_check = None               # the placement changed: measure it afresh
        await self._publish_switches(self.tuner.on_critical(bool(view.critical), time.time()))

    # --- checks --------------------------------------------------------------------------------

    async def tick(self) -> None:
        now = time.time()
        await self._publish_switches(self.tuner.tick(now))
        view = self.current
        if view is None or self._busy or not view.critical or not view.cpus \
                or not self.tuner.due(now, self.last_check):
            self.stats.phase = self.tuner.phase
            return
        self._busy = True
        try:
            check = await asyncio.to_thread(self.check, view)
        except ProbeError as exc:
            log.warning("closed loop: no check this time: %s", exc)
            return
        finally:
            self._busy = False
        self.last_check = time.time()
        self.stats.checks += 1
        self.stats.last_p99_us = round(check.p99_us, 1)
        await self.publisher.publish(Measurement(
            strategy=check.strategy, plan_id=view.plan_id, cpus=cpulist_format(view.cpus),
            wakeups=len(check.latencies_us), interval_us=self.cfg.probe_interval_us,
            p50_us=round(percentile(check.latencies_us, 50), 1),
            p99_us=round(check.p99_us, 1), max_us=round(max(check.latencies_us), 1),
            span_s=round(self.last_check - check.ts, 3), batch_cpu=round(check.batch_cpu, 3),
            busy_batch=check.busy_batch,
            critical_delay_ms_s=round(check.critical_delay_ms_s, 3)))
        if self.current is view:                 # still the placement that was measured
            await self._publish_switches(self.tuner.on_check(check))

    def check(self, view: PlanView) -> Check:
        """One burst of the probe where the critical tiers run (blocking)."""
        before = self._read(view)
        latencies = self.probe.measure(view.cpus, self.cfg.probe_wakeups,
                                       self.cfg.probe_interval_us, view.nice, view.policy)
        after = self._read(view)
        span = max(after.at - before.at, 1e-3)
        batch = _moved(before.batch_cpu_s, after.batch_cpu_s)
        return Check(strategy=view.strategy, ts=before.at, latencies_us=tuple(latencies),
                     batch_cpu=sum(batch.values()) / span,
                     busy_batch=sum(1 for v in batch.values() if v / span >= BUSY_SHARE),
                     critical_delay_ms_s=sum(_moved(before.critical_delay_ns,
                                                    after.critical_delay_ns).values())
                     / 1e6 / span)

    def _read(self, view: PlanView) -> _Reading:
        proc = self.settings.host_paths.proc
        out = _Reading(at=time.time())
        for pid, start in view.batch:
            stat = procfs.read_stat(proc, pid)
            if stat is not None and stat.start_time == start:
                out.batch_cpu_s[(pid, start)] = (stat.utime + stat.stime) / procfs.CLOCK_TICKS
        for pid, start in view.critical:
            stat = procfs.read_stat(proc, pid)
            totals = procfs.thread_totals(proc, pid) if stat and stat.start_time == start else None
            if totals is not None:
                out.critical_delay_ns[(pid, start)] = totals.run_delay_ns
        return out

    async def _publish_switches(self, switches: list[Switch]) -> None:
        self.stats.phase = self.tuner.phase
        for s in switches:
            log.info("closed loop: %s %s (%s)", s.state, s.strategy, s.reason)
            await self.publisher.publish(StrategyChoice(
                strategy=s.strategy, state=s.state, reason=s.reason, previous=s.previous,
                figures=s.figures, load=s.load))
            self.stats.switches += 1
            self.stats.strategy = s.strategy
            self.last_check = None

    def health(self, now: float) -> PartHealth:
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        self.probe.stop()
