"""The figures alert rules watch, per host, from its events: each signal's value for each
subject it measures (a tier, a pool, a CPU, the host).

Run-queue delay is the growth of each process's schedstat wait (``run_delay_ns``) between
two whole sweeps, summed over the members of a tier as the host's newest plan placed
them: the same figure the history's ``tier_rates`` view gives, in ms per second. A pool's
load is its tier's own CPU use over the same sweeps, as a share of the pool's cores: a
tier that needs more than it was given, not a batch job busy on cores lent to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.events import Decisions, HostSample, ProcessSamples
from pipeline.topology import cpulist_parse

Key = tuple[int, int]                        # (pid, start_time)
Figures = dict[str, dict[str, float]]        # signal -> subject -> value


@dataclass
class HostFigures:
    """What one host's events say, as far as the rules care."""
    host_sample: HostSample | None = None
    pools: dict[str, tuple[int, ...]] = field(default_factory=dict)   # tier -> cpus
    tier_of: dict[Key, str] = field(default_factory=dict)
    plan_batch: str | None = None
    waited: dict[Key, tuple[float, int]] = field(default_factory=dict)  # (ts, run_delay_ns)
    sweep_batch: str | None = None
    sweep_delay: dict[str, float] = field(default_factory=dict)       # being summed
    sweep_seen: dict[Key, tuple[float, int]] = field(default_factory=dict)
    sweep_cpu: dict[str, float] = field(default_factory=dict)         # being summed
    tier_delay_ms_s: dict[str, float] = field(default_factory=dict)   # of the last whole sweep
    tier_cpu: dict[str, float] = field(default_factory=dict)          # cores, the last sweep

    def take_host_sample(self, sample: HostSample) -> None:
        self.host_sample = sample

    def take_plan(self, plan: Decisions) -> None:
        """A chunk of a plan: the tiers its processes are in, and its pools' cpus."""
        if plan.batch != self.plan_batch:
            self.plan_batch, self.tier_of = plan.batch, {}
        self.tier_of.update(((d.pid, d.start_time), d.tier) for d in plan.items
                            if d.target == "process" and d.pid is not None
                            and d.start_time is not None)
        if plan.pools:
            self.pools = {tier: tuple(cpulist_parse(p.get("cpus", "")))
                          for tier, p in plan.pools.items()}

    def take_sweep(self, sweep: ProcessSamples, ts: float) -> None:
        """A chunk of a sweep; a partial sweep (new processes sampled early) is left out,
        so every rate spans a whole sweep interval."""
        if sweep.partial:
            return
        if sweep.batch != self.sweep_batch:
            self.sweep_batch, self.sweep_delay, self.sweep_seen = sweep.batch, {}, {}
            self.sweep_cpu = {}
        for s in sweep.samples:
            key = (s.pid, s.start_time)
            before = self.waited.get(key)
            self.sweep_seen[key] = (ts, s.run_delay_ns)
            tier = self.tier_of.get(key)
            if tier is not None:
                self.sweep_cpu[tier] = self.sweep_cpu.get(tier, 0.0) + s.cpu_share
            if tier is None or before is None or ts <= before[0] or s.run_delay_ns < before[1]:
                continue
            ms_s = (s.run_delay_ns - before[1]) / 1e6 / (ts - before[0])
            self.sweep_delay[tier] = self.sweep_delay.get(tier, 0.0) + ms_s
        if sweep.chunk == sweep.chunks - 1:
            self.waited = self.sweep_seen
            members = set(self.tier_of.values())
            self.tier_delay_ms_s = {tier: self.sweep_delay.get(tier, 0.0) for tier in members}
            self.tier_cpu = {tier: self.sweep_cpu.get(tier, 0.0) for tier in members}

    def figures(self) -> Figures:
        out: Figures = {"run_queue_delay": dict(self.tier_delay_ms_s),
                        "pool_load": {tier: 100.0 * cores / len(self.pools[tier])
                                      for tier, cores in self.tier_cpu.items()
                                      if self.pools.get(tier)}}
        sample = self.host_sample
        if sample is None:
            return out
        out["core_temperature"] = {f"cpu {cpu}": c for cpu, c in
                                   enumerate(sample.cpu_temperatures_c) if c is not None}
        if "memory_some" in sample.pressure:
            out["memory_pressure"] = {"host": sample.pressure["memory_some"]}
        return out
