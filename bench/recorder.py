"""What recording costs, and how far recorders go at fleet scale.

    .venv/bin/python bench/recorder.py [--procs 1000] [--seconds 120] [--warmup 15]
    .venv/bin/python bench/recorder.py --fleet [--hosts 40] [--procs 200] [--sweeps 60]
                                       [--recorders 1,2] [--partitions 8] [--repeats 3]
                                       [--query-repeats 5]

Both start a real single-node broker (free loopback ports, data in a temporary folder) and
run each recorder alone in its own process.

**Cost at 1 Hz** (the default): publishes one host sample and one 1,000-process sweep (in
chunks, as the collector does) every second. Reported: the recorder's CPU time over wall
time after the warm-up, as a share of one core (target <= 5%), its flushes, and whether
every published row reached the database once the recorder drained on SIGTERM.

**At fleet scale** (``--fleet``): ``--sweeps`` seconds of ``--hosts`` synthetic hosts
(``bench.synthetic.fleet_hosts``, through one real ``Publisher`` per host) are put on the
topics first, as fast as the broker takes them; then K recorders (each ``--recorders``
value, ``--repeats`` times) read them all into DuckDB as fast as they can: the real
``Recorder``, each owning the partitions p with p % K == k of every topic and writing a
file of its own. Reported: rows per second for the K together (all rows over the time
from the first recorder's start to the last one's end), each recorder's rows/s and its
CPU per row, and whether every row is in some file once. Then the query cost over the K
files read together (``storage.histories.open_histories``) against the one file, and the
cost of closing a Parquet segment of each file and of reading the segments back together.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.recorder import Recorder  # noqa: E402
from bench.harness import (bench_config, bench_settings, child_process,  # noqa: E402
                           cpu_seconds, publish_sweeps, running_broker, spread)
from bench.synthetic import FleetHost, fleet_hosts  # noqa: E402
from pipeline.bus import Publisher, Stamper, ensure_topics  # noqa: E402
from pipeline.events import ProcessSamples  # noqa: E402
from pipeline.settings import Settings  # noqa: E402


async def run_recorder_only() -> None:
    """The child: the recorder and nothing else, until SIGTERM; prints its stats as JSON."""
    from storage.history import HistoryStore

    settings = bench_settings(dict(os.environ))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = HistoryStore(settings.db_path, settings.storage)
    async with Publisher(settings) as publisher:
        recorder = Recorder(settings, store, publisher)
        await recorder.start()
        try:
            stats = await recorder.run(stop)
        finally:
            await recorder.stop()
    rows = store.connection.execute("SELECT count(*) FROM process_samples").fetchone()[0]
    store.close()
    print(json.dumps({**stats.to_json(), "process_rows_in_db": rows}))


async def publish(settings: Settings, procs: int, seconds: float, pid: int,
                  warmup: float) -> tuple[int, float, float]:
    """Publish at 1 Hz; returns (rows published, recorder CPU s and wall s after warm-up)."""
    cpu0 = wall0 = None
    start = time.monotonic()

    def after_sweep(tick: int, ts: float, messages: int) -> None:
        nonlocal cpu0, wall0
        if cpu0 is None and time.monotonic() - start >= warmup:
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()

    rows = await publish_sweeps(settings, procs, seconds, after_sweep)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    assert cpu0 is not None and wall0 is not None, "--seconds must be longer than --warmup"
    return rows, cpu1 - cpu0, wall1 - wall0


# --------------------------------------------------------------------------- fleet scale

class RangeRecorder(Recorder):
    """The recorder on the partitions it owns only (the same numbers of every topic: a
    host's events share one), so that several recorders split the hosts among them."""

    def __init__(self, *args: Any, owned: frozenset[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owned = owned

    async def start(self) -> None:
        await super().start()
        assert self._consumer is not None
        self._partitions = [tp for tp in self._partitions if tp.partition in self.owned]
        self._consumer.assign(self._partitions)
        await self._rewind()   # assign() forgot the positions start() sought


async def catch_up(index: int, of: int) -> None:
    """The child of --fleet: recorder ``index`` of ``of`` reads everything on its partitions
    into its own file as fast as it can, then prints what it did as JSON."""
    from storage.history import HistoryStore

    settings = bench_settings(dict(os.environ))
    store = HistoryStore(settings.db_path, settings.storage)
    owned = frozenset(p for p in range(settings.kafka.partitions) if p % of == index)
    async with Publisher(settings) as publisher:
        recorder = RangeRecorder(settings, store, publisher, owned=owned)
        await recorder.start()
        # Every recorder starts reading at the same moment: the parent says when.
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        begin, cpu0 = time.time(), time.process_time()
        try:
            stop = asyncio.Event()
            stop.set()       # read up to the ends seen now, flushing full batches, then stop
            stats = await recorder.run(stop, drain_timeout_s=1800)
        finally:
            await recorder.stop()
        end, cpu = time.time(), time.process_time() - cpu0
    rows = store.connection.execute("SELECT count(*) FROM process_samples").fetchone()[0]
    store.close()
    print(json.dumps({"begin": begin, "end": end, "cpu_s": cpu, "rows": stats.rows,
                      "batches": stats.batches, "process_rows_in_db": rows,
                      "partitions": sorted(owned)}))


async def preload(settings: Settings, hosts: list[FleetHost], sweeps: int) -> tuple[int, float]:
    """``sweeps`` past seconds of every host on the topics, as fast as the broker takes them;
    returns (process rows, seconds it took)."""
    started = time.monotonic()
    t0 = time.time() - sweeps
    rows = 0
    publishers = [Publisher(settings, Stamper(h.name)) for h in hosts]
    for p in publishers:
        await p.start()
    try:
        for tick in range(sweeps):
            async def one(host: FleetHost, publisher: Publisher) -> int:
                ts = t0 + tick
                samples = host.fleet.sweep()
                chunks = publisher.batch(ProcessSamples, samples, "samples", interval_s=1.0)
                events = [publisher.stamper.stamp(host.host_sample(tick % 60 == 0), ts)]
                events += [publisher.stamper.stamp(part, ts) for part in chunks]
                await publisher.publish_many(events)
                return len(samples)
            rows += sum(await asyncio.gather(*(one(h, p) for h, p in zip(hosts, publishers))))
    finally:
        for p in publishers:
            await p.stop()
    return rows, time.monotonic() - started


def run_recorders(env: dict[str, str], folder: Path, k: int) -> tuple[list[dict], list[Path]]:
    """K catch-up recorders at once, each with its own file; their reports and files."""
    files = [folder / f"history-{k}-{i}.duckdb" for i in range(k)]
    for f in files:
        f.unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, __file__, "--child-fleet", f"{i}/{k}"],
                              env={**env, "CORELANE_DB": str(files[i])}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(k)]
    reports = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            if not proc.stdout.readline().strip():
                raise SystemExit("a recorder exited before it was ready")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"a recorder failed (exit {proc.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return reports, files


def timed(con: Any, sql: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        out.append(time.perf_counter() - started)
    return out


def query_costs(one_file: Path, files: list[Path], t0: float, t1: float,
                repeats: int, folder: Path) -> None:
    """The same queries over the one file and over the K files read together; then the
    Parquet segments of the K files, written and read back together."""
    import duckdb

    from storage.histories import open_histories
    from storage.history import HistoryStore

    window = (f"TIMESTAMP '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t0))}', "
              f"TIMESTAMP '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t1))}'")
    queries = {
        "rows and peak CPU time per host": "SELECT host, count(*), max(cpu_time_s) "
                                           "FROM process_samples GROUP BY host",
        "top_processes_by_cpu, 10": f"SELECT * FROM top_processes_by_cpu({window}, 10)",
        "tier_usage per minute": f"SELECT * FROM tier_usage({window})",
    }
    single = HistoryStore.open_readonly(one_file)
    many = open_histories(files)
    print(f"query cost, {repeats} times each, median [min .. max] in seconds:")
    for name, sql in queries.items():
        a, b = timed(single.connection, sql, repeats), timed(many, sql, repeats)
        print(f"  {name}: one file {spread(a)}; {len(files)} files together {spread(b)} "
              f"({statistics.median(b) / statistics.median(a):.2f}x)")
    single.close()
    many.close()
    # Parquet segments: what a recorder closing a segment each few minutes would pay, and
    # what reading every recorder's segments together costs.
    segments = folder / "segments"
    segments.mkdir(exist_ok=True)
    rows = 0
    started = time.perf_counter()
    for i, f in enumerate(files):
        con = duckdb.connect(str(f), read_only=True)
        rows += con.execute("SELECT count(*) FROM process_samples").fetchone()[0]
        con.execute(f"COPY process_samples TO '{segments / f'part-{i}.parquet'}' "
                    f"(FORMAT parquet, COMPRESSION zstd)")
        con.close()
    took = time.perf_counter() - started
    size = sum(p.stat().st_size for p in segments.glob("*.parquet"))
    db_size = sum(f.stat().st_size for f in files)
    print(f"  closing Parquet segments of the {len(files)} files: {rows} rows in {took:.2f} s "
          f"({rows / took:,.0f} rows/s), {size / 1e6:.1f} MB (DuckDB files {db_size / 1e6:.1f} MB)")
    con = duckdb.connect()
    sql = (f"SELECT host, count(*), max(cpu_time_s) FROM read_parquet('{segments}/*.parquet') "
           f"GROUP BY host")
    print(f"  rows and peak CPU time per host over the segments: "
          f"{spread(timed(con, sql, repeats))} s")
    con.close()


def fleet_main(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in args.recorders.split(",")]
    print(f"{args.hosts} hosts x {args.procs} processes x {args.sweeps} sweeps, "
          f"{args.partitions} partitions; recorders {sizes}, {args.repeats} repeats; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    config = {"kafka": {"partitions": args.partitions}}
    with running_broker("corelane-bench-recorder-fleet-", heap_mb=768, config=config) as bench:
        env = bench_config(bench.env, bench.tmp, config)
        settings = bench_settings(env)
        asyncio.run(ensure_topics(settings))
        hosts = fleet_hosts(args.hosts, procs=args.procs, churn=1)
        rows, took = asyncio.run(preload(settings, hosts, args.sweeps))
        t1 = time.time()
        print(f"published {rows:,} process rows in {took:.1f} s ({rows / took:,.0f} rows/s)",
              flush=True)
        results: dict[int, list[float]] = {k: [] for k in sizes}
        per_recorder: dict[int, list[float]] = {k: [] for k in sizes}
        cpu_per_row: dict[int, list[float]] = {k: [] for k in sizes}
        kept: dict[int, list[Path]] = {}
        for repeat in range(args.repeats):
            for k in sizes:
                reports, files = run_recorders(env, bench.tmp, k)
                recorded = sum(r["process_rows_in_db"] for r in reports)
                total = sum(r["rows"] for r in reports)
                wall = max(r["end"] for r in reports) - min(r["begin"] for r in reports)
                results[k].append(total / wall)
                per_recorder[k] += [r["rows"] / (r["end"] - r["begin"]) for r in reports]
                cpu_per_row[k] += [r["cpu_s"] / r["rows"] * 1e6 for r in reports]
                print(f"#{repeat + 1} {k} recorder(s): {total:,} rows in {wall:.1f} s = "
                      f"{total / wall:,.0f} rows/s together; each: " + ", ".join(
                          f"{r['rows'] / (r['end'] - r['begin']):,.0f} rows/s, "
                          f"{r['cpu_s'] / r['rows'] * 1e6:.1f} us CPU/row, {r['batches']} "
                          f"writes" for r in reports) +
                      f"; process rows in the files {recorded:,} of {rows:,} "
                      f"({'all, once' if recorded == rows else 'NOT all'}); load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                kept[k] = files
        print("\nrows/s (every table; process rows are "
              f"{args.procs / (args.procs + 1) * 100:.1f}% of them), median [min .. max]:")
        for k in sizes:
            print(f"  {k} recorder(s): together {spread(results[k])}; per recorder "
                  f"{spread(per_recorder[k])}; CPU per row {spread(cpu_per_row[k])} us; "
                  f"= {statistics.median(results[k]) / (args.procs + 1):,.0f} hosts of "
                  f"{args.procs} processes at 1 Hz")
        if 1 in kept and len(sizes) > 1:
            k = max(sizes)
            ratio = statistics.median(results[k]) / statistics.median(results[1])
            print(f"  {k} recorders / 1: {ratio:.2f}x")
            query_costs(kept[1][0], kept[k], t1 - args.sweeps - 1, t1 + 1,
                        args.query_repeats, bench.tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=None,
                        help="processes per host (1,000; 200 with --fleet)")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--fleet", action="store_true", help="recorders at fleet scale")
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--sweeps", type=int, default=60)
    parser.add_argument("--recorders", default="1,2")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--query-repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-fleet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(run_recorder_only())
        return
    if args.child_fleet:
        index, of = (int(x) for x in args.child_fleet.split("/"))
        asyncio.run(catch_up(index, of))
        return
    if args.fleet:
        args.procs = args.procs or 200
        fleet_main(args)
        return
    args.procs = args.procs or 1000

    with running_broker("corelane-bench-recorder-") as bench, \
            child_process(__file__, bench.env) as child:
        print(f"recorder pid {child.pid}; publishing {args.procs} processes at 1 Hz for "
              f"{args.seconds:.0f} s (warm-up {args.warmup:.0f} s)", flush=True)
        rows, cpu, wall = asyncio.run(
            publish(bench.settings, args.procs, args.seconds, child.pid, args.warmup))
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
        stats = json.loads(out.strip().splitlines()[-1])

    share = cpu / wall
    print(f"recorder CPU: {cpu:.2f} s over {wall:.1f} s = {share * 100:.2f}% of one core "
          f"[target <= 5%: {'met' if share <= 0.05 else 'NOT met'}]")
    print(f"flushes: {stats['batches']}, rows written: {stats['rows']}, messages read: "
          f"{stats['messages']}, last flush took {stats['last_flush_s'] * 1000:.1f} ms")
    print(f"process rows published: {rows}, in the database after drain: "
          f"{stats['process_rows_in_db']} ({'all' if stats['process_rows_in_db'] == rows else 'MISSING ROWS'})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
