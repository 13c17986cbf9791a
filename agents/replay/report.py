"""Comparing two sides sweep by sweep, and the report it adds up to.

After every whole sweep of the window, each side says the class and the decision in force
for every live process (and container). Where the two disagree, a run of disagreement
opens for that target and closes when they agree again. A run no longer than the timing
tolerance is only timing (the live allocator plans on a timer and hears of a class through
the bus; a replay plans on the sweep): it is counted, not reported. A longer run is a
difference: counted per tier, and the first few of each tier kept as examples, each with
the reason it exists.

Per side and tier it also adds up what the placement meant: members, class changes, moves
(targets whose cpus changed), the pool's cores against the members' measured demand (CPU
share plus run-queue delay, in cores) and the seconds in which demand was above the cores,
and the members' measured run-queue delay. Demand and delay are what the host recorded; a
side only groups them by the tiers it gave.

Everything is a function of the events: two runs over the same window give the same report.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from agents.replay.sides import Side, TargetKey
from pipeline.events import Classification, Decision, ProcessSample
from pipeline.topology import cpulist_parse
from pipeline.vocabulary import HOUSEKEEPING

EXAMPLES_PER_TIER = 5
DECISION_FIELDS = ("cpus", "nice", "policy", "ioclass")

# (reason, explained): why a difference exists, and whether that is a known cause.
Explainer = Callable[["Difference"], tuple[str, bool]]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat(
        timespec="seconds") + "Z"


def placement(d: Decision | None) -> tuple | None:
    return None if d is None else (d.cpus, d.nice, d.policy, d.ioclass)


def describe_decision(d: Decision | None) -> str:
    if d is None:
        return "no decision yet"
    bits = [f"cpus {d.cpus}"]
    bits += [f"{name} {getattr(d, name)}" for name in DECISION_FIELDS[1:]
             if getattr(d, name) is not None]
    return f"{d.tier}: " + ", ".join(bits)


def describe_class(c: Classification | None) -> str:
    if c is None:
        return "not classified yet"
    return f"{c.cls} ({c.tier}, {c.source}: {c.reason})" if c.reason else \
        f"{c.cls} ({c.tier}, {c.source})"


@dataclass
class Difference:
    """One run of disagreement about one target."""
    kind: str                          # "class" or "decision"
    key: TargetKey
    name: str
    tier: str                          # the base side's tier for it
    start: float
    last: float
    base: str                          # what each side said when it began
    other: str
    base_raw: Any = None
    other_raw: Any = None
    reason: str = ""
    explained: bool = True

    @property
    def seconds(self) -> float:
        return self.last - self.start

    def example(self) -> dict[str, Any]:
        target = (f"pid {self.key[1]} ({self.name})" if self.key[0] == "process"
                  else f"container {str(self.key[1])[:12]} ({self.name})")
        return {"at": iso(self.start), "seconds": round(self.seconds, 1), "kind": self.kind,
                "target": target, "base": self.base, "other": self.other,
                "reason": self.reason, "explained": self.explained}


@dataclass
class TierFigures:
    """One side's figures for one tier."""
    processes: set = field(default_factory=set)
    containers: set = field(default_factory=set)
    class_changes: int = 0
    moves: int = 0
    seconds: float = 0.0               # sweep-seconds in which the tier had members
    demand_core_s: float = 0.0
    cores_core_s: float = 0.0
    overcommitted_s: float = 0.0
    delay_ms: float = 0.0              # run-queue delay of the members, ms in all
    minutes: dict[int, list[float]] = field(default_factory=dict)  # minute -> figures

    def minute(self, m: int) -> list[float]:
        row = self.minutes.get(m)
        if row is None:
            # demand core-s, cores core-s, seconds, overcommitted s, moves, class changes
            row = self.minutes[m] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        return row


@dataclass
class DifferenceFigures:
    count: int = 0
    seconds: float = 0.0
    unexplained: int = 0
    examples: list[tuple[float, str, Difference]] = field(default_factory=list)   # a heap

    def add(self, d: Difference) -> None:
        self.count += 1
        self.seconds += d.seconds
        self.unexplained += not d.explained
        item = (-d.start, repr(d.key), d)          # keep the earliest few
        if len(self.examples) < EXAMPLES_PER_TIER:
            heapq.heappush(self.examples, item)
        elif item > self.examples[0]:
            heapq.heapreplace(self.examples, item)

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.examples, key=lambda x: (-x[0], x[1]))
        return {"count": self.count, "seconds": round(self.seconds, 1),
                "unexplained": self.unexplained,
                "examples": [d.example() for _, _, d in ordered]}


def _round(x: float, digits: int = 3) -> float:
    return round(x, digits) + 0.0          # no "-0.0"


