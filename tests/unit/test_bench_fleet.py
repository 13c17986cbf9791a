"""The shared synthetic fleet of the benchmarks: the same seed gives the same sweeps, each
host has its own machine, and churn replaces exactly what it says."""
from __future__ import annotations

from bench.synthetic import Fleet, fleet_hosts, fleet_machines


def test_same_seed_same_sweeps_and_another_seed_differs() -> None:
    a, b, c = Fleet(50, seed=3, churn=2), Fleet(50, seed=3, churn=2), Fleet(50, seed=4, churn=2)
    for _ in range(5):
        sa, sb, sc = a.sweep(), b.sweep(), c.sweep()
        assert sa == sb
    assert [s.cpu_share for s in sa] != [s.cpu_share for s in sc]


def test_no_churn_keeps_every_identity_and_counters_only_grow() -> None:
    fleet = Fleet(30, seed=1)
    first = fleet.sweep()
    later = fleet.sweep()
    assert [(s.pid, s.start_time) for s in first] == [(s.pid, s.start_time) for s in later]
    assert all(b.cpu_time_s >= a.cpu_time_s and b.vol_ctx >= a.vol_ctx
               for a, b in zip(first, later))
    assert set(fleet.born.values()) == {0}


def test_churn_replaces_that_many_per_sweep_and_says_when_each_was_born() -> None:
    fleet = Fleet(40, seed=2, churn=3, cpus=8)
    seen = [{(s.pid, s.start_time) for s in fleet.sweep()} for _ in range(6)]
    assert all(len(ids) == 40 for ids in seen)
    for k in range(1, 6):
        new = seen[k] - seen[k - 1]
        assert len(new) == 3
        assert all(fleet.born[ident] == k for ident in new)
        gone = seen[k - 1] - seen[k]                     # as many exited
        assert len(gone) == 3 and all(fleet.gone[ident] == k - 1 for ident in gone)
    assert {s.affinity for s in fleet.sweep()} == {"0-7"}
    new_sample = next(s for s in fleet.sweep() if fleet.born[(s.pid, s.start_time)] == 7)
    assert new_sample.cpu_time_s < 1.0                   # counters start again from zero


def test_hosts_have_their_own_names_machines_and_processes() -> None:
    hosts = fleet_hosts(2, procs=20, seed=5)
    assert [h.name for h in hosts] == ["fleet-000", "fleet-001"]
    machines = fleet_machines()
    assert len(machines) >= 2
    assert len(hosts[0].topology.cpus) != len(hosts[1].topology.cpus)
    for host in hosts:
        n = len(host.topology.cpus)
        sample = host.host_sample(with_topology=True)
        assert len(sample.cpu_percent) == n and sample.topology is not None
        assert len(sample.topology["cpus"]) == n
        assert host.host_sample(with_topology=False).topology is None
        assert {s.last_cpu for s in host.fleet.sweep()} <= set(range(n))
    assert hosts[0].fleet.sweep() != hosts[1].fleet.sweep()
