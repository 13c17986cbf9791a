"""The plan: which cores each tier gets and what every process and container is told.

``plan()`` is a pure function of its arguments (no clock, no randomness, no I/O): the same
topology, classifications, utilization, mode, policy and previous plan always give the same
``Plan``, so replay reproduces the live decisions exactly. ``to_decisions()`` turns a plan
into the ``Decision`` rows of the decisions event, and ``plan_from_decisions()`` rebuilds
enough of a plan from that event to carry on after a restart.

How a plan is made:

1. Targets: every classified process (kernel threads skipped) and container. Processes
   without a known tier, and housekeeping (corelane itself, its broker), go to the
   housekeeping pool and keep their nice, I/O class and scheduling policy.
2. Demand per pool, in cores: the utilization's per-tier figure, else the sum of the
   members' ``cpu_share``. Housekeeping also gets the busy time no tier accounts for.
3. Size: ``need = demand x (1 + headroom x mode scale)``, at least ``min_cores`` for a
   non-empty tier, none for an empty one, held steady by hysteresis (``pools.hold_size``).
4. Budget, in priority order: the emergency reserve (machines with >= reserve_min_cores),
   one core always left for everything that is not exclusive, then the exclusive tiers
   (each first gets one core, then grows to its size), then the shared tiers and
   housekeeping the same way. A pool that gets no core shares the cores of the pool
   granted just before it. Spare cores join housekeeping (or stay idle in power_save).
5. Placement (``pools.place``): exclusive tiers first on P-cores, whole cores (SMT
   siblings with them), one NUMA node where they fit; the reserve next to them; then the
   rest, low and background on E-cores.
6. Strategy (``STRATEGIES``, chosen per host by the closed loop): ``exclusive_poll`` keeps
   the exclusive pools and their idle limits; ``exclusive`` drops the idle limits;
   ``exclusive_lend`` also lends the cores of an exclusive tier that sleeps (demand below
   ``lend_below`` of its cores) to the batch tiers, at SCHED_IDLE; ``shared`` puts every
   tier but housekeeping on every pool core, batch tiers at SCHED_IDLE, so no core halts
   beside waiting work and the kernel preempts batch work at once.
7. Decisions: cpus from the pool, nice, I/O and policy from the tier and mode, at most
   ``max_moves`` targets change cpus per plan (isolation moves are never deferred). A
   process that sleeps (class ``idle``) is placed but never demoted: whatever it starts
   would inherit the demotion.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Union

from agents.allocation.pools import (
    EXCLUSIVE, HOUSEKEEPING_ROLE, SHARED, AllocationError, CoreInfo, Pool, describe, hold_size,
    place, usable_cores,
)
from pipeline.cgroups import quota_us
from pipeline.policy import ModeTuning, Policy, TierPolicy
from pipeline.vocabulary import ASLEEP, BATCH_TIERS, HOUSEKEEPING, MODES, STRATEGIES, TIERS
from pipeline.events import Classification, Decision, HostSample, ProcessSample
from pipeline.topology import Topology, cpulist_format, cpulist_parse

_RANK = {t: i for i, t in enumerate((*TIERS, HOUSEKEEPING))}

# The reason of a decision for corelane's own processes: placed, never re-prioritised (a
# replay tells them by it).
OWN_REASON = "housekeeping: placed, never re-prioritised"


# --- inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessTarget:
    """One process to place: its identity, its class and tier, and what is known about it.

    ``tier`` None (or a name that is not a tier) means unclassified: housekeeping pool.
    ``housekeeping`` marks corelane's own processes and its broker: placed with
    housekeeping, never re-prioritised.
    """
    pid: int
    start_time: int
    tier: str | None
    cls: str = ""
    container_id: str | None = None
    cpu_share: float = 0.0
    kernel_thread: bool = False
    housekeeping: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return ("process", f"{self.pid}:{self.start_time}")


@dataclass(frozen=True)
class ContainerTarget:
    """One container to place: its cpuset and CPU shares follow its tier."""
    container_id: str
    tier: str | None
    cls: str = ""
    cpu_share: float = 0.0
    name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return ("container", self.container_id)


Target = Union[ProcessTarget, ContainerTarget]


@dataclass(frozen=True)
class Utilization:
    """Measured load: per-CPU busy fraction (0..1) and per-tier demand in cores.

    ``tier_demand`` may also name ``housekeeping``. A tier it leaves out is measured from its
    members' ``cpu_share``.
    """
    cpu_busy: Mapping[int, float] = field(default_factory=dict)
    tier_demand: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read-only copies: a plan must not change when a caller later edits its dicts
        object.__setattr__(self, "cpu_busy", MappingProxyType(dict(self.cpu_busy)))
        object.__setattr__(self, "tier_demand", MappingProxyType(dict(self.tier_demand)))
        for name, value in self.tier_demand.items():
            if value < 0:
                raise AllocationError(f"demand of {name!r} is {value}; demand is cores used, >= 0")

    @classmethod
    def from_host_sample(cls, sample: HostSample | None,
                         tier_demand: Mapping[str, float] | None = None) -> Utilization:
        busy = {} if sample is None else {i: p / 100.0 for i, p in enumerate(sample.cpu_percent)}
        return cls(cpu_busy=busy, tier_demand=dict(tier_demand or {}))


def process_targets(classifications: Iterable[Classification],
                    samples: Iterable[ProcessSample] = (),
                    housekeeping_pids: Iterable[int] = ()) -> list[ProcessTarget]:
    """Join classification events with the latest samples (container, kernel thread, load).

    Samples are matched by identity, never by pid alone.
    """
    by_id = {(s.pid, s.start_time): s for s in samples}
    keep = set(housekeeping_pids)
    out = []
    for c in classifications:
        s = by_id.get((c.pid, c.start_time))
        out.append(ProcessTarget(
            pid=c.pid, start_time=c.start_time, tier=c.tier, cls=c.cls,
            container_id=s.container_id if s else None,
            cpu_share=s.cpu_share if s else 0.0,
            kernel_thread=s.kernel_thread if s else False,
            housekeeping=c.pid in keep))
    return out


# --- output --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assignment:
    """What one target is told; ``to_decisions`` turns it into a ``Decision``."""
    target: str                              # "process" | "container"
    tier: str                                # a tier, or "housekeeping"
    cpus: tuple[int, ...]
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    nice: int | None = None
    ioclass: str | None = None
    iolevel: int | None = None
    policy: str | None = None
    cpu_shares: int | None = None
    cgroup: str | None = None                # the tier group it is moved into
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        if self.target == "container":
            return ("container", str(self.container_id))
        return ("process", f"{self.pid}:{self.start_time}")

    @property
    def cpulist(self) -> str:
        return cpulist_format(self.cpus)


@dataclass(frozen=True)
class CpuIdleLimit:
    """A core of an exclusive pool held out of idle states deeper than ``latency_us``."""
    cpu: int
    tier: str
    latency_us: int
    reason: str = ""


@dataclass(frozen=True)
class TierGroup:
    """What a tier's processes may use together: its cgroup's limits (None: no such
    limit). Its members are the tier's processes whose ``cgroup`` names it."""
    tier: str
    cpus: tuple[int, ...]
    cpu_weight: int | None = None
    cpu_quota_us: int | None = None
    memory_high: int | None = None
    memory_max: int | None = None
    swap: bool | None = None
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    seq: int
    mode: str
    pools: tuple[Pool, ...]                  # non-empty tiers in TIERS order, then housekeeping
    assignments: tuple[Assignment, ...]      # processes by (pid, start_time), then containers
    reserve: tuple[int, ...] = ()            # CPUs kept free for emergencies
    unused: tuple[int, ...] = ()             # CPUs in no pool (idle siblings, power_save spare, isolcpus)
    skipped: tuple[tuple[str, str], ...] = ()   # (target key, why), e.g. kernel threads
    moves: int = 0                           # targets whose cpus changed since the previous plan
    deferred: int = 0                        # moves held back by max_moves
    notes: tuple[str, ...] = ()
    idle_limits: tuple[CpuIdleLimit, ...] = ()   # cores kept out of deep idle states
    strategy: str = STRATEGIES[0]
    lent: tuple[int, ...] = ()               # exclusive cores batch work may use (SCHED_IDLE)
    groups: tuple[TierGroup, ...] = ()       # tiers whose processes share cgroup limits

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)

    def cpus_of(self, name: str) -> tuple[int, ...]:
        p = self.pool(name)
        return p.cpus if p else ()

    def assignment(self, pid: int, start_time: int) -> Assignment | None:
        key = ("process", f"{pid}:{start_time}")
        return next((a for a in self.assignments if a.key == key), None)

    def container(self, container_id: str) -> Assignment | None:
        return next((a for a in self.assignments if a.key == ("container", container_id)), None)


