"""The allocator: pools and decisions on real sysfs captures and profiles, modes,
hysteresis, the move cap, determinism and the plan as a decisions event."""
from __future__ import annotations

import random
import re
import tarfile
from pathlib import Path

import pytest

from agents.allocation import (
    AllocationError, ContainerTarget, Plan, ProcessTarget, Utilization, plan,
    plan_from_decisions, process_targets, to_decisions,
)
from pipeline.policy import Policy, PolicyError
from pipeline.vocabulary import HOUSEKEEPING, TIERS
from pipeline.events import (
    Classification, Decisions, HostSample, ProcessSample, batched, decode, encode, envelope,
)
from pipeline.topology import Topology, cpulist_parse, load_profile, read_topology

DATA = Path(__file__).resolve().parent.parent / "data" / "sysfs"
_SKIP = re.compile(r"/(memory\d*|cpuidle|power|vulnerabilities|firmware_node|microcode)(/|$)")
MACHINES = ("intel-hybrid-16cpu", "server-112cpu-6node", "arm-pixel6-8cpu", "this-machine-2cpu",
            "desktop-20cpu", "server-2socket-4node-40core")


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Topology]:
    """The sysfs captures, read once: name -> Topology."""
    out = tmp_path_factory.mktemp("alloc-sysfs")
    topos = {}
    for name in MACHINES:
        with tarfile.open(DATA / f"{name}.tar.xz") as tar:
            keep = [m for m in tar.getmembers() if not _SKIP.search(m.name)]
            tar.extractall(out, members=keep, filter="data")
        topos[name] = read_topology(out / name)
    topos["apple-m4-max"] = load_profile("apple-m4-max")
    return topos


def proc(pid: int, tier: str | None, share: float = 0.0, **kw) -> ProcessTarget:
    return ProcessTarget(pid=pid, start_time=1000 + pid, tier=tier, cls=kw.pop("cls", "c"),
                         cpu_share=share, **kw)


def mixed() -> list[ProcessTarget]:
    """One process per tier plus an unclassified one and corelane itself."""
    return [proc(10, "ultra_critical", 0.4), proc(11, "critical", 0.8), proc(12, "high", 0.5),
            proc(13, "normal", 1.0), proc(14, "low", 0.6), proc(15, "background", 0.9),
            proc(16, None, 0.1), proc(17, "normal", 0.0, housekeeping=True)]


def sibling_safe(p: Plan, t: Topology) -> None:
    """No SMT sibling of an exclusive pool's CPU is in any other pool."""
    owner: dict[int, set[str]] = {}
    for pool in p.pools:
        for c in pool.cpus:
            owner.setdefault(c, set()).add(pool.name)
    for pool in p.pools:
        if not pool.exclusive:
            continue
        for c in pool.cpus:
            for s in t.siblings(c):
                assert owner.get(s, {pool.name}) == {pool.name}, \
                    f"cpu {s}, sibling of {pool.name} cpu {c}, is in {owner.get(s)}"


def exclusive_respected(p: Plan) -> None:
    """Nothing but an exclusive tier's own targets runs on its cores, and no pool overlaps it."""
    for pool in p.pools:
        if not pool.exclusive:
            continue
        mine = set(pool.cpus)
        for other in p.pools:
            if other.name != pool.name and other.shared_with != pool.name:
                assert not mine & set(other.cpus), f"{other.name} overlaps {pool.name}"
        for a in p.assignments:
            if a.tier != pool.name and p.pool(a.tier).shared_with != pool.name:
                assert not mine & set(a.cpus), f"{a.key} runs on {pool.name}'s cores"


# --- the machines --------------------------------------------------------------------------

def test_this_machine_two_cores(topo):
    t = topo["this-machine-2cpu"]
    p = plan(t, mixed())
    ultra = p.cpus_of("ultra_critical")
    assert len(ultra) == 1
    # the other latency-critical tier shares that one core, everything else the other
    assert p.cpus_of("critical") == ultra and p.pool("critical").shared_with == "ultra_critical"
    rest = tuple(c for c in t.cpu_ids if c not in ultra)
    for name in ("high", "normal", "low", "background", HOUSEKEEPING):
        assert p.cpus_of(name) == rest, name
    # CPU 0 takes most interrupts: the critical core is the other one
    assert ultra == (1,) and rest == (0,)
    for a in p.assignments:
        if a.tier in (HOUSEKEEPING, "normal", "low", "background", "high"):
            assert a.cpus == rest
    assert p.reserve == () and p.unused == ()
    assert any("2 cores" in n for n in p.notes)
    exclusive_respected(p)


def test_one_core_plans_without_isolation():
    t = Topology(cpus=(read_cpu(0),), source="one")
    p = plan(t, mixed())
    assert all(pool.cpus == (0,) for pool in p.pools)
    assert any("one core" in n for n in p.notes)


def read_cpu(n: int):
    from pipeline.topology import Cpu
    return Cpu(cpu=n, core=n)


