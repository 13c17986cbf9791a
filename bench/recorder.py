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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import Fleet  # noqa: E402
from pipeline.bus import Publisher, ensure_topics  # noqa: E402
from pipeline.events import HostSample, ProcessSamples  # noqa: E402
from pipeline.kafka.broker import LocalBroker  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_settings(env: dict[str, str]) -> Settings:
    return load_settings(env=env)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


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
    print(json.dumps({**stats.__dict__, "process_rows_in_db": rows}))


async def publish(settings: Settings, procs: int, seconds: float, pid: int,
                  warmup: float) -> tuple[int, float, float]:
    """Publish at 1 Hz; returns (rows published, recorder CPU s and wall s after warm-up)."""
    fleet = Fleet(procs)
    rows = 0
    cpu0 = wall0 = None
    async with Publisher(settings) as publisher:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            ts = time.time()
            samples = fleet.sweep()
            events = [publisher.stamper.stamp(HostSample(
                cpu_percent=[50.0, 40.0], cpu_freq_khz=[None, None], load=(1.0, 1.0, 1.0),
                mem_total_bytes=24 << 30, mem_available_bytes=20 << 30, interval_s=1.0), ts)]
            events += [publisher.stamper.stamp(part, ts)
                       for part in publisher.batch(ProcessSamples, samples, "samples",
                                                   interval_s=1.0)]
            await publisher.publish_many(events)
            rows += len(samples)
            if cpu0 is None and time.monotonic() - start >= warmup:
                cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            tick += 1
            await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
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

    with tempfile.TemporaryDirectory(prefix="corelane-bench-recorder-") as tmp:
        bootstrap = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "CORELANE_KAFKA": bootstrap, "CORELANE_HOME": tmp,
               "CORELANE_DB": str(Path(tmp) / "history.duckdb")}
        env.pop("CORELANE_CONFIG", None)
        settings = bench_settings(env)
        broker = LocalBroker(bootstrap, home=tmp, heap_mb=512, controller_port=free_port())
        print(f"starting a broker at {bootstrap} ...", flush=True)
        broker.start(timeout=180)
        child = None
        try:
            asyncio.run(ensure_topics(settings))
            child = subprocess.Popen([sys.executable, __file__, "--child"], env=env,
                                     stdout=subprocess.PIPE, text=True)
            print(f"recorder pid {child.pid}; publishing {args.procs} processes at 1 Hz for "
                  f"{args.seconds:.0f} s (warm-up {args.warmup:.0f} s)", flush=True)
            rows, cpu, wall = asyncio.run(
                publish(settings, args.procs, args.seconds, child.pid, args.warmup))
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=120)
            stats = json.loads(out.strip().splitlines()[-1])
        finally:
            if child is not None and child.poll() is None:
                child.kill()
            broker.stop()

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