# --- planning ------------------------------------------------------------------------------

def _pool_name(tier: str | None, housekeeping: bool = False) -> str:
    return tier if (tier in TIERS and not housekeeping) else HOUSEKEEPING


def _split_targets(classifications: Iterable[Target | Classification], policy: Policy
                   ) -> tuple[list[ProcessTarget], list[ContainerTarget], list[tuple[tuple[str, str], str]]]:
    procs: dict[tuple[str, str], ProcessTarget] = {}
    conts: dict[tuple[str, str], ContainerTarget] = {}
    skipped: list[tuple[tuple[str, str], str]] = []
    for item in classifications:
        if isinstance(item, Classification):
            item = ProcessTarget(pid=item.pid, start_time=item.start_time, tier=item.tier, cls=item.cls)
        if isinstance(item, ProcessTarget):
            if item.kernel_thread and policy.skip_kernel_threads:
                skipped.append((item.key, "kernel thread: placed by the kernel, not by corelane"))
                continue
            procs[item.key] = item              # the last classification of an identity wins
        elif isinstance(item, ContainerTarget):
            conts[item.key] = item
        else:
            raise AllocationError(f"cannot plan for {type(item).__name__}: expected ProcessTarget, "
                                  f"ContainerTarget or Classification")
    order = lambda t: (t.pid, t.start_time)                     # noqa: E731
    return (sorted(procs.values(), key=order),
            sorted(conts.values(), key=lambda c: c.container_id), sorted(skipped))