def test_intel_hybrid_critical_on_p_cores_background_on_e(topo):
    t = topo["intel-hybrid-16cpu"]
    targets = [proc(1, "critical", 3.0), proc(2, "background", 2.0), proc(3, None, 0.3)]
    p = plan(t, targets)
    assert p.cpus_of("critical") == tuple(range(8))          # all four P-cores, both threads
    assert set(p.cpus_of("background")) <= set(range(8, 16))
    assert len(p.cpus_of("background")) == 3                 # 2.0 + 10% -> 3 cores
    assert set(p.cpus_of(HOUSEKEEPING)) <= set(range(8, 16))
    assert "P-cores" in p.pool("critical").reason
    assert p.assignment(1, 1001).reason.startswith("tier critical → pool 0-7 (P-cores, demand 3.0 cores + 25% headroom")
    assert len(p.reserve) == 1 and set(p.reserve) <= set(range(8, 16))   # no P-core left for it
    sibling_safe(p, t)
    exclusive_respected(p)


def test_intel_hybrid_smaller_critical_pool_keeps_smt_pairs(topo):
    t = topo["intel-hybrid-16cpu"]
    p = plan(t, [proc(1, "critical", 0.7), proc(2, "ultra_critical", 0.2), proc(3, "background", 1.0)])
    for name in ("critical", "ultra_critical"):
        cpus = p.cpus_of(name)
        assert set(cpus) <= set(range(8))
        assert all(t.siblings(c)[0] in cpus for c in cpus), f"{name} {cpus} splits an SMT pair"
    # CPU 0's core is the last a critical tier takes; the reserve prefers a P-core
    assert 0 not in p.cpus_of("critical") + p.cpus_of("ultra_critical")
    assert set(p.reserve) <= set(range(8))
    sibling_safe(p, t)


def test_smt_siblings_idle(topo):
    t = topo["intel-hybrid-16cpu"]
    p = plan(t, [proc(1, "critical", 1.5), proc(2, "normal", 1.0)], policy=Policy(smt_siblings="idle"))
    crit = p.cpus_of("critical")
    assert len(crit) == 2 and all(c < 8 for c in crit)
    for c in crit:
        sib = t.siblings(c)[0]
        assert sib in p.unused and all(sib not in pool.cpus for pool in p.pools)


@pytest.mark.parametrize("name", [*MACHINES, "apple-m4-max"])
def test_invariants_on_every_machine(topo, name):
    t = topo[name]
    p = plan(t, mixed() + [ContainerTarget("c" * 64, "high", cls="interactive")])
    sibling_safe(p, t)
    exclusive_respected(p)
    # every non-empty tier has a pool with at least one core, and every pool's cpus are online
    for tier in TIERS:
        assert p.cpus_of(tier), tier
    for pool in p.pools:
        assert set(pool.cpus) <= set(t.cpu_ids) and pool.reason
    # housekeeping never on an exclusive core, pools + reserve + unused cover the machine
    hk = set(p.cpus_of(HOUSEKEEPING))
    for pool in p.pools:
        if pool.exclusive:
            assert not hk & set(pool.cpus)
    covered = {c for pool in p.pools for c in pool.cpus} | set(p.reserve) | set(p.unused)
    assert covered == set(t.cpu_ids)
    assert all(a.reason for a in p.assignments)


def test_server_pools_stay_within_a_node(topo):
    t = topo["server-112cpu-6node"]
    targets = [proc(1, "ultra_critical", 1.0), proc(2, "critical", 6.0), proc(3, "normal", 4.0),
               proc(4, "background", 3.0), proc(5, "low", 2.0)]
    p = plan(t, targets)
    for name in ("ultra_critical", "critical", "normal", "background", "low"):
        nodes = {t.cpu(c).node for c in p.cpus_of(name)}
        assert len(nodes) == 1, f"{name} spans nodes {nodes}"
    assert len(p.cpus_of("critical")) == 2 * 8                # 6.0 + 25% -> 8 cores, 16 threads
    # isolcpus= CPUs (4-7, 60-63) are left alone
    iso = set(cpulist_parse("4-7,60-63"))
    assert iso <= set(p.unused)
    assert all(not iso & set(pool.cpus) for pool in p.pools)
    assert len(p.reserve) == 2                                 # one core, both threads
    assert "on node" in p.pool("critical").reason
    sibling_safe(p, t)


def test_server_pool_larger_than_a_node_spills_within_the_package(topo):
    t = topo["server-112cpu-6node"]
    p = plan(t, [proc(1, "critical", 15.0)])                   # 19 cores: no node has 14 free
    cpus = p.cpus_of("critical")
    assert len(cpus) == 2 * 19
    assert len({t.cpu(c).package for c in cpus}) == 1


def test_pixel_big_cores_for_critical(topo):
    t = topo["arm-pixel6-8cpu"]
    p = plan(t, [proc(1, "critical", 1.0), proc(2, "background", 1.0), proc(3, None, 0.2)])
    assert p.cpus_of("critical") == (0, 1)                     # the 1024-capacity cores
    assert set(p.cpus_of("background")) <= {4, 5, 6, 7}
    assert set(p.cpus_of(HOUSEKEEPING)) <= {4, 5, 6, 7} | {2, 3}
    assert not set(p.cpus_of(HOUSEKEEPING)) & {0, 1}


