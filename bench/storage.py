"""History store benchmark: ingest rate, and query times over one hour of 1,000 processes.

    .venv/bin/python bench/storage.py [--rows 500000] [--write-rows N] [--procs 1000]
                                      [--minutes 60] [--threads 1] [--repeats 5] [--dir /tmp]

(a) ingest: 1,000-process sweeps as real ``ProcessSamples`` envelopes (chunks of 250, as
    the collector sends them), written with ``HistoryStore.write`` in batches of the
    recorder's ``flush_rows`` (20,000 by default) into a fresh file database. Timed: flattening,
    insert, offsets, commit. Target: >= 200,000 process rows/s.
(b) queries: ``--minutes`` of ``--procs`` processes at 1 Hz plus a classification cycle
    every 10 s, then ``top_processes_by_cpu`` over the whole span and ``tier_usage``
    (per minute, per tier) over the whole span. Target: each <= 1 s. Then retention
    (rollups) over the same file, call by call.

Envelopes are built before the clock starts; the figures are the store's cost only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.events import (Classifications, Envelope,  # noqa: E402
                             ProcessSamples, batched, envelope)
from pipeline.settings import StorageSettings  # noqa: E402
from storage.history import HistoryStore  # noqa: E402
from storage.retention import retention_step  # noqa: E402
from bench.synthetic import CHUNK_ROWS, Fleet  # noqa: E402

T0 = 1_764_230_400.0  # 2025-11-27 08:00:00 UTC
def sweep_envelopes(fleet: Fleet, ts: float, seq: int, host: str = "bench") -> list[Envelope]:
    parts = batched(ProcessSamples, fleet.sweep(), CHUNK_ROWS, "samples", interval_s=1.0)
    return [envelope(p, host, seq + k, ts=ts) for k, p in enumerate(parts)]


def records_for(envs: list[Envelope], first_offset: int) -> list[tuple[str, int, int, Envelope]]:
    return [("corelane.samples.process", 0, first_offset + k, e) for k, e in enumerate(envs)]


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} s  min {min(values):.3f}  "
            f"max {max(values):.3f}  (n={len(values)})")


def bench_ingest(folder: Path, rows: int, procs: int, threads: int,
                 write_rows: int = StorageSettings().flush_rows) -> float:
    fleet = Fleet(procs)
    sweeps = max(1, rows // procs)
    batches: list[list[tuple[str, int, int, Envelope]]] = []
    pending: list[Envelope] = []
    offset = 0
    for s in range(sweeps):
        pending += sweep_envelopes(fleet, T0 + s, s * 10)
        if len(pending) * CHUNK_ROWS >= write_rows or s == sweeps - 1:
            batches.append(records_for(pending, offset))
            offset += len(pending)
            pending = []
    total = sweeps * procs
    store = HistoryStore(folder / "ingest.duckdb", StorageSettings())
    store.connection.execute(f"SET threads = {threads}")
    started, cpu_started = time.perf_counter(), time.process_time()
    per_batch = []
    for batch in batches:
        t = time.perf_counter()
        store.write(batch)
        per_batch.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started  # every thread of this process
    count = store.connection.execute("SELECT count(*) FROM process_samples").fetchall()[0][0]
    store.close()
    assert count == total, (count, total)
    rate, cpu_rate = total / elapsed, total / cpu
    print(f"(a) ingest: {total:,} process rows in {len(batches)} writes of "
          f"~{total // len(batches):,} rows, "
          f"threads={threads}")
    print(f"    wall {elapsed:.2f} s = {rate:,.0f} rows/s; CPU {cpu:.2f} s = "
          f"{cpu_rate:,.0f} rows per CPU-second "
          f"[target >= 200,000: wall {'met' if rate >= 200_000 else 'NOT met'}, "
          f"CPU {'met' if cpu_rate >= 200_000 else 'NOT met'}]")
    print(f"    per write: median {statistics.median(per_batch) * 1000:.1f} ms  "
          f"min {min(per_batch) * 1000:.1f}  max {max(per_batch) * 1000:.1f}")
    return rate


def build_hour(path: Path, procs: int, minutes: int) -> HistoryStore:
    fleet = Fleet(procs, seed=2)
    store = HistoryStore(path, StorageSettings())
    offset = 0
    started = time.perf_counter()
    pending: list[Envelope] = []
    for s in range(minutes * 60):
        pending += sweep_envelopes(fleet, T0 + s, s * 10)
        if s % 10 == 0:
            parts = batched(Classifications, fleet.classify(), CHUNK_ROWS, "items")
            pending += [envelope(p, "bench", s * 10 + 9, ts=T0 + s + 0.5) for p in parts]
        if len(pending) >= 40:
            store.write([("corelane.x", 0, offset + k, e) for k, e in enumerate(pending)])
            offset += len(pending)
            pending = []
    if pending:
        store.write([("corelane.x", 0, offset + k, e) for k, e in enumerate(pending)])
    store.checkpoint()
    print(f"(b) built {minutes} min x {procs} processes at 1 Hz in "
          f"{time.perf_counter() - started:.1f} s")
    return store


def time_query(con, sql: str, repeats: int) -> tuple[list[float], list[float], int]:
    times, cpus, n = [], [], 0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        n = len(con.execute(sql).fetchall())
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return times, cpus, n


def bench_queries(folder: Path, procs: int, minutes: int, threads: int, repeats: int) -> None:
    store = build_hour(folder / "hour.duckdb", procs, minutes)
    con = store.cursor()
    con.execute(f"SET threads = {threads}")
    rows = con.execute("SELECT count(*) FROM process_samples").fetchall()[0][0]
    cls_rows = con.execute("SELECT count(*) FROM classifications").fetchall()[0][0]
    print(f"    process_samples: {rows:,} rows; classifications: {cls_rows:,} rows; "
          f"threads={threads}")
    t_from = "TIMESTAMP '2025-11-27 08:00:00'"
    t_to = f"TIMESTAMP '2025-11-27 08:00:00' + INTERVAL {minutes} MINUTE"
    queries = {
        "top 10 by CPU over the span": f"SELECT * FROM top_processes_by_cpu({t_from}, {t_to}, 10)",
        "top 10 by run delay over the span":
            f"SELECT * FROM top_processes_by_delay({t_from}, {t_to}, 10)",
        "per-minute per-tier usage over the span": f"SELECT * FROM tier_usage({t_from}, {t_to})",
    }
    for label, sql in queries.items():
        times, cpus, n = time_query(con, sql, repeats)
        verdict = "met" if statistics.median(times) <= 1.0 else "NOT met"
        print(f"    {label}: {n} rows\n      wall {spread(times)} [target <= 1 s: {verdict}]"
              f"\n      CPU (all threads) {spread(cpus)}")
    con.close()
    # retention over the same file: every call must stay short (the recorder waits on it)
    steps, now = [], T0 + minutes * 60 + 3600
    while True:
        t = time.perf_counter()
        more = retention_step(store, now)
        steps.append(time.perf_counter() - t)
        if not more:
            break
    rolled = store.connection.execute(
        "SELECT count(*) FROM process_samples_1m").fetchall()[0][0]
    print(f"    retention: {len(steps)} calls rolled {minutes} min into {rolled:,} rows; "
          f"per call {spread(steps)}")
    store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1,
                        help="DuckDB threads for the ingest (default 1: one core)")
    parser.add_argument("--write-rows", type=int, default=StorageSettings().flush_rows,
                        help="rows per HistoryStore.write (the recorder's flush_rows)")
    parser.add_argument("--query-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the databases go (default: a tmp dir)")
    parser.add_argument("--skip-queries", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        bench_ingest(folder, args.rows, args.procs, args.threads, args.write_rows)
        if not args.skip_queries:
            bench_queries(folder, args.procs, args.minutes, args.query_threads, args.repeats)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