def _demands(procs: Sequence[ProcessTarget], conts: Sequence[ContainerTarget],
             util: Utilization) -> tuple[dict[str, float], dict[str, int]]:
    measured: dict[str, float] = {}
    members: dict[str, int] = {}
    placed_by = {c.container_id: c for c in conts}
    inside: dict[str, float] = {}
    for p in procs:
        name = _pool_name(p.tier, p.housekeeping)
        members[name] = members.get(name, 0) + 1
        if p.container_id in placed_by:
            # it runs inside its container's cpuset: its load counts there
            inside[p.container_id] = inside.get(p.container_id, 0.0) + max(0.0, p.cpu_share)
        else:
            measured[name] = measured.get(name, 0.0) + max(0.0, p.cpu_share)
    for c in conts:
        name = _pool_name(c.tier)
        members[name] = members.get(name, 0) + 1
        # the container's own figure covers processes nobody classified yet
        measured[name] = measured.get(name, 0.0) + max(0.0, c.cpu_share, inside.get(c.container_id, 0.0))
    demand = {name: float(util.tier_demand.get(name, measured.get(name, 0.0))) for name in members}
    if HOUSEKEEPING not in util.tier_demand:
        # busy time no tier accounts for is unclassified work: it runs with housekeeping
        accounted = sum(demand.values())
        demand[HOUSEKEEPING] = demand.get(HOUSEKEEPING, 0.0) + max(0.0, sum(util.cpu_busy.values()) - accounted)
    else:
        demand[HOUSEKEEPING] = float(util.tier_demand[HOUSEKEEPING])
    return demand, members


@dataclass(frozen=True)
class _Want:
    name: str
    demand: float
    headroom: float
    need: float
    size: int
    min_cores: int
    exclusive: bool
    prefer: str
    role: str
    grow_streak: int
    shrink_streak: int
    note: str


def _grant(wants: Sequence[_Want], budget: int) -> tuple[dict[str, int], int]:
    """Cores per pool: first one each in order, then each up to its size in order."""
    got = {w.name: 0 for w in wants}
    left = budget
    for w in wants:
        if left > 0:
            got[w.name], left = 1, left - 1
    for w in wants:
        extra = min(max(0, w.size - got[w.name]), left)
        got[w.name] += extra
        left -= extra
    return got, left


def _cpus_of(core_ids: Iterable[int], cores: Mapping[int, CoreInfo], first_thread_only: bool) -> tuple[int, ...]:
    cpus: list[int] = []
    for c in core_ids:
        threads = cores[c].cpus
        cpus.extend(threads[:1] if first_thread_only else threads)
    return tuple(sorted(cpus))


def _tier_settings(tier: str, tp: TierPolicy, tuning: ModeTuning, beside_critical: str
                   ) -> tuple[int | None, str | None, int | None, str | None, str]:
    """The tier's priorities in this mode; ``beside_critical`` names the strategy that
    puts batch work on the critical tiers' cores ("" when none does)."""
    nice, ioclass, iolevel, pol = tp.nice, tp.ioclass, tp.iolevel, tp.policy
    note = ""
    if tier in tuning.squeeze:
        nice, ioclass, iolevel, pol = 19, "idle", None, "idle"
        note = "squeezed: SCHED_IDLE, idle I/O"
    elif tier in BATCH_TIERS and beside_critical:
        # it runs beside critical work: only SCHED_IDLE is preempted at once, and across
        # sessions (autogroup), where nice orders nothing
        pol, note = "idle", f"SCHED_IDLE: strategy {beside_critical}"
    elif not tuning.sched_idle:
        if pol == "idle":
            pol, note = "batch", "SCHED_BATCH instead of SCHED_IDLE"
        if ioclass == "idle":
            ioclass, iolevel = "be", 7
    return nice, ioclass, iolevel, pol, note