def test_apple_m4_max_profile(topo):
    t = topo["apple-m4-max"]
    p = plan(t, [proc(1, "ultra_critical", 2.0), proc(2, "critical", 3.0),
                 proc(3, "background", 1.5), proc(4, "low", 0.5), proc(5, None, 0.5)])
    assert len(p.cpus_of("ultra_critical")) == 3 and len(p.cpus_of("critical")) == 4
    assert set(p.cpus_of("ultra_critical") + p.cpus_of("critical")) <= set(range(12))
    assert set(p.cpus_of("background") + p.cpus_of("low")) <= set(range(12, 16))
    assert len(p.reserve) == 1 and p.reserve[0] < 12          # a P-core, for emergencies


# --- sizing --------------------------------------------------------------------------------

def test_empty_tier_gets_no_pool(topo):
    t = topo["apple-m4-max"]
    p = plan(t, [proc(1, "critical", 1.0)])
    assert [pool.name for pool in p.pools] == ["critical", HOUSEKEEPING]
    assert p.pool("ultra_critical") is None and p.cpus_of("background") == ()
    # a tier that appears gets its pool at once, without waiting for hysteresis
    p2 = plan(t, [proc(1, "critical", 1.0), proc(2, "ultra_critical", 0.1)], previous_plan=p)
    assert len(p2.cpus_of("ultra_critical")) == 1


def test_non_empty_tier_gets_at_least_one_core_even_without_demand(topo):
    p = plan(topo["apple-m4-max"], [proc(1, "high"), proc(2, "low")])
    assert len(p.cpus_of("high")) == 1 and len(p.cpus_of("low")) == 1


def test_demand_from_utilization_overrides_members(topo):
    t = topo["apple-m4-max"]
    p = plan(t, [proc(1, "critical", 0.1)], Utilization(tier_demand={"critical": 3.5}))
    assert len(p.cpus_of("critical")) == 5                    # 3.5 x 1.25 = 4.4 -> 5
    assert "demand 3.5 cores" in p.pool("critical").reason


def test_unaccounted_busy_time_sizes_housekeeping(topo):
    t = topo["apple-m4-max"]
    busy = Utilization(cpu_busy={c: 0.5 for c in range(16)}, tier_demand={"critical": 1.0})
    p = plan(t, [proc(1, "critical")], busy, mode="power_save")
    # 8 cores busy in all, 1 of them critical: 7 x (1 + 12.5%) -> 8 housekeeping cores
    assert p.pool(HOUSEKEEPING).demand == pytest.approx(7.0)
    assert len(p.cpus_of(HOUSEKEEPING)) == 8


def test_host_sample_utilization():
    s = HostSample(cpu_percent=[50.0, 25.0], cpu_freq_khz=[None, None], load=(0, 0, 0),
                   mem_total_bytes=1, mem_available_bytes=1)
    u = Utilization.from_host_sample(s, {"normal": 0.5})
    assert dict(u.cpu_busy) == {0: 0.5, 1: 0.25} and u.tier_demand["normal"] == 0.5
    with pytest.raises(AllocationError, match="demand"):
        Utilization(tier_demand={"normal": -1})


# --- hysteresis ----------------------------------------------------------------------------

def run(t: Topology, demands: list[float], **kw) -> list[Plan]:
    plans: list[Plan] = []
    prev = None
    for d in demands:
        prev = plan(t, [proc(1, "critical"), proc(2, "normal", 0.5)],
                    Utilization(tier_demand={"critical": d}), previous_plan=prev, **kw)
        plans.append(prev)
    return plans


def test_jitter_does_not_change_pools(topo):
    t = topo["apple-m4-max"]
    # need = d x 1.25 wobbles around 2.5 cores on a 3-core pool, and one spike above it
    jitter = [2.0, 1.8, 2.2, 1.9, 2.5, 2.1, 1.7, 2.2, 1.9, 2.0, 2.5, 1.8]
    plans = run(t, jitter)
    assert {p.cpus_of("critical") for p in plans} == {plans[0].cpus_of("critical")}
    assert len(plans[0].cpus_of("critical")) == 3
    assert all(p.moves == 0 for p in plans)
    assert [p.seq for p in plans] == list(range(1, len(jitter) + 1))


def test_sustained_rise_grows_after_grow_cycles(topo):
    t = topo["apple-m4-max"]
    plans = run(t, [1.0, 3.0, 3.0, 3.0])
    sizes = [len(p.cpus_of("critical")) for p in plans]
    assert sizes == [2, 2, 4, 4]
    assert "grow pending 1/2" in plans[1].pool("critical").reason
    assert "grown from 2" in plans[2].pool("critical").reason
    # growth keeps the cores it had
    assert set(plans[0].cpus_of("critical")) <= set(plans[2].cpus_of("critical"))


