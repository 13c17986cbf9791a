"""The allocator's configuration: what each tier gets, how pools are sized, what each mode
changes. Everything has a default; ``Policy.from_mapping`` reads a YAML section and raises
``PolicyError`` with a message that names the bad key.

Defaults follow the measurements in STACK.md: isolation beats priority alone (a busy
neighbour at SCHED_IDLE on the *same* core still costs a latency-critical task about four
times its idle p99; on another core almost nothing), so the two latency-critical tiers get
cores of their own, and priorities only order what shares the rest.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from pipeline.vocabulary import MODES, TIERS

SchedPolicy = Literal["other", "batch", "idle", "fifo", "rr"]
IoClass = Literal["rt", "be", "idle"]
CoreType = Literal["P", "E"]


class PolicyError(ValueError):
    """An allocator policy that cannot be used; the message is meant for a person."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _percent(text: str) -> float | None:
    """``"50%"`` as 50.0; None when it is not a percentage."""
    try:
        return float(text[:-1]) if text.endswith("%") else None
    except ValueError:
        return None


class TierLimits(_Frozen):
    """What a tier's processes may use together, enforced through a cgroup of the tier's
    own (containers keep their engine's cgroup). ``None`` leaves that limit off."""
    # cgroup v2's scale: 1–10000, 100 is every other group's (cpu.shares 1024 on v1)
    cpu_weight: int | None = Field(None, ge=1, le=10000)
    # cores' worth of CPU time, or a share of the host's CPUs ("50%")
    cpu_quota: float | str | None = None
    memory_high: ByteSize | None = None       # reclaimed hard above this (v1: soft limit)
    memory_max: ByteSize | None = None        # the hard limit
    swap: bool | None = None                  # false: nothing beyond memory_max in swap

    @field_validator("cpu_quota")
    @classmethod
    def _quota(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str):
            text = value.strip()
            share = _percent(text)
            if share is None or not 0 < share <= 100:
                raise ValueError(f"cpu_quota {value!r}: give cores (0.5) or a share of the "
                                 f"host's CPUs between 0% and 100% (\"50%\")")
            return text
        if value is not None and value <= 0:
            raise ValueError(f"cpu_quota {value}: a quota is more than 0 cores")
        return value

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.cpu_weight, self.cpu_quota, self.memory_high,
                                           self.memory_max)) or self.swap is False

    def quota_cores(self, host_cpus: int) -> float | None:
        """The quota in cores on a host with ``host_cpus`` CPUs."""
        if isinstance(self.cpu_quota, str):
            return round((_percent(self.cpu_quota) or 0) / 100 * host_cpus, 3)
        return self.cpu_quota

    def over(self, base: TierLimits) -> TierLimits:
        """``base`` with the limits this one sets (a mode's, over the tier's); null in a
        mode's limits leaves the tier's as it is."""
        return base.model_copy(update={k: v for k, v in self if v is not None})


class TierPolicy(_Frozen):
    """How one tier is treated. ``None`` leaves that setting as the process has it."""
    nice: int | None = Field(None, ge=-20, le=19)
    ioclass: IoClass | None = None
    iolevel: int | None = Field(None, ge=0, le=7)
    # Real-time (fifo, rr) is never a default: only a policy that names it gets it.
    policy: SchedPolicy | None = None
    # Extra cores on top of the measured demand, as a fraction (0.25 = +25%).
    headroom: float = Field(0.25, ge=0, le=10)
    # Exclusive pools hold cores nothing else runs on (their SMT siblings included).
    exclusive: bool = False
    # Core type placed first: P for tiers that want fast cores, E for cheap work.
    prefer: CoreType = "P"
    min_cores: int = Field(1, ge=1)
    # cgroup cpu.shares for containers of this tier (Docker's default is 1024).
    cpu_shares: int = Field(1024, ge=2, le=262144)
    # The deepest idle state (by exit latency, µs) the cores of an exclusive pool of this
    # tier may enter; 0 keeps them polling, so a wake-up never waits for a core to come out
    # of halt. None leaves the cores as they are. Costs power (a VM's host: CPU time).
    idle_latency_us: int | None = Field(None, ge=0)
    # CPU weight, quota and memory limits for the tier's processes together (a cgroup)
    limits: TierLimits = TierLimits()

    @model_validator(mode="after")
    def _io(self) -> TierPolicy:
        if self.ioclass == "idle" and self.iolevel is not None:
            raise ValueError("ioclass 'idle' takes no iolevel (leave iolevel empty)")
        if self.iolevel is not None and self.ioclass is None:
            raise ValueError("iolevel needs an ioclass ('rt' or 'be')")
        return self


