"""Core pools: how big each one should be (demand, headroom, hysteresis) and which cores it
gets (core type, capacity, NUMA node, SMT siblings, stability).

The unit of placement is a physical core: a pool holds all hardware threads of its cores
(or, for exclusive pools with ``smt_siblings: idle``, only the first), so a busy sibling
thread never shares a core with latency-critical work. A core counts as one core of
capacity whatever its thread count: a sibling thread shares the core's execution units, so
counting it as a second core would overstate what latency-sensitive work gets.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from pipeline.topology import Topology, cpulist_format

from pipeline.policy import Policy

# Placement roles: how a pool treats the core holding CPU 0, which on Linux takes most
# device interrupts and timer housekeeping. Exclusive pools and the reserve take it last,
# the housekeeping pool first, the others don't care.
EXCLUSIVE, SHARED, HOUSEKEEPING_ROLE = "exclusive", "shared", "housekeeping"


class AllocationError(ValueError):
    """The inputs cannot be planned; the message says what is wrong."""


@dataclass(frozen=True)
class Pool:
    """One tier's cores in a plan (or the housekeeping pool).

    ``size`` is the size hysteresis holds, in cores; the pool may hold fewer cores when the
    machine has too few (then ``shared_with`` may name the pool whose cores it shares) or
    more (spare cores join the housekeeping pool). The streaks carry hysteresis from one
    plan to the next.
    """
    name: str
    cpus: tuple[int, ...]
    size: int
    demand: float
    need: float
    exclusive: bool = False
    shared_with: str | None = None
    grow_streak: int = 0
    shrink_streak: int = 0
    reason: str = ""

    @property
    def cpulist(self) -> str:
        return cpulist_format(self.cpus)


@dataclass(frozen=True)
class Sizing:
    size: int
    grow_streak: int
    shrink_streak: int
    note: str


def hold_size(need: float, min_cores: int, previous: Pool | None, policy: Policy,
              at_once: bool = False) -> Sizing:
    """The pool size after hysteresis, in cores.

    A new pool gets its full size at once (new critical work must not wait). An existing
    pool grows when ``need`` has stayed above ``size + grow_band`` for ``grow_cycles`` plans
    (``at_once``: the first time), and shrinks when the smaller pool would still have
    ``shrink_band`` cores spare, for ``shrink_cycles`` plans; in between it keeps its size.
    """
    want = max(min_cores, math.ceil(need - 1e-9))
    if previous is None:
        return Sizing(want, 0, 0, "")
    size = previous.size
    if want > size and need > size + policy.grow_band:
        streak = previous.grow_streak + 1
        if at_once or streak >= policy.grow_cycles:
            return Sizing(want, 0, 0, f"grown from {size}")
        return Sizing(size, streak, 0, f"held at {size}, grow pending {streak}/{policy.grow_cycles}")
    if want < size and need + policy.shrink_band <= size - 1:
        streak = previous.shrink_streak + 1
        if streak >= policy.shrink_cycles:
            return Sizing(want, 0, 0, f"shrunk from {size}")
        return Sizing(size, 0, streak, f"held at {size}, shrink pending {streak}/{policy.shrink_cycles}")
    return Sizing(size, 0, 0, "")


# --- the machine as cores ------------------------------------------------------------------

@dataclass(frozen=True)
class CoreInfo:
    core: int
    cpus: tuple[int, ...]
    node: int
    package: int
    core_type: str | None
    capacity: int

    @property
    def has_cpu0(self) -> bool:
        return 0 in self.cpus


def usable_cores(topology: Topology, use_isolated: bool) -> dict[int, CoreInfo]:
    """Core index -> its description; a core with an isolcpus= CPU is left out unless asked."""
    isolated = set(topology.isolated)
    out: dict[int, CoreInfo] = {}
    for core, cpus in topology.cores.items():
        if not use_isolated and isolated.intersection(cpus):
            continue
        first = topology.cpu(cpus[0])
        out[core] = CoreInfo(core=core, cpus=tuple(cpus), node=first.node, package=first.package,
                             core_type=first.core_type,
                             capacity=max(topology.cpu(c).capacity for c in cpus))
    return out


def _type_rank(core_type: str | None, prefer: str) -> int:
    if core_type == prefer:
        return 0
    return 1 if core_type is None else 2


def _quality(info: CoreInfo, prefer: str) -> tuple[int, int]:
    """Lower is better: the preferred core type first, then the fastest (P) or slowest (E)."""
    cap = -info.capacity if prefer == "P" else info.capacity
    return (_type_rank(info.core_type, prefer), cap)


def _cpu0_rank(info: CoreInfo, role: str) -> int:
    if role == SHARED:
        return 0
    if role == HOUSEKEEPING_ROLE:
        return 0 if info.has_cpu0 else 1
    return 1 if info.has_cpu0 else 0


def place(count: int, free: Collection[int], cores: Mapping[int, CoreInfo], prefer: str,
          role: str, previous: Iterable[int] = (), home_node: int | None = None) -> tuple[int, ...]:
    """Choose ``count`` cores from ``free`` for one pool; returns core indexes, sorted.

    Stability first: cores the pool already had stay (the best of them, when it shrinks).
    Then locality: the rest come from the node the pool already lives on, else from one
    node that can hold the whole pool (the best cores, then the lowest node id), else from
    ``home_node``, spilling to the same package before other packages. Within a node,
    cores are ordered by type, capacity, the CPU 0 rule and core index, so the same inputs
    always give the same cores.
    """
    if count <= 0:
        return ()
    free_set = set(free)

    def key(c: int) -> tuple:
        info = cores[c]
        return (*_quality(info, prefer), _cpu0_rank(info, role), c)

    keep = sorted((c for c in previous if c in free_set), key=key)[:count]
    need = count - len(keep)
    if need <= 0:
        return tuple(sorted(keep))
    avail = sorted(free_set - set(keep), key=key)
    if keep:
        home = Counter(cores[c].node for c in keep).most_common()
        node = min(n for n, k in home if k == home[0][1])
    else:
        by_node: dict[int, list[int]] = {}
        for c in avail:
            by_node.setdefault(cores[c].node, []).append(c)
        fitting = [n for n, cs in by_node.items() if len(cs) >= need]
        if fitting:
            # the node whose best `need` cores are best, then the lowest node id
            node = min(fitting, key=lambda n: ([_quality(cores[c], prefer) for c in by_node[n][:need]], n))
        elif home_node is not None and home_node in by_node:
            node = home_node
        elif by_node:
            node = min(by_node, key=lambda n: (-len(by_node[n]), n))
        else:
            return tuple(sorted(keep))
    package = next((cores[c].package for c in avail if cores[c].node == node), None)

    def local_key(c: int) -> tuple:
        info = cores[c]
        return (_quality(info, prefer)[0], info.node != node, info.package != package, key(c))

    chosen = keep + sorted(avail, key=local_key)[:need]
    return tuple(sorted(chosen))


def describe(core_ids: Iterable[int], cores: Mapping[int, CoreInfo], multi_node: bool) -> str:
    """"P-cores", "E-cores", "P- and E-cores" or "cores", plus the node(s) on a NUMA machine."""
    ids = list(core_ids)
    types = {cores[c].core_type for c in ids}
    if types == {"P"}:
        what = "P-cores"
    elif types == {"E"}:
        what = "E-cores"
    elif types >= {"P", "E"}:
        what = "P- and E-cores"
    else:
        what = "cores"
    if multi_node and ids:
        nodes = sorted({cores[c].node for c in ids})
        what += f" on node {cpulist_format(nodes)}" if len(nodes) == 1 else f" on nodes {cpulist_format(nodes)}"
    return what


__all__ = ["AllocationError", "CoreInfo", "Pool", "Sizing", "describe", "hold_size", "place",
           "usable_cores"]