def test_interrupted_rise_does_not_grow(topo):
    plans = run(topo["apple-m4-max"], [1.0, 3.0, 1.0, 3.0, 1.0])
    assert {len(p.cpus_of("critical")) for p in plans} == {2}


def test_shrink_needs_margin_and_cycles(topo):
    t = topo["apple-m4-max"]
    # 4 cores; 2.2 x 1.25 = 2.75 would fit 3 but leaves less than half a core spare
    plans = run(t, [3.0, 2.2, 2.2, 2.2, 2.2])
    assert {len(p.cpus_of("critical")) for p in plans} == {4}
    plans = run(t, [3.0, 1.0, 1.0, 1.0])
    assert [len(p.cpus_of("critical")) for p in plans] == [4, 4, 4, 2]
    assert "shrunk from 4" in plans[3].pool("critical").reason
    assert set(plans[3].cpus_of("critical")) <= set(plans[0].cpus_of("critical"))


def test_growth_limited_by_machine_size(topo):
    t = topo["arm-pixel6-8cpu"]
    p = plan(t, [proc(1, "critical", 20.0), proc(2, "normal", 1.0)])
    # 8 cores: 1 reserve, 1 left for everything else
    assert len(p.cpus_of("critical")) == 6 and len(p.cpus_of("normal")) == 1
    assert "6 of 25 cores" in p.pool("critical").reason


# --- moves ---------------------------------------------------------------------------------

def test_move_cap_defers_and_catches_up(topo):
    t = topo["apple-m4-max"]
    many = [proc(100 + i, "normal", 0.1) for i in range(6)]
    p1 = plan(t, many + [proc(1, "critical", 1.0)])
    # the normal pool grows: all six normal processes would move at once
    u = Utilization(tier_demand={"normal": 4.0, "critical": 1.0})
    pol = Policy(max_moves=2, grow_cycles=1)
    p2 = plan(t, many + [proc(1, "critical")], u, policy=pol, previous_plan=p1)
    new_normal = p2.cpus_of("normal")
    moved = [a for a in p2.assignments if a.tier == "normal" and a.cpus == new_normal]
    held = [a for a in p2.assignments if a.tier == "normal" and a.cpus != new_normal]
    assert (p2.moves, p2.deferred, len(moved), len(held)) == (2, 4, 2, 4)
    assert [a.pid for a in moved] == [100, 101]               # deterministic order
    assert all("deferred" in a.reason and a.cpus == p1.assignment(a.pid, a.start_time).cpus for a in held)
    p3 = plan(t, many + [proc(1, "critical")], u, policy=pol, previous_plan=p2)
    p4 = plan(t, many + [proc(1, "critical")], u, policy=pol, previous_plan=p3)
    assert (p3.moves, p4.moves, p4.deferred) == (2, 2, 0)
    assert all(a.cpus == p4.cpus_of(a.tier) for a in p4.assignments)


def test_isolation_moves_are_never_deferred(topo):
    t = topo["this-machine-2cpu"]
    rest = [proc(i, None, 0.1) for i in range(1, 6)] + [proc(6, "normal", 0.1)]
    p1 = plan(t, rest)
    assert p1.cpus_of(HOUSEKEEPING) == (1,)                   # normal took CPU 0's core
    p2 = plan(t, rest + [proc(9, "ultra_critical", 0.2)], policy=Policy(max_moves=1), previous_plan=p1)
    assert p2.cpus_of("ultra_critical") == (1,)
    # all five leave the now exclusive core at once, the cap notwithstanding
    assert p2.deferred == 0 and p2.moves == 5
    assert all(a.cpus == (0,) for a in p2.assignments if a.tier == HOUSEKEEPING)
    exclusive_respected(p2)


def test_new_targets_are_not_moves(topo):
    t = topo["apple-m4-max"]
    p1 = plan(t, [proc(1, "normal")])
    p2 = plan(t, [proc(1, "normal")] + [proc(i, "low") for i in range(2, 50)],
              policy=Policy(max_moves=0), previous_plan=p1)
    assert p2.moves == 0 and p2.deferred == 0 and len(p2.cpus_of("low")) == 1


# --- modes ---------------------------------------------------------------------------------

def test_balanced_is_the_default_and_tier_settings(topo):
    p = plan(topo["apple-m4-max"], mixed())
    assert p.mode == "balanced"
    by_tier = {a.tier: a for a in p.assignments if a.target == "process" and a.pid != 17}
    assert (by_tier["ultra_critical"].nice, by_tier["ultra_critical"].ioclass,
            by_tier["ultra_critical"].iolevel, by_tier["ultra_critical"].policy) == (-10, "be", 0, "other")
    assert (by_tier["low"].nice, by_tier["low"].policy) == (10, "batch")
    assert (by_tier["background"].nice, by_tier["background"].ioclass,
            by_tier["background"].iolevel, by_tier["background"].policy) == (19, "idle", None, "idle")
    # no real-time anywhere unless a policy asks
    assert not {a.policy for a in p.assignments} & {"fifo", "rr"}
    assert all(a.ioclass != "rt" for a in p.assignments)