class ModeTuning(_Frozen):
    """What a mode changes relative to the tier policies."""
    # Multiplies every tier's headroom.
    headroom_scale: float = Field(1.0, ge=0, le=10)
    # Core type the non-exclusive pools take first, overriding their tier's ``prefer``.
    shared_prefer: CoreType | None = None
    # Cores left over after every pool has its size join the housekeeping pool; when false
    # they stay in no pool, so the hardware can keep them in deep idle states.
    fill_spare_cores: bool = True
    # Exclusive tiers get the size they ask for at once (no grow_cycles wait) and the
    # emergency reserve joins the most critical non-empty exclusive pool.
    critical_at_once: bool = False
    # Tiers cut to their minimum size, with SCHED_IDLE, nice 19 and the idle I/O class;
    # they share one pool.
    squeeze: tuple[str, ...] = ()
    # When false, SCHED_IDLE becomes SCHED_BATCH and the idle I/O class best-effort 7:
    # SCHED_IDLE work can starve for long stretches, which costs throughput.
    sched_idle: bool = True
    # When false, no tier's idle_latency_us applies: every core may sleep deeply.
    idle_limits: bool = True
    # Tier limits in this mode, over the tier's own: {tier: the limits it changes}.
    limits: dict[str, TierLimits] = Field(default_factory=dict)


def _default_tiers() -> dict[str, TierPolicy]:
    return {
        "ultra_critical": TierPolicy(nice=-10, ioclass="be", iolevel=0, policy="other",
                                     headroom=0.5, exclusive=True, cpu_shares=4096,
                                     idle_latency_us=0),
        "critical": TierPolicy(nice=-5, ioclass="be", iolevel=1, policy="other",
                               headroom=0.25, exclusive=True, cpu_shares=2048),
        "high": TierPolicy(nice=-2, ioclass="be", iolevel=2, policy="other",
                           headroom=0.25, cpu_shares=1536),
        "normal": TierPolicy(nice=0, ioclass="be", iolevel=4, policy="other",
                             headroom=0.25, cpu_shares=1024),
        # weight orders batch work across sessions, where nice does not (autogroup), and
        # yields to everyone else; no quota by default: a cap leaves idle the CPU nobody
        # else wanted (at 90% of the host, the cores ran 94% busy under four hogs)
        "low": TierPolicy(nice=10, ioclass="be", iolevel=6, policy="batch",
                          headroom=0.1, prefer="E", cpu_shares=512,
                          limits=TierLimits(cpu_weight=50)),
        "background": TierPolicy(nice=19, ioclass="idle", policy="idle",
                                 headroom=0.1, prefer="E", cpu_shares=128,
                                 limits=TierLimits(cpu_weight=10, cpu_quota="50%")),
    }


def _default_modes() -> dict[str, ModeTuning]:
    return {
        "high_performance": ModeTuning(headroom_scale=2.0, sched_idle=False),
        "balanced": ModeTuning(),
        "power_save": ModeTuning(headroom_scale=0.5, shared_prefer="E", fill_spare_cores=False,
                                 idle_limits=False),
        "emergency": ModeTuning(critical_at_once=True, squeeze=("low", "background"),
                                limits={"low": TierLimits(cpu_quota="50%"),
                                        "background": TierLimits(cpu_quota="25%")}),
    }