def plan(topology: Topology,
         classifications: Iterable[Target | Classification],
         utilization: Utilization | None = None,
         mode: str = "balanced",
         policy: Policy | None = None,
         previous_plan: Plan | None = None,
         strategy: str = STRATEGIES[0],
         hot_cpus: Mapping[int, float] | None = None,
         mode_reason: str = "") -> Plan:
    """Plan core pools and per-target decisions for one host (see the module docstring).
    ``hot_cpus`` (cpu -> °C) are cores the batch tiers leave while a cool core is left for
    them; ``mode_reason`` says why the host is in ``mode`` (in each pool's reason)."""
    policy = policy or Policy()
    if mode not in MODES:
        raise AllocationError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
    if strategy not in STRATEGIES:
        raise AllocationError(f"unknown strategy {strategy!r}; strategies are "
                              f"{', '.join(STRATEGIES)}")
    share_all = strategy == "shared"
    tuning = policy.mode(mode)
    util = utilization or Utilization()
    procs, conts, skipped = _split_targets(classifications, policy)
    demand, members = _demands(procs, conts, util)
    cores = usable_cores(topology, policy.use_isolated_cpus)
    if not cores:
        raise AllocationError(f"{topology.source or 'this topology'} has no usable core "
                              f"(online: {cpulist_format(topology.cpu_ids)}, "
                              f"isolated: {cpulist_format(topology.isolated) or 'none'})")
    n = len(cores)
    multi_node = len({c.node for c in cores.values()}) > 1
    prev_pools = {p.name: p for p in previous_plan.pools} if previous_plan else {}
    notes: list[str] = []

    # -- sizes (hysteresis) --
    wants: dict[str, _Want] = {}
    for name in (*TIERS, HOUSEKEEPING):
        if name != HOUSEKEEPING and not members.get(name):
            continue                                  # an empty tier gets no pool
        if name == HOUSEKEEPING:
            headroom, min_cores, exclusive = policy.housekeeping_headroom, 1, False
            prefer, role = policy.housekeeping_prefer, HOUSEKEEPING_ROLE
        else:
            tp = policy.tier(name)
            headroom, min_cores, prefer = tp.headroom, tp.min_cores, tp.prefer
            exclusive = tp.exclusive and not share_all
            role = EXCLUSIVE if exclusive else SHARED
        if not exclusive and tuning.shared_prefer:
            prefer = tuning.shared_prefer
        headroom *= tuning.headroom_scale
        d = demand.get(name, 0.0)
        need = d * (1.0 + headroom)
        if name in tuning.squeeze:
            s_size, g, sh, note = min_cores, 0, 0, "squeezed to its minimum"
        else:
            sz = hold_size(need, min_cores, prev_pools.get(name), policy,
                           at_once=exclusive and tuning.critical_at_once)
            s_size, g, sh, note = sz.size, sz.grow_streak, sz.shrink_streak, sz.note
        wants[name] = _Want(name, d, headroom, need, s_size, min_cores, exclusive, prefer, role, g, sh, note)

    # -- budget --
    reserve_n = policy.reserve_cores if n >= policy.reserve_min_cores else 0
    reserve_n = min(reserve_n, max(0, n - 2))        # never at the cost of isolation itself
    excl = [w for w in wants.values() if w.exclusive]
    shared = [w for w in wants.values() if not w.exclusive and w.name not in tuning.squeeze]
    # housekeeping before the less protected tiers: corelane itself must always run
    shared.sort(key=lambda w: (_RANK[w.name] if w.name != HOUSEKEEPING else _RANK["normal"] + 0.5))
    squeezed = [w for w in wants.values() if not w.exclusive and w.name in tuning.squeeze]
    excl_got, _ = _grant(excl, n - reserve_n - 1)
    shared_budget = n - reserve_n - sum(excl_got.values())
    shared_got, spare = _grant(shared, shared_budget)
    if squeezed:
        # squeezed tiers share one minimal pool, taken from what the others left
        take = min(spare, squeezed[0].size)
        shared_got[squeezed[0].name] = take
        shared_got.update({w.name: 0 for w in squeezed[1:]})
        spare -= take
    if n == 1:
        notes.append("one core: nothing can be isolated, every pool shares it")
    elif excl and sum(excl_got.values()) < len(excl):
        notes.append(f"{n} cores: the exclusive tiers share {sum(excl_got.values())} core(s), "
                     f"one core is left for everything else")

    # -- placement --
    free = set(cores)
    placed: dict[str, tuple[int, ...]] = {}
    shared_with: dict[str, str] = {}

    def prev_cores(name: str) -> set[int]:
        p = prev_pools.get(name)
        if not p:
            return set()
        return topology.cores_of(p.cpus)

    last_excl: str | None = None
    for w in excl:
        count = excl_got[w.name]
        if count == 0:
            if last_excl is not None:
                shared_with[w.name] = last_excl
            continue                                  # placed below with the shared area
        got = place(count, free, cores, w.prefer, w.role, prev_cores(w.name))
        placed[w.name] = got
        free -= set(got)
        last_excl = w.name

    home = next((cores[placed[w.name][0]].node for w in excl if placed.get(w.name)), None)
    reserve_prev: set[int] = set()
    if previous_plan:
        reserve_prev = topology.cores_of(previous_plan.reserve)
        # in an emergency the reserve lives inside the first exclusive pool; keep it there
        first_prev = next((prev_pools[w.name] for w in excl if w.name in prev_pools), None)
        if first_prev and previous_plan.mode == "emergency" and not previous_plan.reserve:
            reserve_prev = prev_cores(first_prev.name)
    reserve_cores = place(reserve_n, free, cores, "P", EXCLUSIVE, reserve_prev, home)
    free -= set(reserve_cores)

    last_shared: str | None = None
    for w in shared + squeezed:
        count = shared_got.get(w.name, 0)
        if count == 0:
            target = squeezed[0].name if (w in squeezed and w is not squeezed[0]
                                          and placed.get(squeezed[0].name)) else last_shared
            if target is None:                        # only possible with no core at all left
                target = last_excl
            if target is not None:
                shared_with[w.name] = target
            continue
        got = place(count, free, cores, w.prefer, w.role, prev_cores(w.name))
        placed[w.name] = got
        free -= set(got)
        last_shared = w.name
    if tuning.fill_spare_cores and spare and HOUSEKEEPING in placed:
        # spare cores last, so they never take a core a sized pool would have preferred
        own = set(placed[HOUSEKEEPING])
        extra = place(spare, free, cores, wants[HOUSEKEEPING].prefer, HOUSEKEEPING_ROLE,
                      prev_cores(HOUSEKEEPING) - own, cores[min(own)].node)
        placed[HOUSEKEEPING] = tuple(sorted((*own, *extra)))
        free -= set(extra)
    # exclusive tiers left without a core share the last exclusive pool, or on a one-core
    # machine the shared area
    for w in excl:
        if w.name not in placed and w.name not in shared_with and last_shared:
            shared_with[w.name] = last_shared

    if tuning.critical_at_once and reserve_cores:
        first = next((w.name for w in excl if placed.get(w.name)), None)
        if first:
            placed[first] = tuple(sorted((*placed[first], *reserve_cores)))
            notes.append(f"emergency: reserve {cpulist_format(_cpus_of(reserve_cores, cores, False))} "
                         f"joins {first}")
            reserve_cores = ()

    smt_idle = policy.smt_siblings == "idle"
    pool_cpus: dict[str, tuple[int, ...]] = {}
    pools: list[Pool] = []
    for name, w in wants.items():
        if name in placed:
            cpus = _cpus_of(placed[name], cores, smt_idle and w.exclusive)
        else:
            src = shared_with.get(name)
            while src is not None and src not in placed:
                src = shared_with.get(src)
            cpus = _cpus_of(placed[src], cores, smt_idle and wants[src].exclusive) if src else ()
        pool_cpus[name] = cpus
        core_ids = placed.get(name, ())
        what = describe(core_ids or topology.cores_of(cpus), cores, multi_node)
        bits = [what, f"demand {w.demand:.1f} cores + {w.headroom:.0%} headroom"]
        if w.exclusive and name in placed:
            bits.append("exclusive")
        if name in shared_with:
            bits.append(f"shares the cores of {shared_with[name]}: no core left")
        elif core_ids and len(core_ids) < w.size:
            bits.append(f"{len(core_ids)} of {w.size} cores: the machine has no more")
        if w.note:
            bits.append(w.note)
        if name == HOUSEKEEPING and tuning.fill_spare_cores and spare and name in placed:
            bits.append(f"+{spare} spare core(s)")
        pools.append(Pool(name=name, cpus=cpus, size=w.size, demand=round(w.demand, 6),
                          need=round(w.need, 6), exclusive=w.exclusive and name in placed,
                          shared_with=shared_with.get(name), grow_streak=w.grow_streak,
                          shrink_streak=w.shrink_streak, reason=", ".join(bits)))

    reserve_cpus = _cpus_of(reserve_cores, cores, False)
    in_pools = {c for cpus in pool_cpus.values() for c in cpus}
    unused = tuple(c for c in topology.cpu_ids if c not in in_pools and c not in reserve_cpus)
    if share_all and in_pools:
        # every tier on every pool core; the pools' sizes stay as the demand had them. Not
        # housekeeping: work nobody has judged yet runs at its own priority, and would
        # share the critical tiers' cores at that priority
        every = tuple(sorted(in_pools))
        pool_cpus = {name: cpus if name == HOUSEKEEPING else every
                     for name, cpus in pool_cpus.items()}
        pools = [p if p.name == HOUSEKEEPING else
                 replace(p, cpus=every, shared_with=None,
                         reason=f"every pool core ({cpulist_format(every)}): strategy shared; "
                                f"sized {p.size} for {p.reason}") for p in pools]
    if hot_cpus:
        pools, pool_cpus = _off_hot_cpus(pools, hot_cpus)
        notes.append(f"hot: {describe_hot(hot_cpus)}")
    if mode_reason:
        pools = [replace(p, reason=f"{p.reason}; mode {mode}: {mode_reason}") for p in pools]
    lent = _lent_cpus(pools, policy) if strategy == "exclusive_lend" else ()
    if hot_cpus:
        lent = tuple(c for c in lent if c not in hot_cpus)

    # -- decisions --
    groups = _tier_groups(pools, policy, mode, len(topology.cpu_ids))
    assignments = _assign(procs, conts, wants, pool_cpus, {p.name: p for p in pools}, policy,
                          tuning, strategy, lent, {g.tier for g in groups})
    exclusive_cpus = {name: set(cpus) for name, cpus in pool_cpus.items()
                      if wants[name].exclusive and name in placed}
    assignments, moves, deferred = _cap_moves(assignments, previous_plan, exclusive_cpus,
                                              policy.max_moves)
    if deferred:
        notes.append(f"{deferred} move(s) deferred: at most {policy.max_moves} per plan")

    return Plan(seq=(previous_plan.seq + 1) if previous_plan else 1, mode=mode,
                pools=tuple(pools), assignments=tuple(assignments), reserve=reserve_cpus,
                unused=unused, skipped=tuple((f"{k[0]} {k[1]}", why) for k, why in skipped),
                moves=moves, deferred=deferred, notes=tuple(notes),
                idle_limits=(_idle_limits(pools, policy, tuning, mode)
                             if strategy == "exclusive_poll" else ()),
                strategy=strategy, lent=lent, groups=groups)