def test_realtime_only_when_asked(topo):
    pol = Policy.from_mapping({"tiers": {"ultra_critical": {"policy": "fifo", "nice": None}}})
    p = plan(topo["apple-m4-max"], mixed(), policy=pol)
    assert p.assignment(10, 1010).policy == "fifo"
    assert p.assignment(11, 1011).policy == "other"


def test_high_performance(topo):
    t = topo["apple-m4-max"]
    bal = plan(t, mixed())
    hp = plan(t, mixed(), mode="high_performance")
    bg = hp.assignment(15, 1015)
    assert (bg.policy, bg.ioclass, bg.iolevel, bg.nice) == ("batch", "be", 7, 19)
    assert "SCHED_BATCH instead of SCHED_IDLE" in bg.reason
    assert all(a.policy != "idle" for a in hp.assignments)
    # twice the headroom: more cores for the demanding tiers
    assert len(hp.cpus_of("normal")) >= len(bal.cpus_of("normal"))
    assert hp.pool("ultra_critical").need > bal.pool("ultra_critical").need


def test_power_save_packs_onto_e_cores_and_leaves_spare_idle(topo):
    t = topo["apple-m4-max"]
    targets = [proc(1, "critical", 1.0), proc(2, "normal", 0.5), proc(3, "background", 0.5), proc(4, None, 0.1)]
    bal = plan(t, targets)
    ps = plan(t, targets, mode="power_save")
    assert set(ps.cpus_of("normal")) <= set(range(12, 16))    # normal prefers P, but not here
    assert set(bal.cpus_of("normal")) <= set(range(12))
    assert len(ps.unused) > 0 and not bal.unused
    used = {c for pool in ps.pools for c in pool.cpus}
    assert len(used) < len({c for pool in bal.pools for c in pool.cpus})
    assert set(ps.cpus_of("critical")) <= set(range(12))      # critical stays on P-cores


def test_emergency(topo):
    t = topo["apple-m4-max"]
    targets = mixed() + [ContainerTarget("b" * 64, "background", cls="idle")]
    u = Utilization(tier_demand={"ultra_critical": 1.0, "low": 3.0, "background": 3.0})
    bal = plan(t, targets, u)
    em = plan(t, targets, Utilization(tier_demand={"ultra_critical": 3.0, "low": 3.0, "background": 3.0}),
              mode="emergency", previous_plan=bal)
    # critical growth at once (3.0 x 1.5 -> 5 cores, no grow_cycles wait), plus the reserve
    assert len(bal.cpus_of("ultra_critical")) == 2
    assert len(em.cpus_of("ultra_critical")) == 5 + 1
    assert set(bal.reserve) <= set(em.cpus_of("ultra_critical")) and em.reserve == ()
    # low and background squeezed into one minimal pool
    assert len(em.cpus_of("low")) == 1 and em.cpus_of("background") == em.cpus_of("low")
    assert len(bal.cpus_of("low")) > 1
    for pid in (14, 15):
        a = em.assignment(pid, 1000 + pid)
        assert (a.policy, a.ioclass, a.iolevel, a.nice) == ("idle", "idle", None, 19)
        assert "squeezed" in a.reason
    assert em.container("b" * 64).cpu_shares == 2
    # back to balanced: the reserve comes back out of the critical pool
    back = plan(t, targets, u, previous_plan=em)
    assert len(back.reserve) == 1 and back.reserve[0] not in back.cpus_of("ultra_critical")


def test_unknown_mode(topo):
    with pytest.raises(AllocationError, match="unknown mode 'turbo'.*balanced"):
        plan(topo["apple-m4-max"], [], mode="turbo")


# --- targets -------------------------------------------------------------------------------

def test_kernel_threads_unclassified_and_housekeeping(topo):
    t = topo["apple-m4-max"]
    targets = [proc(2, "background", kernel_thread=True), proc(3, None), proc(4, "mystery"),
               proc(5, "low", housekeeping=True), proc(6, "critical", 1.0)]
    p = plan(t, targets)
    assert p.assignment(2, 1002) is None
    assert p.skipped == (("process 2:1002", "kernel thread: placed by the kernel, not by corelane"),)
    for pid in (3, 4, 5):
        a = p.assignment(pid, 1000 + pid)
        assert a.tier == HOUSEKEEPING and a.cpus == p.cpus_of(HOUSEKEEPING)
        assert (a.nice, a.ioclass, a.iolevel, a.policy) == (None, None, None, None)
    assert "never re-prioritised" in p.assignment(5, 1005).reason
    assert "unclassified" in p.assignment(3, 1003).reason
    assert not set(p.cpus_of(HOUSEKEEPING)) & set(p.cpus_of("critical"))
    # with skipping off a kernel thread is planned like any process (the applier refuses it)
    p = plan(t, targets, policy=Policy(skip_kernel_threads=False))
    assert p.assignment(2, 1002).tier == "background"


