"""Views and macros give the expected numbers on hand-made history."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from pipeline.events import (Classification, Classifications, Decision, Decisions,
                             Enforcement, Enforcements, HostSample, ProcessSample,
                             ProcessSamples, ShadowDecisions, envelope)
from pipeline.settings import StorageSettings
from storage.history import HistoryStore

T0 = 1_764_230_400.0  # 2025-11-27 08:00:00 UTC
M0 = datetime(2025, 11, 27, 8, 0)
M1 = M0 + timedelta(minutes=1)
WINDOW = "TIMESTAMP '2025-11-27 08:00:00', TIMESTAMP '2025-11-27 08:02:00'"

# pid -> (cpu_share, run delay growth in ms per second)
PROCS = {1: (1.0, 2.0), 2: (0.5, 10.0), 3: (0.25, 0.0)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    s = HistoryStore(tmp_path_factory.mktemp("views") / "v.duckdb", StorageSettings())
    envs = []
    for k in range(120):  # one sweep per second for two minutes
        samples = [ProcessSample(pid=pid, start_time=pid * 10, ppid=1, name=f"p{pid}",
                                 cmdline=f"/bin/p{pid}", cpu_share=share,
                                 cpu_time_s=share * k, run_delay_ns=int(delay * 1e6) * k)
                   for pid, (share, delay) in PROCS.items()]
        envs.append(envelope(ProcessSamples(batch=f"s{k}", samples=samples), "h", k,
                             ts=T0 + k))
    envs.append(envelope(HostSample(cpu_percent=[10.0, 90.0], cpu_freq_khz=[],
                                    load=(1, 1, 1), mem_total_bytes=1,
                                    mem_available_bytes=1), "h", 0, ts=T0))
    envs.append(envelope(HostSample(cpu_percent=[30.0, 50.0], cpu_freq_khz=[],
                                    load=(1, 1, 1), mem_total_bytes=1,
                                    mem_available_bytes=1,
                                    pressure={"memory_some": 12.5, "memory_full": 3.0},
                                    tier_memory_bytes={"low": 1 << 20, "background": 4096},
                                    tier_pressure={"background.memory_some": 8.0,
                                                   "low.cpu_some": 0.5}),
                         "h", 1, ts=T0 + 1))
    # pid 1 is first classified batch, later critical: the latest counts; pid 3 never
    envs.append(envelope(Classifications(batch="c1", items=[
        Classification(pid=1, start_time=10, cls="x", tier="batch", confidence=1,
                       source="rule"),
        Classification(pid=2, start_time=20, cls="y", tier="batch", confidence=1,
                       source="rule")]), "h", 0, ts=T0))
    envs.append(envelope(Classifications(batch="c2", items=[
        Classification(pid=1, start_time=10, cls="db", tier="critical", confidence=1,
                       source="label")]), "h", 1, ts=T0 + 5))
    envs.append(envelope(Decisions(batch="d", plan_seq=3, items=[
        Decision(target="process", tier="critical", cpus="0", pid=1, start_time=10,
                 reason="critical first"),
        Decision(target="container", tier="batch", cpus="1", container_id="box",
                 reason="batch pool")]), "h", 0, ts=T0 + 6))
    # A shadow policy puts pid 1 on another core and the container where live put it.
    envs.append(envelope(ShadowDecisions(batch="sd", plan_seq=1, policy="wide", items=[
        Decision(target="process", tier="critical", cpus="1", pid=1, start_time=10),
        Decision(target="container", tier="batch", cpus="1", container_id="box"),
        Decision(target="process", tier="normal", cpus="1", pid=3, start_time=30)]),
        "h", 0, ts=T0 + 8))
    envs.append(envelope(Enforcements(batch="e", plan_seq=3, plan_id="d", items=[
        Enforcement(target="process", outcome="skipped", pid=1, start_time=10,
                    reason="changed by someone else", before={"cpus": "0-1"})]),
        "h", 0, ts=T0 + 7))
    s.write([("t", 0, i, e) for i, e in enumerate(envs)])
    yield s
    s.close()


def q(store: HistoryStore, sql: str):
    return store.connection.execute(sql).fetchall()


def test_latest_classification(store: HistoryStore) -> None:
    assert q(store, "SELECT pid, class, tier FROM latest_classification ORDER BY pid") == [
        (1, "db", "critical"), (2, "y", "batch")]


def test_tier_usage_per_minute(store: HistoryStore) -> None:
    got = {(m, tier): (n, cores, delay) for m, _, tier, n, cores, delay in q(
        store, f"SELECT * FROM tier_usage({WINDOW}) ORDER BY ALL")}
    assert set(got) == {(m, t) for m in (M0, M1) for t in ("critical", "batch",
                                                           "unclassified")}
    assert got[(M1, "critical")] == (1, pytest.approx(1.0), pytest.approx(2.0))
    assert got[(M1, "batch")] == (1, pytest.approx(0.5), pytest.approx(10.0))
    assert got[(M1, "unclassified")] == (1, pytest.approx(0.25), pytest.approx(0.0))
    # the first sweep has no earlier sample: 59 deltas over the 59 s they span
    assert got[(M0, "batch")][2] == pytest.approx(10.0)
    assert got[(M0, "critical")][1] == pytest.approx(1.0)
    # a window starting at 08:01 still finds 08:00's last sample for the first delta
    late = q(store, "SELECT run_delay_ms_per_s FROM tier_usage(TIMESTAMP '2025-11-27 08:01', "
                    "TIMESTAMP '2025-11-27 08:02') WHERE tier = 'batch'")
    assert late == [(pytest.approx(10.0),)]
    assert q(store, "SELECT count(*) FROM tier_usage_1m") == [(6,)]


def test_process_rates(store: HistoryStore) -> None:
    got = q(store, "SELECT ts, run_delay_ms_per_s FROM process_rates WHERE pid = 2 "
                   "ORDER BY ts LIMIT 2")
    assert got == [(M0, None), (M0 + timedelta(seconds=1), pytest.approx(10.0))]


def test_core_utilization(store: HistoryStore) -> None:
    assert q(store, "SELECT cpu, percent FROM core_utilization ORDER BY ts, cpu") == [
        (0, 10.0), (1, 90.0), (0, 30.0), (1, 50.0)]
    assert q(store, "SELECT minute, cpu, percent_avg, percent_max FROM core_utilization_1m "
                    "ORDER BY cpu") == [(M0, 0, 20.0, 30.0), (M0, 1, 70.0, 90.0)]


def test_host_pressure_and_tier_memory(store: HistoryStore) -> None:
    assert q(store, "SELECT memory_some, memory_full, cpu_some FROM host_pressure") == [
        (12.5, 3.0, None)]                     # the first sample had no PSI: no row
    assert q(store, "SELECT tier, bytes FROM tier_memory ORDER BY tier") == [
        ("background", 4096), ("low", 1 << 20)]
    assert q(store, "SELECT tier, figure, percent FROM tier_pressure ORDER BY tier") == [
        ("background", "memory_some", 8.0), ("low", "cpu_some", 0.5)]


def test_top_processes(store: HistoryStore) -> None:
    by_cpu = q(store, f"SELECT pid, name, cpu_s, tier FROM top_processes_by_cpu({WINDOW}, 2)")
    assert by_cpu == [(1, "p1", pytest.approx(119.0), "critical"),
                      (2, "p2", pytest.approx(59.5), "batch")]
    by_delay = q(store, f"SELECT pid, run_delay_ms, samples, tier "
                        f"FROM top_processes_by_delay({WINDOW}, 3)")
    assert by_delay == [(2, pytest.approx(1190.0), 120, "batch"),
                        (1, pytest.approx(238.0), 120, "critical"),
                        (3, pytest.approx(0.0), 120, None)]
    # the window bounds are half-open and applied before the deltas
    short = q(store, "SELECT pid, cpu_s FROM top_processes_by_cpu("
                     "'2025-11-27 08:00:10', '2025-11-27 08:00:20', 1)")
    assert short == [(1, pytest.approx(9.0))]


def test_decision_outcomes(store: HistoryStore) -> None:
    got = q(store, "SELECT target, pid, container_id, tier, decision_reason, outcome, "
                   "outcome_reason, \"before\" FROM decision_outcomes ORDER BY target")
    assert got[0][:7] == ("container", None, "box", "batch", "batch pool", None, None)
    assert got[1][:7] == ("process", 1, None, "critical", "critical first", "skipped",
                          "changed by someone else")
    assert json.loads(got[1][7]) == {"cpus": "0-1"}
    assert len(got) == 2


def test_shadow_vs_live_counts_what_the_shadow_placed_otherwise(store: HistoryStore) -> None:
    rows = store.connection.execute(
        f"SELECT policy, minute, tier, targets, live_targets, other_tier, differ "
        f"FROM shadow_vs_live({WINDOW})").fetchall()
    assert rows == [("wide", M0, "batch", 1, 1, 0, 0),
                    ("wide", M0, "critical", 1, 1, 0, 1),
                    ("wide", M0, "normal", 1, 0, 0, 0)]