def describe_hot(hot_cpus: Mapping[int, float]) -> str:
    """Hot cores as plans and logs name them: "cpu 3 at 97 °C, cpu 7 at 97 °C"."""
    return ", ".join(f"cpu {cpu} at {c:.0f} °C" for cpu, c in sorted(hot_cpus.items()))


def _off_hot_cpus(pools: Sequence[Pool], hot_cpus: Mapping[int, float]
                  ) -> tuple[list[Pool], dict[str, tuple[int, ...]]]:
    """The batch tiers' pools without the hot cores, where that leaves them a core: they
    are the work that can run anywhere, and heat is what they add."""
    out = []
    for p in pools:
        hot = [c for c in p.cpus if c in hot_cpus]
        if p.name in BATCH_TIERS and hot:
            cool = tuple(c for c in p.cpus if c not in hot_cpus)
            where = ", ".join(f"{c} at {hot_cpus[c]:.0f} °C" for c in hot)
            p = replace(p, cpus=cool, reason=f"{p.reason}; off hot cpu {where}") if cool else \
                replace(p, reason=f"{p.reason}; every core of its pool is hot ({where})")
        out.append(p)
    return out, {p.name: p.cpus for p in out}


def _tier_groups(pools: Sequence[Pool], policy: Policy, mode: str,
                 host_cpus: int) -> tuple[TierGroup, ...]:
    """The limits of each tier with members and limits in this mode."""
    out = []
    for pool in pools:
        if pool.name == HOUSEKEEPING:
            continue
        limits = policy.limits(pool.name, mode)
        if not limits.any:
            continue
        cores = limits.quota_cores(host_cpus)
        bits = []
        if limits.cpu_weight is not None:
            bits.append(f"cpu weight {limits.cpu_weight}")
        if cores is not None:
            share = f" ({limits.cpu_quota} of {host_cpus} CPUs)" \
                if isinstance(limits.cpu_quota, str) else ""
            bits.append(f"cpu quota {cores:g} cores{share}")
        if limits.memory_high is not None:
            bits.append(f"memory high {limits.memory_high.human_readable()}")
        if limits.memory_max is not None:
            bits.append(f"memory max {limits.memory_max.human_readable()}")
        if limits.swap is False:
            bits.append("no swap")
        out.append(TierGroup(
            tier=pool.name, cpus=pool.cpus, cpu_weight=limits.cpu_weight,
            cpu_quota_us=None if cores is None else quota_us(cores),
            memory_high=None if limits.memory_high is None else int(limits.memory_high),
            memory_max=None if limits.memory_max is None else int(limits.memory_max),
            swap=limits.swap, reason=f"tier {pool.name}: {', '.join(bits)} (mode {mode})"))
    return tuple(out)


