"""What recording costs: the recorder's CPU while 1,000 processes are published at 1 Hz.

    .venv/bin/python bench/recorder.py [--procs 1000] [--seconds 120] [--warmup 15]

Starts a real single-node broker (free loopback ports, data in a temporary folder), runs
the recorder alone in its own process (so its CPU time can be read from /proc), and
publishes one host sample and one 1,000-process sweep (in chunks, as the collector does)
every second. Reported: the recorder's CPU time over wall time after the warm-up, as a
share of one core (target <= 5%), its flushes, and whether every published row reached
the database once the recorder drained on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (bench_settings, child_process, cpu_seconds,  # noqa: E402
                           publish_sweeps, running_broker)
from pipeline.bus import Publisher  # noqa: E402
from pipeline.settings import Settings  # noqa: E402


async def run_recorder_only() -> None:
    """The child: the recorder and nothing else, until SIGTERM; prints its stats as JSON."""
    from agents.recorder import Recorder
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(run_recorder_only())
        return

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
