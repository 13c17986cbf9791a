"""The closed loop's choice of strategy: pure, with time given, so replay can run it.

A strategy (``STRATEGIES``) is a hypothesis about a host: which way of keeping the critical
tiers quiet makes their wake-ups most punctual here. ``StrategyTuner`` tests it. While the
critical tiers have members it tries each candidate in turn for a few checks (a check is a
burst of the built-in probe's wake-ups where the critical tiers run, with their
priorities), keeps the one with the lowest p99 lateness, preferring among those within
``tolerance`` of the best the one that leaves batch work the most CPU, and then watches it:
when its last checks measure worse than the best other strategy did, it is undone. Beside
busy batch work only a strategy that leaves it ``batch_share`` of the most CPU any
strategy left it may be kept (a trial that leaves it less ends after one check). Every
try, choice and undo is a ``Switch`` carrying the figures that decided it; the agent
publishes each as a ``StrategyChoice`` event.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.settings import ClosedLoopSettings


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


@dataclass(frozen=True)
class Check:
    """One measurement of the strategy in force."""
    strategy: str
    ts: float
    latencies_us: tuple[float, ...]          # the probe's lateness, one per wake-up
    batch_cpu: float = 0.0                   # cores the batch tiers used meanwhile
    critical_delay_ms_s: float = 0.0
    busy_batch: int = 0                      # batch processes that used a tenth of a core

    @property
    def p99_us(self) -> float:
        return percentile(self.latencies_us, 99)


@dataclass
class Trial:
    """What one strategy measured, over one or more checks (or as recorded earlier)."""
    strategy: str
    latencies_us: list[float] = field(default_factory=list)
    batch_cpu: list[float] = field(default_factory=list)
    checks: int = 0
    recorded_p99_us: float | None = None     # from an earlier run's event: no raw values

    def add(self, check: Check) -> None:
        self.latencies_us.extend(check.latencies_us)
        self.batch_cpu.append(check.batch_cpu)
        self.checks += 1

    @property
    def p99_us(self) -> float:
        if self.latencies_us:
            return percentile(self.latencies_us, 99)
        return self.recorded_p99_us if self.recorded_p99_us is not None else math.nan

    @property
    def mean_batch_cpu(self) -> float:
        return sum(self.batch_cpu) / len(self.batch_cpu) if self.batch_cpu else 0.0

    def figures(self) -> dict[str, float]:
        out = {"p99_us": round(self.p99_us, 1), "wakeups": float(len(self.latencies_us)),
               "batch_cpu": round(self.mean_batch_cpu, 3), "checks": float(self.checks)}
        if self.latencies_us:
            out["p50_us"] = round(percentile(self.latencies_us, 50), 1)
        return {k: v for k, v in out.items() if not math.isnan(v)}

    @classmethod
    def from_figures(cls, strategy: str, figures: Mapping[str, float]) -> Trial:
        return cls(strategy, batch_cpu=[float(figures.get("batch_cpu", 0.0))],
                   checks=int(figures.get("checks", 0)),
                   recorded_p99_us=float(figures.get("p99_us", math.nan)))


@dataclass(frozen=True)
class Switch:
    """A decision of the tuner: from now on, plan with ``strategy``."""
    strategy: str
    state: str                               # "trial" | "chosen" | "undone"
    reason: str
    previous: str
    figures: dict[str, dict[str, float]]
    load: str = ""                           # the batch load it was decided for


# What batch work is doing, as far as the choice goes: a strategy that wins beside busy
# batch work can lose on a host where it sleeps (a halted core), so each is measured apart.
QUIET, LOADED = "quiet", "loaded"


@dataclass
class Memory:
    """What was measured for one batch load: the trials, the choice made from them, and
    the last checks of the strategy in force (kept while critical work comes and goes or
    the load changes, so a choice that measures worse is undone even where no stretch of
    one load lasts ``undo_after_checks`` checks)."""
    trials: dict[str, Trial] = field(default_factory=dict)
    chosen: str | None = None
    at: float | None = None
    recent: deque[Check] = field(default_factory=deque)


def starves_batch(trial: Trial, trials: Mapping[str, Trial], load: str,
                  cfg: ClosedLoopSettings) -> float | None:
    """Beside busy batch work, the most CPU any strategy left it, when ``trial`` left it
    less than ``batch_share`` of that (so it cannot be kept); else None."""
    if load != LOADED or cfg.batch_share <= 0:
        return None
    most = max((t.mean_batch_cpu for t in trials.values() if t.batch_cpu), default=0.0)
    return most if trial.mean_batch_cpu < cfg.batch_share * most else None


def eligible(trials: Mapping[str, Trial], load: str, cfg: ClosedLoopSettings
             ) -> dict[str, Trial]:
    """The measured strategies that may be kept: beside busy batch work, those that leave
    it its share of the CPU."""
    measured = {n: t for n, t in trials.items() if not math.isnan(t.p99_us)}
    return {n: t for n, t in measured.items() if starves_batch(t, measured, load, cfg) is None}


def choose(trials: Mapping[str, Trial], load: str, cfg: ClosedLoopSettings
           ) -> tuple[str, str]:
    """The strategy to keep, and why: the lowest p99 of those that may be kept, and among
    those within ``tolerance`` of it the one that leaves batch work the most CPU."""
    measured = {n: t for n, t in trials.items() if not math.isnan(t.p99_us)}
    keep = eligible(measured, load, cfg)
    best = min(t.p99_us for t in keep.values())
    bound = best * (1 + cfg.tolerance) + cfg.tolerance_us
    order = list(cfg.strategies)
    good = [n for n in order if n in keep and keep[n].p99_us <= bound]
    chosen = max(good, key=lambda n: (round(keep[n].mean_batch_cpu, 2), -order.index(n)))
    others = ", ".join(f"{n} {t.p99_us:.0f}" for n, t in measured.items() if n != chosen)
    why = (f"batch work {load}: p99 {measured[chosen].p99_us:.0f} µs against "
           f"{others or 'no other'} (µs, the probe's {cfg.probe_wakeups}-wake-up checks "
           f"pooled per strategy)")
    starved = sorted(set(measured) - set(keep))
    if starved:
        most = max(t.mean_batch_cpu for t in measured.values())
        why += (f"; {', '.join(starved)} left batch work under {cfg.batch_share:.0%} of the "
                f"{most:.2f} cores another left it")
    if len(good) > 1:
        why += (f"; within {cfg.tolerance:.0%} + {cfg.tolerance_us:g} µs of the best, it "
                f"leaves batch work the most CPU ({keep[chosen].mean_batch_cpu:.2f} cores)")
    return chosen, why


class StrategyTuner:
    """The closed loop for one host. Feed it whether the critical tiers have members
    (``on_critical``), the time (``tick``) and each check of the strategy in force
    (``on_check``); it answers with the switches to make. What it measures is kept per
    batch load (``QUIET``, ``LOADED``): when the load changes, the choice measured for the
    new one is taken at once, or, where there is none yet, the strategies are tried."""

    def __init__(self, settings: ClosedLoopSettings) -> None:
        self.cfg = settings
        self.candidates: tuple[str, ...] = tuple(settings.strategies)
        self.in_force = settings.initial
        # "idle" (no critical work), "settle", "gauge" (a check to learn the batch load),
        # "explore" (trying each strategy), "exploit"
        self.phase = "idle"
        self.settle_until = 0.0
        self.load: str | None = None             # the batch load measured last
        self.memory: dict[str, Memory] = {}
        self.queue: list[str] = []

    @property
    def trials(self) -> dict[str, Trial]:
        return self._mem().trials

    @property
    def explored_at(self) -> float | None:
        return self._mem().at

    def _mem(self) -> Memory:
        return self.memory.setdefault(self.load or QUIET, Memory())

    @property
    def recent(self) -> dict[str, deque[Check]]:
        """The last checks of the strategy in force, for each load that has some."""
        return {load: mem.recent for load, mem in self.memory.items() if mem.recent}

    def _fresh(self, load: str | None, now: float) -> Memory | None:
        mem = self.memory.get(load or QUIET)
        if mem is not None and mem.chosen and mem.at is not None \
                and now - mem.at < self.cfg.reexplore_s:
            return mem
        return None

    # --- inputs ----------------------------------------------------------------------------

    def restore(self, strategy: str, state: str, figures: Mapping[str, Mapping[str, float]],
                at: float, load: str = QUIET) -> None:
        """Carry on from a choice recorded by an earlier run."""
        if strategy in self.candidates:
            self.in_force = strategy
        if state in ("chosen", "undone") and figures:
            self.load = load or QUIET
            self.memory[self.load] = Memory(
                {name: Trial.from_figures(name, f) for name, f in figures.items()
                 if name in self.candidates}, strategy, at)

    def on_critical(self, present: bool, now: float) -> list[Switch]:
        """The critical tiers gained their first member, or lost their last."""
        if not present:
            self.phase = "idle"
            return []
        if self.phase != "idle":
            return []
        if self._fresh(self.load, now) is not None:
            self.phase = "exploit"
            return []
        self._settle(now)
        return []

    def _settle(self, now: float) -> None:
        # The rest of the host is judged too before anything is measured: work not yet
        # classified runs unplaced, and would make every strategy look the same.
        self.phase, self.settle_until = "settle", now + self.cfg.settle_s

    def tick(self, now: float) -> list[Switch]:
        """Time passes: once the host has settled, a check says what batch work does."""
        if self.phase == "settle" and now >= self.settle_until:
            self.phase = "gauge"
        return []

    def due(self, now: float, last_check: float | None) -> bool:
        """Whether a check of the strategy in force is due."""
        if self.phase in ("idle", "settle"):
            return False
        if self.phase == "gauge":
            return True
        every = self.cfg.explore_every_s if self.phase == "explore" else self.cfg.check_every_s
        return last_check is None or now - last_check >= every

    def on_check(self, check: Check) -> list[Switch]:
        if check.strategy != self.in_force or self.phase in ("idle", "settle") \
                or not check.latencies_us:
            return []                            # measured under another placement
        load = LOADED if check.busy_batch else QUIET
        if self.phase == "gauge":
            # the choice measured for this load, or else try them all, this check first
            self.load = load
            mem = self._fresh(load, check.ts)
            if mem is not None:
                return self._load_changed(load, check.ts)
            switches = self._explore(check.ts, f"the critical tiers have members and batch "
                                               f"work is {load}; trying each strategy")
            return switches + self._explore_step(check)
        if self.load is None:
            self.load = load
        elif load != self.load:
            return self._load_changed(load, check.ts)
        if self.phase == "explore":
            return self._explore_step(check)
        return self._exploit_step(check)

    # --- the loop --------------------------------------------------------------------------

    def _load_changed(self, load: str, now: float) -> list[Switch]:
        was, self.load = self.load or load, load
        mem = self._fresh(load, now)
        if mem is None:
            self._settle(now)
            return []
        self.phase = "exploit"
        if mem.chosen == self.in_force:
            return []
        why = f"batch work is {load} now (was {was})" if was != load else f"batch work is {load}"
        return [self._switch(str(mem.chosen), "chosen",
                             f"{why}: {mem.chosen} measured best for that")]

    def _explore(self, now: float, why: str) -> list[Switch]:
        self.phase = "explore"
        self.memory[self.load or QUIET] = Memory()
        self.queue = [self.in_force] + [c for c in self.candidates if c != self.in_force]
        first = self.queue.pop(0)
        return [self._switch(first, "trial", f"{why}: {first} first (in force)")]

    def _explore_step(self, check: Check) -> list[Switch]:
        trial = self.trials.setdefault(self.in_force, Trial(self.in_force))
        trial.add(check)
        done_before = [t for name, t in self.trials.items() if name != self.in_force]
        best_before = min((t.p99_us for t in done_before), default=math.inf)
        cut = trial.checks >= 1 and trial.p99_us > self.cfg.cut_after * best_before
        # one that leaves busy batch work too little cannot be kept: no more checks of it
        most = starves_batch(trial, self.trials, self.load or QUIET, self.cfg)
        if trial.checks < self.cfg.trial_checks and not cut and most is None:
            return []
        if self.queue:
            nxt = self.queue.pop(0)
            if cut:
                how = (f"{self.in_force} cut short: p99 {trial.p99_us:.0f} µs, over "
                       f"{self.cfg.cut_after:g}x the best so far ({best_before:.0f} µs)")
            elif most is not None and trial.checks < self.cfg.trial_checks:
                how = (f"{self.in_force} cut short: it left batch work "
                       f"{trial.mean_batch_cpu:.2f} cores, under {self.cfg.batch_share:.0%} "
                       f"of the {most:.2f} another left it")
            else:
                how = f"{self.in_force} measured p99 {trial.p99_us:.0f} µs"
            return [self._switch(nxt, "trial", f"{how}; trying {nxt}")]
        self.phase = "exploit"
        chosen, why = self._choose()
        mem = self._mem()
        mem.chosen, mem.at = chosen, check.ts
        return [self._switch(chosen, "chosen", why)]

    def _choose(self) -> tuple[str, str]:
        return choose(self.trials, self.load or QUIET, self.cfg)

    def _exploit_step(self, check: Check) -> list[Switch]:
        if self.explored_at is not None and check.ts - self.explored_at >= self.cfg.reexplore_s:
            return self._explore(check.ts, f"{self.cfg.reexplore_s:.0f} s since the last trials")
        recent = self._mem().recent
        if recent and recent[-1].strategy != self.in_force:
            recent.clear()                       # checks of what was in force before
        recent.append(check)
        while len(recent) > self.cfg.undo_after_checks:
            recent.popleft()
        if len(recent) < self.cfg.undo_after_checks:
            return []
        now_p99 = percentile([x for c in recent for x in c.latencies_us], 99)
        others = {n: t for n, t in eligible(self.trials, self.load or QUIET, self.cfg).items()
                  if n != self.in_force}
        if not others:
            return []
        alt = min(others, key=lambda n: others[n].p99_us)
        bound = others[alt].p99_us * (1 + self.cfg.tolerance) + self.cfg.tolerance_us
        if now_p99 <= bound:
            return []
        # what the strategy measures now replaces its trial: the next choice weighs that
        mine = self.trials[self.in_force] = Trial(self.in_force)
        for c in recent:
            mine.add(c)
        recent.clear()
        self._mem().chosen = alt
        return [self._switch(alt, "undone",
                             f"{self.in_force} now measures p99 {now_p99:.0f} µs over its last "
                             f"{self.cfg.undo_after_checks} checks, worse than {alt}'s "
                             f"{others[alt].p99_us:.0f} µs: back to {alt}")]

    def _switch(self, strategy: str, state: str, reason: str) -> Switch:
        previous, self.in_force = self.in_force, strategy
        return Switch(strategy, state, reason, previous,
                      {n: t.figures() for n, t in self.trials.items()}, self.load or QUIET)