def _lent_cpus(pools: Sequence[Pool], policy: Policy) -> tuple[int, ...]:
    """The cores of exclusive pools whose tier sleeps most of the time."""
    out: set[int] = set()
    for pool in pools:
        if pool.exclusive and pool.name != HOUSEKEEPING and pool.cpus \
                and pool.demand < policy.lend_below * len(pool.cpus):
            out.update(pool.cpus)
    return tuple(sorted(out))


def _idle_limits(pools: Sequence[Pool], policy: Policy, tuning: ModeTuning,
                 mode: str) -> tuple[CpuIdleLimit, ...]:
    """Each exclusive pool's cores, where its tier asks for an idle limit and the mode
    allows one: a core shared with other work gains nothing a limit costs."""
    if not tuning.idle_limits:
        return ()
    out = []
    for pool in pools:
        if not pool.exclusive or pool.name == HOUSEKEEPING:
            continue
        latency = policy.tier(pool.name).idle_latency_us
        if latency is None:
            continue
        how = "polls when idle" if latency == 0 else f"idles no deeper than {latency} µs exit"
        out.extend(CpuIdleLimit(cpu=c, tier=pool.name, latency_us=latency,
                                reason=f"tier {pool.name}: exclusive core {how} "
                                       f"(mode {mode})") for c in pool.cpus)
    return tuple(sorted(out, key=lambda x: x.cpu))