def test_containers(topo):
    t = topo["apple-m4-max"]
    cid = "a" * 64
    targets = [ContainerTarget(cid, "critical", cls="latency_critical", cpu_share=1.0),
               proc(1, "normal", 0.2, container_id=cid), proc(2, "normal", 0.5),
               ContainerTarget("d" * 64, None)]
    p = plan(t, targets)
    c = p.container(cid)
    assert c.target == "container" and c.cpus == p.cpus_of("critical") and c.cpu_shares == 2048
    assert c.nice is None and c.reason.startswith("tier critical → pool")
    inner = p.assignment(1, 1001)
    assert inner.cpus == c.cpus and inner.nice == 0 and "cpuset wins" in inner.reason
    assert p.container("d" * 64).tier == HOUSEKEEPING
    # the container's figure covers its processes; the inner one does not count for normal too
    assert p.pool("critical").demand == pytest.approx(1.0)
    assert p.pool("normal").demand == pytest.approx(0.5)


def test_process_targets_join_by_identity():
    cls = [Classification(pid=5, start_time=77, cls="latency_critical", tier="ultra_critical",
                          confidence=1.0, source="label"),
           Classification(pid=6, start_time=1, cls="idle", tier="background", confidence=0.9,
                          source="rule")]
    samples = [ProcessSample(pid=5, start_time=77, ppid=1, name="srv", cpu_share=0.7, container_id="x"),
               ProcessSample(pid=6, start_time=2, ppid=1, name="reused pid", kernel_thread=True)]
    out = process_targets(cls, samples, housekeeping_pids=[6])
    assert out[0] == ProcessTarget(pid=5, start_time=77, tier="ultra_critical", cls="latency_critical",
                                   container_id="x", cpu_share=0.7)
    # a sample of another process with the same pid does not count
    assert out[1].kernel_thread is False and out[1].cpu_share == 0.0 and out[1].housekeeping


def test_classification_events_accepted_directly(topo):
    c = Classification(pid=5, start_time=77, cls="latency_critical", tier="ultra_critical",
                       confidence=1.0, source="label")
    p = plan(topo["this-machine-2cpu"], [c])
    assert p.assignment(5, 77).cpus == (1,)
    with pytest.raises(AllocationError, match="expected ProcessTarget"):
        plan(topo["this-machine-2cpu"], [("5", "critical")])  # type: ignore[list-item]


# --- determinism and the event -------------------------------------------------------------

def test_same_inputs_same_plan(topo):
    t = topo["server-2socket-4node-40core"]
    targets = mixed() + [proc(100 + i, TIERS[i % 6], 0.3 * (i % 5)) for i in range(60)] \
        + [ContainerTarget(f"{i:064x}", TIERS[i % 6]) for i in range(5)]
    u = Utilization(cpu_busy={c: (c % 7) / 10 for c in t.cpu_ids})
    first = plan(t, targets, u)
    for seed in range(5):
        shuffled = list(targets)
        random.Random(seed).shuffle(shuffled)
        again = plan(t, shuffled, u)
        assert again == first
        assert to_decisions(again) == to_decisions(first)
    nxt = plan(t, targets, u, previous_plan=first)
    assert nxt == plan(t, list(reversed(targets)), u, previous_plan=first)
    assert nxt.seq == 2 and nxt.moves == 0
    assert [p.cpus for p in nxt.pools] == [p.cpus for p in first.pools]


def test_to_decisions_round_trip_through_the_codec(topo):
    t = topo["intel-hybrid-16cpu"]
    p = plan(t, mixed() + [ContainerTarget("e" * 64, "high")])
    items = to_decisions(p)
    assert len(items) == len(p.assignments) + len(p.idle_limits) + len(p.groups)
    assert items[0].cpus == p.assignments[0].cpulist and all(d.reason for d in items)
    chunks = batched(Decisions, items, 3, "items", plan_seq=p.seq, mode=p.mode)
    back = [decode(encode(envelope(c, host="h", seq=i, ts=1.0))).data for i, c in enumerate(chunks)]
    assert [d for c in back for d in c.items] == items
    assert {(c.plan_seq, c.mode) for c in back} == {(1, "balanced")}
    container = next(d for d in items if d.target == "container")
    assert container.cpu_shares == 1536 and container.container_id == "e" * 64


