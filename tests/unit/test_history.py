"""The DuckDB history store on real files: round trips, offsets, atomicity, isolation."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from pipeline.events import (Alert, Classification, Classifications, Command, ContainerSample,
                             ContainerSamples, DeadLetter, Decision, Decisions, Enforcement,
                             Enforcements, HostSample, Label, ProcessSample, ProcessSamples,
                             envelope)
from pipeline.settings import StorageSettings
from storage.history import HistoryStore, StoreError
from storage.schema import SCHEMA_VERSION, SPECS, TABLE_OF_TYPE

T = 1_764_230_400.5  # 2025-11-27 08:00:00.5 UTC
AT = datetime(2025, 11, 27, 8, 0, 0, 500000)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):
    s = HistoryStore(tmp_path / "nested" / "history.duckdb", StorageSettings())
    yield s
    s.close()


def one(store: HistoryStore, sql: str, *params):
    return store.connection.execute(sql, list(params)).fetchall()


def every_event_type() -> list:
    return [
        envelope(HostSample(cpu_percent=[12.5, 80.0], cpu_freq_khz=[1.0e6, None],
                            load=(2.0, 1.5, 1.0), mem_total_bytes=16 << 30,
                            mem_available_bytes=3 << 30, swap_used_bytes=7,
                            temperatures_c={"pkg": 61.5}, boot_time=1.7e9, interval_s=1.0),
                 "h1", 1, ts=T, event_id="host-1"),
        envelope(ProcessSamples(batch="sweep-1", interval_s=1.0, samples=[
            ProcessSample(pid=4242, start_time=987654321012, ppid=1, name="postgres",
                          state="R", cmdline="postgres -D /data", uid=70, cgroup="/db",
                          container_id="c0ffee", cpu_share=1.25, cpu_time_s=33.5,
                          rss_bytes=5 << 30, vm_bytes=9 << 30, threads=12, vol_ctx=100,
                          invol_ctx=7, run_time_ns=10**12, run_delay_ns=3 * 10**10,
                          timeslices=99, io_read_bytes=1, io_write_bytes=2, io_rchar=3,
                          io_wchar=4, last_cpu=1, nice=-5, policy=2, rt_priority=10,
                          affinity="0-1", kernel_thread=False)]),
                 "h1", 2, ts=T, event_id="proc-1"),
        envelope(ContainerSamples(batch="c-1", samples=[ContainerSample(
            id="c0ffee" * 8, name="db", image="postgres:16", status="running",
            labels={"tier": "gold"}, pids=[4242, 4243], cpuset="0-1", cpu_shares=2048,
            cpu_share=1.5, memory_bytes=6 << 30)]), "h1", 3, ts=T, event_id="cont-1"),
        envelope(Label(cls="database", pid=4242, start_time=987654321012, author="ops"),
                 "h1", 4, ts=T, event_id="label-1"),
        envelope(Classifications(batch="k-1", items=[Classification(
            pid=4242, start_time=987654321012, cls="database", tier="critical",
            confidence=0.95, source="label", reason="explicit")]), "h1", 5, ts=T,
            event_id="cls-1"),
        envelope(Decisions(batch="d-1", plan_seq=17, mode="high_performance", items=[Decision(
            target="process", tier="critical", cpus="0-1", pid=4242, start_time=987654321012,
            nice=-5, ioclass="be", iolevel=0, policy="rr", cpu_shares=None,
            reason="critical tier")]), "h1", 6, ts=T, event_id="dec-1"),
        envelope(Enforcements(batch="e-1", plan_seq=17, items=[Enforcement(
            target="process", outcome="applied", pid=4242, start_time=987654321012,
            before={"nice": 0, "cpus": "0-3"}, after={"nice": -5, "cpus": "0-1"})]),
            "h1", 7, ts=T, event_id="enf-1"),
        envelope(Alert(id="a-1", rule="run_queue", message="run queue long", opened_at=T - 30,
                       severity="warning", state="resolved", resolved_at=T,
                       details={"cpu": 1, "delay_ms": 12.5}), "h1", 8, ts=T, event_id="al-1"),
        envelope(Command(name="set_mode", args={"mode": "power_save"}), "h1", 9, ts=T,
                 event_id="cmd-1"),
        envelope(DeadLetter(topic="corelane.samples.host", partition=3, offset=123456789012,
                            reason="bad json", key="h9", reader="classifier", size=5,
                            payload_b64="e29vcHM="), "h1", 10, ts=T,
                 event_id="dl-1"),
    ]


def records(envs, topic="corelane.test", partition=0, first=0):
    return [(topic, partition, first + i, e) for i, e in enumerate(envs)]


def test_every_event_type_round_trips_typed(store: HistoryStore) -> None:
    assert store.write(records(every_event_type())) == 10
    host = one(store, "SELECT event_id, host, ts, seq, cpu_percent, cpu_freq_khz, load1, "
                      "load15, mem_available_bytes, temperatures_c['pkg'] FROM host_samples")
    assert host == [("host-1", "h1", AT, 1, [12.5, 80.0], [1.0e6, None], 2.0, 1.0, 3 << 30,
                     61.5)]
    proc = one(store, "SELECT pid, start_time, name, cpu_share, run_delay_ns, rss_bytes, "
                      "nice, policy, affinity, kernel_thread, container_id, batch, chunk "
                      "FROM process_samples")
    assert proc == [(4242, 987654321012, "postgres", 1.25, 3 * 10**10, 5 << 30, -5, 2,
                     "0-1", False, "c0ffee", "sweep-1", 0)]
    cont = one(store, "SELECT container_id, labels['tier'], pids, cpu_shares, memory_bytes "
                      "FROM container_samples")
    assert cont == [("c0ffee" * 8, "gold", [4242, 4243], 2048, 6 << 30)]
    assert one(store, "SELECT class, pid, start_time, author FROM labels") == [
        ("database", 4242, 987654321012, "ops")]
    assert one(store, "SELECT class, tier, confidence, source FROM classifications") == [
        ("database", "critical", 0.95, "label")]
    assert one(store, "SELECT plan_seq, mode, cpus, nice, ioclass, policy, cpu_shares "
                      "FROM decisions") == [(17, "high_performance", "0-1", -5, "be", "rr",
                                             None)]
    assert one(store, "SELECT outcome, \"before\"->>'cpus', (\"after\"->>'nice')::INT "
                      "FROM enforcements") == [("applied", "0-3", -5)]
    assert one(store, "SELECT alert_id, rule, state, severity, (details->>'delay_ms')::DOUBLE, "
                      "epoch(resolved_at - opened_at) FROM alerts") == [
        ("a-1", "run_queue", "resolved", "warning", 12.5, 30.0)]
    assert one(store, "SELECT name, args->>'mode' FROM commands") == [("set_mode",
                                                                       "power_save")]
    assert one(store, 'SELECT topic, "partition", "offset", key, reader, '
                      'from_base64(payload_b64)::VARCHAR FROM deadletter') == [
        ("corelane.samples.host", 3, 123456789012, "h9", "classifier", "{oops")]


@pytest.mark.parametrize("event_type", sorted(SPECS))
def test_arrow_schema_matches_table_columns(store: HistoryStore, event_type: str) -> None:
    table = TABLE_OF_TYPE[event_type]
    columns = {name for (name,) in one(
        store, "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", table)}
    assert set(SPECS[event_type].arrow_schema.names) == columns


def test_empty_chunk_gives_one_row_and_event_ids_match_messages(store: HistoryStore) -> None:
    parts = [ProcessSamples(batch="b", chunk=0, chunks=3, samples=[
                 ProcessSample(pid=p, start_time=1, ppid=1, name="x") for p in range(5)]),
             ProcessSamples(batch="b", chunk=1, chunks=3),
             ProcessSamples(batch="b", chunk=2, chunks=3, samples=[
                 ProcessSample(pid=9, start_time=1, ppid=1, name="y")])]
    envs = [envelope(p, "h", i, ts=T) for i, p in enumerate(parts)]
    assert store.write(records(envs)) == 7
    assert one(store, "SELECT count(DISTINCT event_id) FROM process_samples") == [(3,)]
    assert one(store, "SELECT count(*), any_value(batch) FROM process_samples "
                      "WHERE pid IS NULL") == [(1, "b")]
    assert one(store, "SELECT count(*) FROM (SELECT event_id, pid, start_time "
                      "FROM process_samples GROUP BY ALL HAVING count(*) > 1)") == [(0,)]


def test_offsets_upsert_to_max_plus_one_per_partition(store: HistoryStore) -> None:
    assert store.offsets() == {}
    envs = [envelope(Alert(id="k-1", rule="k", opened_at=1.0, message=str(i)), "h", i, ts=T) for i in range(6)]
    store.write([("corelane.alerts", 0, 5, envs[0]), ("corelane.alerts", 0, 9, envs[1]),
                 ("corelane.alerts", 1, 2, envs[2])])
    assert store.offsets() == {("corelane.alerts", 0): 10, ("corelane.alerts", 1): 3}
    store.write([("corelane.alerts", 0, 10, envs[3]), ("corelane.commands", 0, 0, envs[4])])
    assert store.offsets() == {("corelane.alerts", 0): 11, ("corelane.alerts", 1): 3,
                               ("corelane.commands", 0): 1}
    assert one(store, "SELECT count(*) FROM alerts") == [(5,)]


def test_failed_insert_keeps_neither_rows_nor_offsets(store: HistoryStore) -> None:
    store.write(records([envelope(Alert(id="k-1", rule="k", opened_at=1.0, message="before"), "h", 0, ts=T)]))
    good = every_event_type()
    # A host of None passes the Arrow conversion but breaks the NOT NULL constraint in
    # DuckDB, after other tables of the same batch have been inserted.
    bad = envelope(Command(name="x"), "h", 99, ts=T)
    bad.host = None
    with pytest.raises(duckdb.ConstraintException):
        store.write(records(good + [bad], first=1))
    assert store.offsets() == {("corelane.test", 0): 1}
    for table in TABLE_OF_TYPE.values():
        expected = 1 if table == "alerts" else 0
        assert one(store, f"SELECT count(*) FROM {table}") == [(expected,)], table
    # the store still works afterwards
    store.write(records(good, first=1))
    assert store.offsets() == {("corelane.test", 0): 11}


def test_failure_injected_after_first_table_rolls_back(store: HistoryStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = store._insert
    calls = []

    def flaky(table, data):
        calls.append(table)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        real(table, data)

    monkeypatch.setattr(store, "_insert", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write(records(every_event_type()))
    assert len(calls) == 3
    assert store.offsets() == {}
    assert sum(one(store, f"SELECT count(*) FROM {t}")[0][0]
               for t in TABLE_OF_TYPE.values()) == 0


def test_reopen_keeps_rows_offsets_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    with HistoryStore(path, StorageSettings()) as s:
        s.write(records(every_event_type(), partition=4, first=100))
    with HistoryStore(path, StorageSettings()) as s:
        assert s.offsets() == {("corelane.test", 4): 110}
        assert one(s, "SELECT count(*) FROM process_samples") == [(1,)]
        assert one(s, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        assert one(s, "SELECT count(*) FROM schema_version") == [(1,)]  # not re-created
    ro = HistoryStore.open_readonly(path)
    try:
        assert one(ro, "SELECT tier FROM latest_classification") == [("critical",)]
        with pytest.raises(StoreError, match="read-only"):
            ro.write(records(every_event_type()))
        with pytest.raises(duckdb.PermissionException):
            ro.connection.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()
    finally:
        ro.close()


@pytest.mark.parametrize("query", ["SELECT * FROM read_csv('/etc/passwd')",
                                   "COPY (SELECT 1) TO '/tmp/corelane-escape.csv'",
                                   "SET enable_external_access = true"])
def test_queries_cannot_reach_files(store: HistoryStore, query: str) -> None:
    for con in (store.connection, store.cursor()):
        with pytest.raises((duckdb.PermissionException, duckdb.InvalidInputException)):
            con.execute(query).fetchall()
    assert not Path("/tmp/corelane-escape.csv").exists()


def test_file_held_by_another_process_gives_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(path)!r})
            print("holding", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for opener in (lambda: HistoryStore(path, StorageSettings()),
                       lambda: HistoryStore.open_readonly(path)):
            with pytest.raises(StoreError) as err:
                opener()
            text = str(err.value)
            assert str(path) in text and "another process" in text and "\n" not in text
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_not_a_duckdb_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError) as err:
        HistoryStore(path, StorageSettings())
    assert str(path) in str(err.value) and "not a DuckDB database" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_read_only_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        HistoryStore.open_readonly(tmp_path / "nothing.duckdb")
    path = tmp_path / "future.duckdb"
    HistoryStore(path, StorageSettings()).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, TIMESTAMP '2030-01-01')")
    con.close()
    with pytest.raises(StoreError, match="newer than this"):
        HistoryStore(path, StorageSettings())


def test_reader_cursor_sees_committed_rows(store: HistoryStore) -> None:
    reader = store.cursor()
    store.write(records([envelope(Alert(id="k-1", rule="k", opened_at=1.0, message="m"), "h", 0, ts=T)]))
    assert reader.execute("SELECT message FROM alerts").fetchall() == [("m",)]
    reader.close()
