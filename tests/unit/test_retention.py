"""Rollups and deletion on a real DuckDB file with hand-made samples."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline.events import (ContainerSample, ContainerSamples, HostSample, ProcessSample,
                             ProcessSamples, envelope)
from pipeline.settings import StorageSettings
from storage.history import HistoryStore
from storage.retention import Limits, retention_step, watermark

START = datetime(2025, 11, 27, 8, 0, 0)
T0 = 1_764_230_400.0  # START as epoch seconds (UTC)
LATER = datetime(2025, 11, 27, 9, 0, 0)


def fill(store: HistoryStore) -> None:
    """Every 10 s from 08:00:00 to 08:03:50: process A all along, B from 08:01:30, host
    samples, one container. A's run delay grows 1,000 ns per sample; B's 500 ns from
    50,000; A's cpu_time_s 5 s per sample."""
    envs = []
    for k in range(24):
        ts = T0 + 10 * k
        samples = [ProcessSample(pid=1, start_time=100, ppid=0, name="a", cpu_share=0.5,
                                 cpu_time_s=5.0 * k, run_delay_ns=1000 * k, rss_bytes=100 + k,
                                 nice=k % 3, affinity=f"0-{k}")]
        if k >= 9:
            j = k - 9
            samples.append(ProcessSample(pid=2, start_time=200, ppid=1, name="b",
                                         cpu_share=0.1 * j, run_delay_ns=50_000 + 500 * j))
        envs.append(envelope(ProcessSamples(batch=f"s{k}", samples=samples), "h", k, ts=ts))
        envs.append(envelope(HostSample(cpu_percent=[10.0 * (k % 6), 50.0 + k],
                                        cpu_freq_khz=[], load=(float(k), 1.0, 0.5),
                                        mem_total_bytes=1000, mem_available_bytes=500 - k),
                             "h", k, ts=ts))
        envs.append(envelope(ContainerSamples(batch=f"c{k}", samples=[ContainerSample(
            id="box", name="box", cpu_share=0.2 * (k % 2), memory_bytes=1000 + k,
            pids=list(range(k % 4)))]), "h", k, ts=ts))
    store.write([("t", 0, i, e) for i, e in enumerate(envs)])


@pytest.fixture
def store(tmp_path: Path):
    s = HistoryStore(tmp_path / "r.duckdb", StorageSettings())
    fill(s)
    yield s
    s.close()


def q(store: HistoryStore, sql: str):
    return store.connection.execute(sql).fetchall()


def drain(store: HistoryStore, now, limits: Limits = Limits()) -> int:
    for calls in range(1, 200):
        if not retention_step(store, now, limits):
            return calls
    raise AssertionError("retention never ran out of work")