def test_exclusive_ultra_critical_cores_poll_when_idle_unless_the_mode_says_no(topo):
    t = topo["intel-hybrid-16cpu"]
    p = plan(t, mixed())
    ultra = p.pool("ultra_critical")
    assert ultra is not None and ultra.exclusive
    assert [(x.cpu, x.tier, x.latency_us) for x in p.idle_limits] == [
        (c, "ultra_critical", 0) for c in ultra.cpus]
    cpu_rows = [d for d in to_decisions(p) if d.target == "cpu"]
    assert [(int(d.cpus), d.idle_latency_us) for d in cpu_rows] == [(c, 0) for c in ultra.cpus]
    assert all("polls when idle" in d.reason for d in cpu_rows)
    assert plan(t, mixed(), mode="power_save").idle_limits == ()
    # A tier that asks for none gets none, and a limit in µs is passed as it is.
    loose = Policy.from_mapping({"tiers": {"ultra_critical": {"idle_latency_us": None},
                                           "critical": {"idle_latency_us": 20,
                                                        "exclusive": True}}})
    limited = plan(t, mixed(), policy=loose)
    assert {x.tier for x in limited.idle_limits} == {"critical"}
    assert {x.latency_us for x in limited.idle_limits} == {20}
    # Rebuilt from its decisions, a plan has no idle limits of its own: they follow the pools.
    restored = plan_from_decisions(t, to_decisions(p), seq=p.seq, mode=p.mode)
    assert restored.idle_limits == () and len(restored.assignments) == len(p.assignments)


def test_plan_from_decisions_continues_without_moves(topo):
    t = topo["intel-hybrid-16cpu"]
    targets = mixed()
    p = plan(t, targets)
    restored = plan_from_decisions(t, to_decisions(p), seq=p.seq, mode=p.mode)
    assert [(x.name, x.cpus) for x in restored.pools] == [(x.name, x.cpus) for x in p.pools]
    nxt = plan(t, targets, previous_plan=restored)
    assert nxt.seq == 2 and nxt.moves == 0
    assert [x.cpus for x in nxt.pools] == [x.cpus for x in p.pools]


# --- policy --------------------------------------------------------------------------------

def test_policy_defaults_and_partial_overrides():
    pol = Policy.from_mapping({"tiers": {"low": {"nice": 5}}, "max_moves": 7})
    assert pol.tier("low").nice == 5 and pol.tier("low").headroom == 0.25   # a new TierPolicy
    assert pol.tier("background").nice == 19 and pol.max_moves == 7
    assert set(pol.modes) == {"high_performance", "balanced", "power_save", "emergency"}
    assert Policy() == Policy.from_mapping(None)