def _assign(procs: Sequence[ProcessTarget], conts: Sequence[ContainerTarget],
            wants: Mapping[str, _Want], pool_cpus: Mapping[str, tuple[int, ...]],
            pools: Mapping[str, Pool], policy: Policy, tuning: ModeTuning, strategy: str,
            lent: tuple[int, ...], grouped: set[str] = frozenset()) -> list[Assignment]:
    out: list[Assignment] = []
    container_cpus: dict[str, tuple[str, tuple[int, ...]]] = {}
    for c in conts:
        name = _pool_name(c.tier)
        cpus = pool_cpus[name]
        container_cpus[c.container_id] = (name, cpus)
        shares = policy.housekeeping_cpu_shares if name == HOUSEKEEPING else policy.tier(name).cpu_shares
        if name in tuning.squeeze:
            shares = 2                                 # the smallest weight cgroup v1 takes
        why = "unclassified" if name == HOUSEKEEPING else f"class {c.cls or '?'}"
        out.append(Assignment(target="container", tier=name, cpus=cpus, container_id=c.container_id,
                              cpu_shares=shares,
                              reason=f"tier {name} → pool {cpulist_format(cpus)} "
                                     f"({pools[name].reason}); {why}"))
    for p in procs:
        name = _pool_name(p.tier, p.housekeeping)
        cpus = pool_cpus[name]
        extra = ""
        if p.container_id and p.container_id in container_cpus:
            # the container's cpuset bounds its processes whatever their own tier
            c_name, cpus = container_cpus[p.container_id]
            if c_name != name:
                extra = f"; inside container {p.container_id[:12]} (tier {c_name}), whose cpuset wins"
        if name == HOUSEKEEPING:
            why = OWN_REASON if p.housekeeping else \
                  f"unclassified ({p.tier or 'no tier'}): placed with housekeeping, priorities left alone"
            out.append(Assignment(target="process", tier=name, cpus=cpus, pid=p.pid,
                                  start_time=p.start_time, container_id=p.container_id,
                                  reason=f"{why} → pool {cpulist_format(cpus)} "
                                         f"({pools[name].reason}){extra}"))
            continue
        beside = strategy if strategy == "shared" or lent else ""
        nice, ioclass, iolevel, pol, note = _tier_settings(name, policy.tier(name), tuning,
                                                           beside)
        if lent and name in BATCH_TIERS and not (p.container_id and p.container_id in container_cpus):
            cpus = tuple(sorted({*cpus, *lent}))
            note = f"{note}; lent {cpulist_format(lent)} while its tier sleeps"
        reason = f"tier {name} → pool {cpulist_format(cpus)} ({pools[name].reason}); class {p.cls or '?'}"
        group = name if name in grouped and not p.container_id else None
        if p.cls == ASLEEP and name != HOUSEKEEPING:
            # what it starts would inherit a demotion or a cap, and a sleeper gains nothing
            # from either
            nice = ioclass = iolevel = pol = None
            note = "asleep: placed, its priorities left as they are"
            if group:
                note += " and kept out of its tier's limited group"
                group = None
        elif group:
            note = "; ".join(n for n in (note, f"in the {name} group's limits") if n)
        if note:
            reason += f"; {note}"
        out.append(Assignment(target="process", tier=name, cpus=cpus, pid=p.pid,
                              start_time=p.start_time, container_id=p.container_id, nice=nice,
                              ioclass=ioclass, iolevel=iolevel, policy=pol, cgroup=group,
                              reason=reason + extra))
    out.sort(key=lambda a: (a.target != "process", a.pid or 0, a.start_time or 0, a.container_id or ""))
    return out


def _cap_moves(assignments: list[Assignment], previous: Plan | None,
               exclusive_cpus: Mapping[str, set[int]], max_moves: int
               ) -> tuple[list[Assignment], int, int]:
    """Hold back cpu changes beyond ``max_moves``; a target on another tier's exclusive
    cores always moves. Most protected tiers move first, then by identity."""
    if previous is None:
        return assignments, 0, 0
    before = {a.key: a for a in previous.assignments}
    must: list[int] = []
    may: list[int] = []
    for i, a in enumerate(assignments):
        old = before.get(a.key)
        if old is None or old.cpus == a.cpus:
            continue                                  # new targets are placements, not moves
        intrudes = any(set(old.cpus) & cpus for name, cpus in exclusive_cpus.items() if name != a.tier)
        (must if intrudes else may).append(i)
    may.sort(key=lambda i: (_RANK.get(assignments[i].tier, len(_RANK)), assignments[i].key))
    allowed = max(0, max_moves - len(must))
    held = may[allowed:]
    out = list(assignments)
    for i in held:
        a = out[i]
        old = before[a.key]
        out[i] = replace(a, cpus=old.cpus,
                         reason=f"{a.reason}; move to {a.cpulist} deferred "
                                f"(at most {max_moves} per plan), stays on {old.cpulist}")
    return out, len(must) + min(len(may), allowed), len(held)


# --- the plan as an event ------------------------------------------------------------------