class Comparison:
    """Feed ``sweep`` after every whole sweep and ``moved`` when a side's plan changes;
    ``report`` adds it up."""

    def __init__(self, base: Side, other: Side, t_from: float, t_to: float,
                 tolerance_s: float, explain: Explainer, interval_s: float = 1.0) -> None:
        self.sides = (base, other)
        self.t_from, self.t_to = t_from, t_to
        self.tolerance_s = tolerance_s
        self.explain = explain
        self.interval_s = interval_s
        self.tiers: tuple[dict[str, TierFigures], dict[str, TierFigures]] = ({}, {})
        self.differences: dict[tuple[str, str], DifferenceFigures] = {}   # (tier, kind)
        self.timing: dict[str, int] = {"class": 0, "decision": 0}
        self._open: dict[tuple[str, TargetKey], Difference] = {}
        self._delay: dict[tuple[int, int], tuple[float, int]] = {}
        self._classes: list[dict] = [{}, {}]     # each side's classes at the last sweep
        self._cores: list[tuple[int, dict[str, int]]] = [(-1, {}), (-1, {})]
        self._last_ts: float | None = None
        self.sweeps = 0
        self.samples = 0
        self.gaps: list[tuple[float, float]] = []     # sweeps missing from the history
        self.names: dict[TargetKey, str] = {}

    def figures(self, side: int, tier: str) -> TierFigures:
        tiers = self.tiers[side]
        fig = tiers.get(tier)
        if fig is None:
            fig = tiers[tier] = TierFigures()
        return fig

    def moved(self, side: int, moves: dict[str, int] | None, ts: float) -> None:
        for tier, n in (moves or {}).items():
            fig = self.figures(side, tier)
            fig.moves += n
            fig.minute(self._minute(ts))[4] += n

    def _minute(self, ts: float) -> int:
        return int(max(0.0, ts - self.t_from) // 60)

    def _pool_cores(self, side: int) -> dict[str, int]:
        state = self.sides[side].state
        version, cores = self._cores[side]
        if version != state.plans:
            cpus: dict[str, set[int]] = {}
            for d in state.decisions.values():
                cpus.setdefault(d.tier, set()).update(cpulist_parse(d.cpus))
            cores = {tier: len(c) for tier, c in cpus.items()}
            self._cores[side] = (state.plans, cores)
        return cores

    def sweep(self, ts: float, samples: list[ProcessSample]) -> None:
        dt = self.interval_s if self._last_ts is None else ts - self._last_ts
        if self._last_ts is not None and dt > 2.5 * self.interval_s:
            self.gaps.append((self._last_ts, ts))
            dt = self.interval_s
        self._last_ts = ts
        self.sweeps += 1
        self.samples += len(samples)
        minute = self._minute(ts)
        # Each process's measured demand: its CPU share plus the run-queue delay it had.
        delays, demand, delay_ms = {}, {}, {}
        for s in samples:
            key = (s.pid, s.start_time)
            before = self._delay.get(key)
            waited = 0.0
            if before is not None and ts > before[0] and s.run_delay_ns >= before[1]:
                waited = (s.run_delay_ns - before[1]) / 1e9 / (ts - before[0])
            delays[key] = (ts, s.run_delay_ns)
            demand[key] = s.cpu_share + waited
            delay_ms[key] = waited * 1000.0 * dt
            self.names[("process", s.pid, s.start_time)] = s.name
        self._delay = delays
        per_side = []
        for side_index, side in enumerate(self.sides):
            decisions = side.state.decisions
            classes = side.classes()
            tiers: dict[str, list[float]] = {}
            seen_classes = self._classes[side_index]
            now_classes = {}
            for s in samples:
                pkey = (s.pid, s.start_time)
                d = decisions.get(("process", s.pid, s.start_time))
                tier = d.tier if d is not None else HOUSEKEEPING
                fig = self.figures(side_index, tier)
                fig.processes.add(pkey)
                if s.container_id:
                    fig.containers.add(s.container_id)
                acc = tiers.get(tier)
                if acc is None:
                    acc = tiers[tier] = [0.0, 0.0]
                acc[0] += demand[pkey]
                acc[1] += delay_ms[pkey]
                c = classes.get(pkey)
                now_classes[pkey] = c
                if c is not None:
                    old = seen_classes.get(pkey)
                    if old is not None and old.cls != c.cls:
                        fig.class_changes += 1
                        fig.minute(minute)[5] += 1
            self._classes[side_index] = now_classes
            cores = self._pool_cores(side_index)
            for tier, (dem, waited_ms) in tiers.items():
                fig = self.figures(side_index, tier)
                have = cores.get(tier, 0)
                over = dt if dem > have else 0.0
                fig.seconds += dt
                fig.demand_core_s += dem * dt
                fig.cores_core_s += have * dt
                fig.overcommitted_s += over
                fig.delay_ms += waited_ms
                row = fig.minute(minute)
                row[0] += dem * dt
                row[1] += have * dt
                row[2] += dt
                row[3] += over
            per_side.append((decisions, classes))
        self._compare(ts, samples, per_side)

    def _compare(self, ts: float, samples: list[ProcessSample], per_side: list) -> None:
        (base_dec, base_cls), (other_dec, other_cls) = per_side
        live: set[tuple[str, TargetKey]] = set()
        keys: list[TargetKey] = [("process", s.pid, s.start_time) for s in samples]
        keys += sorted({k for k in (*base_dec, *other_dec) if k[0] == "container"})
        for key in keys:
            b, o = base_dec.get(key), other_dec.get(key)
            tier = b.tier if b is not None else (o.tier if o is not None else HOUSEKEEPING)
            if placement(b) != placement(o):
                live.add(("decision", key))
                self._disagree("decision", key, tier, ts, describe_decision(b),
                               describe_decision(o), b, o)
            if key[0] == "process":
                bc, oc = base_cls.get(key[1:]), other_cls.get(key[1:])
                if (bc and (bc.cls, bc.tier)) != (oc and (oc.cls, oc.tier)):
                    live.add(("class", key))
                    self._disagree("class", key, tier, ts, describe_class(bc),
                                   describe_class(oc), bc, oc)
        for run_key in [k for k in self._open if k not in live]:
            self._close(run_key, ts)

    def _disagree(self, kind: str, key: TargetKey, tier: str, ts: float, base: str,
                  other: str, base_raw: Any, other_raw: Any) -> None:
        run = self._open.get((kind, key))
        if run is None:
            self._open[(kind, key)] = Difference(
                kind=kind, key=key, name=self.names.get(key, ""), tier=tier, start=ts,
                last=ts, base=base, other=other, base_raw=base_raw, other_raw=other_raw)
        else:
            run.last = ts

    def _close(self, run_key: tuple[str, TargetKey], ts: float) -> None:
        run = self._open.pop(run_key)
        run.last = ts           # they agree from this sweep on (or the target is gone)
        if run.seconds <= self.tolerance_s:
            self.timing[run.kind] += 1
            return
        run.reason, run.explained = self.explain(run)
        figures = self.differences.get((run.tier, run.kind))
        if figures is None:
            figures = self.differences[(run.tier, run.kind)] = DifferenceFigures()
        figures.add(run)

    def finish(self) -> None:
        end = self.t_to if self._last_ts is None else min(self.t_to,
                                                          self._last_ts + self.interval_s)
        for run_key in sorted(self._open, key=repr):
            self._close(run_key, end)

    # --- the report -------------------------------------------------------------------------

    def tier_report(self, side: int, minutes: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        span_min = max(minutes, 1)
        for tier in sorted(self.tiers[side]):
            f = self.tiers[side][tier]
            secs = f.seconds or 1.0
            out[tier] = {
                "processes": len(f.processes), "containers": len(f.containers),
                "class_changes": f.class_changes, "moves": f.moves,
                "moves_per_minute": _round(f.moves / span_min),
                "demand_cores_avg": _round(f.demand_core_s / secs),
                "pool_cores_avg": _round(f.cores_core_s / secs),
                "overcommitted_s": _round(f.overcommitted_s, 1),
                "run_delay_ms_s": _round(f.delay_ms / secs),
                # minute, demand (cores), pool cores, overcommitted s, moves, class changes
                "timeline": [[m, _round(r[0] / r[2]) if r[2] else 0.0,
                              _round(r[1] / r[2]) if r[2] else 0.0, _round(r[3], 1),
                              int(r[4]), int(r[5])] for m, r in sorted(f.minutes.items())],
            }
        total = sum(f.moves for f in self.tiers[side].values())
        return {"tiers": out, "moves": total, "moves_per_minute": _round(total / span_min),
                "plans": self.sides[side].state.plans, "mode": self.sides[side].state.mode}

    def report(self) -> dict[str, Any]:
        minutes = max(1, round((self.t_to - self.t_from) / 60))
        diffs: dict[str, dict[str, Any]] = {}
        for (tier, kind), figures in sorted(self.differences.items()):
            diffs.setdefault(tier, {})[kind] = figures.to_dict()
        unexplained = sum(f.unexplained for f in self.differences.values())
        return {
            "sweeps": self.sweeps, "samples": self.samples,
            "gaps": [[iso(a), iso(b)] for a, b in self.gaps],
            "tolerance_s": self.tolerance_s,
            "timing_only": dict(self.timing),
            "differences": diffs,
            "difference_count": sum(f.count for f in self.differences.values()),
            "unexplained": unexplained,
            "sides": {side.name: self.tier_report(i, minutes)
                      for i, side in enumerate(self.sides)},
        }