@pytest.mark.parametrize("data, message", [
    ({"tiers": {"urgent": {}}}, "unknown tier"),
    ({"tiers": {"low": {"ioclass": "idle", "iolevel": 3}}}, "idle' takes no iolevel"),
    ({"tiers": {"low": {"nice": 25}}}, r"allocator\.tiers\.low\.nice"),
    ({"modes": {"turbo": {}}}, "unknown mode"),
    ({"max_moves": -1}, "allocator.max_moves"),
    ({"smt_siblings": "share"}, "smt_siblings"),
    ({"modes": {"emergency": {"squeeze": ["lowest"]}}}, "squeeze names unknown tier"),
])
def test_policy_errors_name_the_key(data, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_mapping(data)


def test_policy_is_immutable():
    with pytest.raises(Exception):
        Policy().max_moves = 3  # type: ignore[misc]


# --- strategies and sleepers ----------------------------------------------------------------

def test_each_strategy_keeps_the_critical_tiers_quiet_its_own_way(topo):
    t = topo["intel-hybrid-16cpu"]
    procs = mixed() + [proc(20, "ultra_critical", 0.05)]
    poll = plan(t, procs, strategy="exclusive_poll")
    assert poll.strategy == "exclusive_poll" and poll.idle_limits and poll.lent == ()
    exclusive_respected(poll)

    halt = plan(t, procs, strategy="exclusive")
    assert halt.idle_limits == ()                          # the cores may halt
    assert halt.cpus_of("ultra_critical") == poll.cpus_of("ultra_critical")
    exclusive_respected(halt)

    lend = plan(t, procs, strategy="exclusive_lend")
    # both critical tiers sleep most of the time (under half of their cores busy)
    ultra = set(lend.cpus_of("ultra_critical")) | set(lend.cpus_of("critical"))
    assert set(lend.lent) == ultra and lend.idle_limits == ()
    by_pid = {a.pid: a for a in lend.assignments if a.target == "process"}
    for pid in (14, 15):                                    # low and background
        assert ultra <= set(by_pid[pid].cpus) and by_pid[pid].policy == "idle"
        assert "lent" in by_pid[pid].reason
    for pid in (12, 13, 16, 17):                            # nothing else goes there
        assert not ultra & set(by_pid[pid].cpus)

    shared = plan(t, procs, strategy="shared")
    every = set(t.cpu_ids) - set(shared.reserve)          # the emergency reserve stays free
    assert shared.idle_limits == () and not any(p.exclusive for p in shared.pools)
    by_pid = {a.pid: a for a in shared.assignments if a.target == "process"}
    assert all(set(a.cpus) == every for a in by_pid.values() if a.tier != HOUSEKEEPING)
    # unjudged work keeps to its own cores: at its own priority it would crowd the others
    own = set(shared.cpus_of(HOUSEKEEPING))
    assert own < every and set(by_pid[16].cpus) == own
    assert by_pid[14].policy == "idle" and by_pid[15].policy == "idle"
    assert by_pid[10].nice == -10 and by_pid[13].policy == "other"   # priorities still order


def test_a_busy_exclusive_tier_lends_nothing(topo):
    t = topo["this-machine-2cpu"]
    busy = plan(t, [proc(1, "ultra_critical", 0.9), proc(2, "low", 1.0)],
                strategy="exclusive_lend")
    assert busy.lent == ()
    assert busy.assignment(2, 1002).policy == "batch"       # its tier's own policy


def test_an_unknown_strategy_is_refused(topo):
    with pytest.raises(AllocationError, match="unknown strategy 'turbo'"):
        plan(topo["this-machine-2cpu"], mixed(), strategy="turbo")


def test_a_sleeper_is_placed_but_never_demoted(topo):
    t = topo["this-machine-2cpu"]
    p = plan(t, [proc(1, "background", 0.0, cls="idle"), proc(2, "background", 0.3,
                                                               cls="background")])
    asleep, busy = p.assignment(1, 1001), p.assignment(2, 1002)
    assert asleep.cpus == busy.cpus                          # placed like its tier
    assert (asleep.nice, asleep.policy, asleep.ioclass) == (None, None, None)
    assert "asleep" in asleep.reason
    assert (busy.nice, busy.policy) == (19, "idle")


def test_the_strategy_travels_with_the_plan(topo):
    t = topo["this-machine-2cpu"]
    p = plan(t, mixed(), strategy="exclusive_lend")
    back = plan_from_decisions(t, to_decisions(p), p.seq, p.mode, p.strategy)
    assert back.strategy == "exclusive_lend"
    again = plan(t, mixed(), previous_plan=back, strategy="shared")
    assert again.seq == p.seq + 1 and again.strategy == "shared"


# --- tier limits (cgroups) ------------------------------------------------------------------

def test_batch_tiers_get_group_limits_and_their_awake_members_join_them(topo) -> None:
    t = topo["intel-hybrid-16cpu"]
    targets = [*mixed(), proc(20, "low", 0.0, cls="idle"),
               proc(21, "background", 0.3, container_id="c" * 64)]
    p = plan(t, targets + [ContainerTarget("c" * 64, "background")])
    groups = {g.tier: g for g in p.groups}
    assert set(groups) == {"low", "background"}          # the critical tiers: unlimited
    assert groups["background"].cpu_weight == 10
    assert groups["background"].cpu_quota_us == 8 * 100_000    # 50% of 16 CPUs
    assert "cpu quota 8 cores (50% of 16 CPUs)" in groups["background"].reason
    member = {a.pid: a for a in p.assignments if a.target == "process"}
    assert member[14].cgroup == "low" and "low group's limits" in member[14].reason
    assert member[15].cgroup == "background"
    # asleep: what it starts would inherit the cap; in a container: the engine's cgroup
    assert member[20].cgroup is None and "kept out of its tier's limited group" in member[20].reason
    assert member[21].cgroup is None
    assert all(member[pid].cgroup is None for pid in (10, 11, 12, 13, 16, 17))
    decisions = [d for d in to_decisions(p) if d.target == "cgroup"]
    assert {(d.tier, d.cgroup, d.cpu_weight) for d in decisions} == {
        ("low", "low", 50), ("background", "background", 10)}
    # a plan rebuilt from its decisions keeps each member's group, not the group rows
    back = plan_from_decisions(t, to_decisions(p), seq=p.seq)
    assert {a.pid: a.cgroup for a in back.assignments if a.target == "process"}[14] == "low"


def test_a_mode_tightens_a_tier_and_memory_limits_are_opt_in(topo) -> None:
    t = topo["intel-hybrid-16cpu"]
    policy = Policy.from_mapping({"tiers": {"normal": {"limits": {
        "memory_high": "1GiB", "memory_max": "2GiB", "swap": False}}}})
    p = plan(t, mixed(), policy=policy, mode="emergency")
    groups = {g.tier: g for g in p.groups}
    assert groups["low"].cpu_quota_us == 8 * 100_000           # 50% in emergency, unlimited otherwise
    assert groups["low"].cpu_weight == 50                       # the tier's own, kept
    assert (groups["normal"].memory_high, groups["normal"].memory_max,
            groups["normal"].swap) == (1 << 30, 2 << 30, False)
    assert groups["normal"].cpu_quota_us is None
    assert "memory max 2.0GiB, no swap" in groups["normal"].reason
    assert not plan(t, mixed()).groups[0].memory_max


@pytest.mark.parametrize("limits, message", [
    ({"cpu_quota": "150%"}, "between 0% and 100%"),
    ({"cpu_quota": 0}, "more than 0 cores"),
    ({"cpu_weight": 0}, "greater than or equal to 1"),
    ({"memory_max": "lots"}, "memory_max"),
    ({"cpu_shares": 5}, "cpu_shares"),
])
def test_bad_tier_limits_name_the_key(limits: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as err:
        Policy.from_mapping({"tiers": {"low": {"limits": limits}}})
    assert "allocator.tiers.low.limits" in str(err.value)