class Policy(_Frozen):
    """The allocator's configuration. Tiers and modes not named keep their defaults."""
    tiers: dict[str, TierPolicy] = Field(default_factory=_default_tiers)
    modes: dict[str, ModeTuning] = Field(default_factory=_default_modes)
    # Housekeeping and unclassified work: placed, never niced or re-prioritised.
    housekeeping_headroom: float = Field(0.25, ge=0, le=10)
    housekeeping_prefer: CoreType = "E"
    housekeeping_cpu_shares: int = Field(1024, ge=2, le=262144)
    # Cores kept free for emergencies, only on machines with at least reserve_min_cores.
    reserve_cores: int = Field(1, ge=0)
    reserve_min_cores: int = Field(8, ge=1)
    # Hysteresis. need = demand x (1 + headroom). A pool grows when need exceeds its size
    # by more than grow_band for grow_cycles plans in a row; it shrinks when it would keep
    # shrink_band cores spare after shrinking, for shrink_cycles plans in a row.
    grow_band: float = Field(0.0, ge=0)
    grow_cycles: int = Field(2, ge=1)
    shrink_band: float = Field(0.5, ge=0)
    shrink_cycles: int = Field(3, ge=1)
    # Targets whose CPUs change per plan, beyond those that must leave a core that became
    # exclusive to a critical tier (isolation is never deferred). New targets are not moves.
    max_moves: int = Field(100, ge=0)
    # SMT siblings of an exclusive pool's cores: "pool" puts them in the same pool, "idle"
    # leaves them in no pool at all (quieter, half the threads).
    smt_siblings: Literal["pool", "idle"] = "pool"
    # Under the exclusive_lend strategy, an exclusive tier using less than this share of its
    # cores (it sleeps most of the time) lends them to batch work at SCHED_IDLE.
    lend_below: float = Field(0.5, ge=0, le=1)
    # CPUs on the kernel's isolcpus= list get no load balancing; leave them alone unless asked.
    use_isolated_cpus: bool = False
    skip_kernel_threads: bool = True

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        # a partial tiers/modes mapping overrides only what it names
        if isinstance(data, Mapping):
            data = dict(data)
            for key, defaults in (("tiers", _default_tiers()), ("modes", _default_modes())):
                given = data.get(key)
                if isinstance(given, Mapping):
                    merged: dict[str, Any] = dict(defaults)
                    merged.update(given)
                    data[key] = merged
        return data

    @model_validator(mode="after")
    def _check(self) -> Policy:
        unknown = sorted(set(self.tiers) - set(TIERS))
        if unknown:
            raise ValueError(f"unknown tier(s) {unknown}; tiers are {', '.join(TIERS)}")
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"unknown mode(s) {unknown}; modes are {', '.join(MODES)}")
        for name, mode in self.modes.items():
            bad = sorted(set(mode.squeeze) - set(TIERS))
            if bad:
                raise ValueError(f"mode {name}: squeeze names unknown tier(s) {bad}")
            bad = sorted(set(mode.limits) - set(TIERS))
            if bad:
                raise ValueError(f"mode {name}: limits name unknown tier(s) {bad}")
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "allocator") -> Policy:
        """Validate a configuration section; errors name the key path under ``where``."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                path = ".".join(str(p) for p in (where, *err["loc"]))
                lines.append(f"{path}: {err['msg']}")
            raise PolicyError("; ".join(lines)) from None

    def tier(self, name: str) -> TierPolicy:
        return self.tiers[name]

    def limits(self, tier: str, mode: str) -> TierLimits:
        """The tier's limits in ``mode``: the mode's, over the tier's own."""
        own = self.tier(tier).limits
        over = self.mode(mode).limits.get(tier)
        return own if over is None else over.over(own)

    def mode(self, name: str) -> ModeTuning:
        if name not in MODES:
            raise PolicyError(f"unknown mode {name!r}; modes are {', '.join(MODES)}")
        return self.modes[name]


__all__ = ["ModeTuning", "Policy", "PolicyError", "TierLimits", "TierPolicy"]