def m(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def test_process_rollup_values(store: HistoryStore) -> None:
    drain(store, LATER)
    got = q(store, "SELECT pid, minute, samples, cpu_share_avg, cpu_s, run_delay_ns, "
                   "rss_bytes_max, nice, affinity, name FROM process_samples_1m "
                   "ORDER BY pid, minute")
    # 08:03 ends at 08:04:00 but the newest sample is 08:03:50: with 30 s of lateness
    # allowed it is not complete yet.
    assert got == [
        (1, m(0), 6, 0.5, 25.0, 5000, 105, 2, "0-5", "a"),       # first sight: max - min
        (1, m(1), 6, 0.5, 30.0, 6000, 111, 2, "0-11", "a"),      # minus 08:00's last
        (1, m(2), 6, 0.5, 30.0, 6000, 117, 2, "0-17", "a"),
        (2, m(1), 3, pytest.approx(0.1), 0.0, 1000, 0, 0, "", "b"),
        (2, m(2), 6, pytest.approx(0.55), 0.0, 3000, 0, 0, "", "b"),
    ]
    assert watermark(store.connection, "process_samples") == m(3)


def test_host_and_container_rollups(store: HistoryStore) -> None:
    drain(store, LATER)
    host = q(store, "SELECT minute, samples, cpu_percent_avg, cpu_percent_max, load1_avg, "
                    "load1_max, mem_available_bytes_min FROM host_samples_1m ORDER BY minute")
    assert host[0] == (m(0), 6, [25.0, 52.5], [50.0, 55.0], 2.5, 5.0, 495)
    assert [r[0] for r in host] == [m(0), m(1), m(2)]
    box = q(store, "SELECT minute, samples, cpu_share_avg, cpu_share_max, memory_bytes_max, "
                   "pids_max FROM container_samples_1m ORDER BY minute")
    assert box[0] == (m(0), 6, pytest.approx(0.1), 0.2, 1005, 3)
    assert len(box) == 3


def test_small_steps_give_the_same_rollup_and_stay_bounded(store: HistoryStore,
                                                           tmp_path: Path) -> None:
    # one minute per call: the second minute's deltas come from the raw lookback
    one_minute = Limits(step_minutes=1)
    seen = []
    while retention_step(store, LATER, one_minute):
        seen.append(q(store, "SELECT count(DISTINCT minute) FROM process_samples_1m")[0][0])
        assert len(seen) < 50
    assert seen[:3] == [1, 2, 3]  # each call rolled up at most one more minute
    small = q(store, "SELECT * FROM process_samples_1m ORDER BY pid, minute")
    other = HistoryStore(tmp_path / "big.duckdb", StorageSettings())
    fill(other)
    drain(other, LATER)
    assert small == other.connection.execute(
        "SELECT * FROM process_samples_1m ORDER BY pid, minute").fetchall()
    other.close()


def test_rerun_is_idempotent_and_late_minutes_wait(store: HistoryStore) -> None:
    drain(store, LATER)
    before = q(store, "SELECT count(*), sum(run_delay_ns) FROM process_samples_1m")
    assert retention_step(store, LATER) is False
    assert q(store, "SELECT count(*), sum(run_delay_ns) FROM process_samples_1m") == before
    # the minute has not ended by `now`: nothing is due even though data is there
    fresh = HistoryStore(Path(store.path).with_name("fresh.duckdb"), StorageSettings())
    fill(fresh)
    assert retention_step(fresh, START + timedelta(seconds=50)) is False
    assert fresh.connection.execute("SELECT count(*) FROM process_samples_1m").fetchall() \
        == [(0,)]
    # more samples arrive: 08:03 becomes complete, and only it is added
    fresh.close()
    env = envelope(ProcessSamples(batch="late", samples=[ProcessSample(
        pid=1, start_time=100, ppid=0, name="a", run_delay_ns=30_000)]), "h", 99,
        ts=T0 + 300)
    store.write([("t", 0, 1000, env)])
    drain(store, LATER)
    assert q(store, "SELECT minute, run_delay_ns FROM process_samples_1m "
                    "WHERE pid = 1 AND minute = TIMESTAMP '2025-11-27 08:03:00'") == [
        (m(3), 6000)]
    assert q(store, "SELECT count(*) FROM process_samples_1m WHERE minute < "
                    "TIMESTAMP '2025-11-27 08:03:00'") == [(before[0][0],)]


def test_purge_deletes_only_expired_rolled_up_raw_rows(tmp_path: Path) -> None:
    settings = StorageSettings(raw_retention_h=0.5, rollup_retention_d=30)
    store = HistoryStore(tmp_path / "p.duckdb", settings)
    fill(store)
    calls = drain(store, datetime(2025, 11, 27, 10, 0), Limits(purge_minutes=1))
    # everything is past 30 min of retention, but 08:03 is not rolled up: it stays
    assert q(store, "SELECT min(ts), count(*) FROM process_samples") == [(m(3), 12)]  # A and B
    assert q(store, "SELECT min(ts) FROM host_samples") == [(m(3),)]
    assert q(store, "SELECT count(*) FROM process_samples_1m") == [(5,)]
    assert calls > 3 * 3  # one minute of rows per delete call, per table
    store.close()


def test_purge_waits_for_the_rollup_and_respects_raw_retention(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "w.duckdb", StorageSettings(raw_retention_h=1))
    fill(store)
    drain(store, datetime(2025, 11, 27, 9, 1, 30))  # raw cutoff 08:01:30
    assert q(store, "SELECT min(ts) FROM process_samples") == [(m(1) + timedelta(seconds=30),)]
    store.close()


def test_rollup_retention(tmp_path: Path) -> None:
    now = datetime(2025, 11, 27, 10, 0)
    keep = now - m(1) - timedelta(seconds=30)  # cutoff 08:01:30
    store = HistoryStore(tmp_path / "o.duckdb",
                         StorageSettings(rollup_retention_d=keep.total_seconds() / 86400))
    fill(store)
    drain(store, now)
    assert q(store, "SELECT DISTINCT minute FROM process_samples_1m ORDER BY 1") == [
        (m(2),)]
    assert q(store, "SELECT DISTINCT minute FROM host_samples_1m") == [(m(2),)]
    store.close()