def to_decisions(plan: Plan) -> list[Decision]:
    """The plan's ``Decision`` rows, in the plan's order (send with ``Decisions``,
    ``plan_seq=plan.seq``, ``mode=plan.mode`` and ``strategy=plan.strategy``)."""
    return [Decision(target=a.target, tier=a.tier, cpus=cpulist_format(a.cpus), pid=a.pid,
                     start_time=a.start_time, container_id=a.container_id, nice=a.nice,
                     ioclass=a.ioclass, iolevel=a.iolevel, policy=a.policy,
                     cpu_shares=a.cpu_shares, cgroup=a.cgroup, reason=a.reason)
            for a in plan.assignments] + [
        Decision(target="cpu", tier=x.tier, cpus=str(x.cpu), idle_latency_us=x.latency_us,
                 reason=x.reason) for x in plan.idle_limits] + [
        Decision(target="cgroup", tier=g.tier, cpus=cpulist_format(g.cpus), cgroup=g.tier,
                 cpu_weight=g.cpu_weight, cpu_quota_us=g.cpu_quota_us,
                 memory_high=g.memory_high, memory_max=g.memory_max, swap=g.swap,
                 reason=g.reason) for g in plan.groups]


def action(d: Decision) -> tuple:
    """What the applier acts on in a decision, without its reason (whose demand figures
    move every cycle): two decisions with the same action ask for the same change."""
    return (d.target, d.pid, d.start_time, d.container_id, d.cpus, d.nice, d.ioclass,
            d.iolevel, d.policy, d.cpu_shares, d.idle_latency_us, d.cgroup, d.cpu_weight,
            d.cpu_quota_us, d.memory_high, d.memory_max, d.swap)


def pool_states(plan: Plan) -> dict[str, dict[str, Any]]:
    """Each pool's cpus, held size and hysteresis streaks, as a decisions event carries
    them (``Decisions.pools``) so that ``plan_from_decisions`` can go on from them."""
    return {p.name: {"cpus": cpulist_format(p.cpus), "size": p.size,
                     "grow": p.grow_streak, "shrink": p.shrink_streak} for p in plan.pools}


def pool_cores(plan: Plan, topology: Topology) -> dict[str, int]:
    """How many cores each pool's CPUs are on (a pool sharing another's cores counts them)."""
    return {p.name: len(topology.cores_of(p.cpus)) for p in plan.pools}


def plan_from_decisions(topology: Topology, decisions: Iterable[Decision], seq: int,
                        mode: str = "balanced", strategy: str = STRATEGIES[0],
                        pools: Mapping[str, Mapping[str, Any]] | None = None,
                        reserve: str = "") -> Plan:
    """Rebuild a previous plan from its decisions event, e.g. after a restart or for a
    replay.

    With the event's ``pools`` the pools are exactly as planned: cpus, held size and
    hysteresis streaks. Without (an event from before they were recorded) a pool is the
    union of its members' cpus, held at that many cores, and its streaks start again from
    zero, which only delays a change.
    """
    assignments: list[Assignment] = []
    cpus_by_pool: dict[str, set[int]] = {}
    for d in decisions:
        if d.target in ("cpu", "cgroup"):
            continue                                  # idle limits and groups follow the pools
        cpus = tuple(cpulist_parse(d.cpus))
        assignments.append(Assignment(target=d.target, tier=d.tier, cpus=cpus, pid=d.pid,
                                      start_time=d.start_time, container_id=d.container_id,
                                      nice=d.nice, ioclass=d.ioclass, iolevel=d.iolevel,
                                      policy=d.policy, cpu_shares=d.cpu_shares,
                                      cgroup=d.cgroup, reason=d.reason))
        cpus_by_pool.setdefault(d.tier, set()).update(c for c in cpus if c in topology.cpu_ids)
    restored = []
    for name in (*TIERS, HOUSEKEEPING):
        state = (pools or {}).get(name)
        if state is not None:
            cpus = tuple(c for c in cpulist_parse(str(state.get("cpus", "")))
                         if c in topology.cpu_ids)
            restored.append(Pool(name=name, cpus=cpus, size=int(state.get("size", 1)),
                                 demand=0.0, need=0.0, grow_streak=int(state.get("grow", 0)),
                                 shrink_streak=int(state.get("shrink", 0)),
                                 reason="restored from a decisions event"))
        elif name in cpus_by_pool and not pools:
            cpus = tuple(sorted(cpus_by_pool[name]))
            size = max(1, len(topology.cores_of(cpus)))
            restored.append(Pool(name=name, cpus=cpus, size=size, demand=0.0, need=0.0,
                                 reason="restored from a decisions event"))
    return Plan(seq=seq, mode=mode, pools=tuple(restored), assignments=tuple(assignments),
                reserve=tuple(c for c in cpulist_parse(reserve) if c in topology.cpu_ids),
                strategy=strategy if strategy in STRATEGIES else STRATEGIES[0])


__all__ = [
    "Assignment", "ContainerTarget", "CpuIdleLimit", "Plan", "ProcessTarget", "Target", "TierGroup",
    "Utilization",
    "action", "plan", "plan_from_decisions", "pool_states", "process_targets", "to_decisions",
]
