"""A long run through the real pipeline: does memory stay flat and does lag keep up?

    .venv/bin/python bench/soak.py [--minutes 60] [--procs 1000] [--memory-limit 1GB]

A real broker of its own and a real `corelane up --dry-run` (collector, classifier,
allocator, applier, recorder, API, with DuckDB's ``storage.memory_limit`` set), and beside
it a feeder process that publishes a synthetic fleet of ``--procs`` processes at 1 Hz as a
second host, with that host's topology, so that the classifier judges them, the allocator
plans them and the recorder records them as it would a real host's.

Every minute it prints the resident memory and CPU (cores, over that minute) of corelane
and of the broker, and each part's lag from /health (the agents' consumer lag, the
recorder's delay). At the end: corelane's RSS growth from minute 10 to the last minute
(target: at most 10%), and the slope of each lag over the same span (target: no upward
trend).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx  # noqa: E402

from bench.harness import cpu_seconds, publish_sweeps, running_broker  # noqa: E402
from pipeline import procfs  # noqa: E402
from pipeline.bus import Publisher  # noqa: E402
from pipeline.events import HostSample  # noqa: E402
from pipeline.hostpaths import LIVE  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.topology import read_topology  # noqa: E402
from support.corelane_instance import Instance  # noqa: E402

FLEET_HOST = "soak-fleet"
LAGS = ("collector", "classifier", "allocator", "recorder")


def rss_mb(pid: int) -> float:
    status = procfs.read_status(LIVE.proc, pid)
    return (status.vm_rss_kb if status is not None else 0) / 1024


def slope(values: list[float]) -> float:
    """Least-squares slope per minute."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


async def feed(procs: int, seconds: float) -> None:
    """The fleet at 1 Hz, with its topology every minute (so it is planned)."""
    settings = load_settings(env=dict(os.environ))
    topology = read_topology("/").to_dict()
    cpus = len(topology["cpus"])

    async def on_sweep(tick: int, ts: float, _chunks: int) -> None:
        if tick % 60 == 0:
            async with Publisher(settings) as publisher:
                await publisher.publish(HostSample(
                    cpu_percent=[50.0] * cpus, cpu_freq_khz=[None] * cpus, load=(1, 1, 1),
                    mem_total_bytes=24 << 30, mem_available_bytes=20 << 30, interval_s=1.0,
                    topology=topology), ts)

    await publish_sweeps(settings, procs, seconds, on_sweep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--memory-limit", default="1GB")
    args = parser.parse_args()

    with running_broker("corelane-bench-soak-") as bench:
        corelane = Instance(bench.tmp, bench.env["CORELANE_KAFKA"], "corelane.",
                            collector="{interval_s: 1.0, containers: false}",
                            storage=f"{{memory_limit: '{args.memory_limit}'}}",
                            closed_loop="{enabled: false}")
        corelane.start()
        feeder = None
        try:
            corelane.wait_recording(180)
            feeder = subprocess.Popen(
                [sys.executable, __file__, "--feed", str(args.procs), str(args.minutes * 60)],
                env={**corelane.env, "CORELANE_HOST": FLEET_HOST})
            assert corelane.proc is not None
            pids = {"corelane": corelane.proc.pid, "broker": bench.broker.read_pid() or 0}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            rss: list[float] = []
            lags: dict[str, list[float]] = {name: [] for name in LAGS}
            print(f"{'min':>4} {'corelane MB':>12} {'cores':>6} {'broker MB':>10} {'cores':>6}  "
                  + " ".join(f"{name + ' lag s':>16}" for name in LAGS), flush=True)
            started = time.monotonic()
            minute = 0
            while minute < args.minutes:
                minute += 1
                time.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                if corelane.proc.poll() is not None:
                    raise SystemExit(f"corelane exited:\n{corelane.log_text()[-3000:]}")
                now_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                used = {name: (now_cpu[name] - cpu[name]) / 60 for name in pids}
                cpu = now_cpu
                health = httpx.get(f"http://{corelane.api}/api/v1/health", timeout=10,
                                   trust_env=False).json()["parts"]
                row = {name: health.get(name, {}).get("lag_s") or 0.0 for name in LAGS}
                for name in LAGS:
                    lags[name].append(row[name])
                rss.append(rss_mb(pids["corelane"]))
                print(f"{minute:4d} {rss[-1]:12.0f} {used['corelane']:6.2f} "
                      f"{rss_mb(pids['broker']):10.0f} {used['broker']:6.2f}  "
                      + " ".join(f"{row[name]:16.2f}" for name in LAGS), flush=True)
            first = min(10, len(rss)) - 1
            growth = (rss[-1] - rss[first]) / rss[first] * 100 if rss[first] else 0.0
            print(f"\ncorelane RSS minute {first + 1} -> {len(rss)}: {rss[first]:.0f} -> "
                  f"{rss[-1]:.0f} MB ({growth:+.1f}%; target <= +10%: "
                  f"{'met' if growth <= 10 else 'NOT met'})")
            # RSS rises and falls as DuckDB checkpoints and Python frees: windows say more
            # than two points. The 10 minutes from minute 10 against the last 10.
            early, late = rss[first:first + 10], rss[-10:]
            if early and late:
                change = (sum(late) / len(late)) / (sum(early) / len(early)) * 100 - 100
                print(f"corelane RSS mean, minutes {first + 1}-{first + len(early)}: "
                      f"{sum(early) / len(early):.0f} MB (peak {max(early):.0f}); last "
                      f"{len(late)} minutes: {sum(late) / len(late):.0f} MB (peak "
                      f"{max(late):.0f}); {change:+.1f}%")
            for name in LAGS:
                trend = slope(lags[name][first:])
                print(f"{name} lag slope from minute {first + 1}: {trend:+.3f} s per minute "
                      f"({'no upward trend' if trend <= 0.05 else 'UPWARD'})")
        finally:
            if feeder is not None and feeder.poll() is None:
                feeder.terminate()
                feeder.wait(30)
            if corelane.proc is not None and corelane.proc.poll() is None:
                corelane.terminate()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--feed":
        asyncio.run(feed(int(sys.argv[2]), float(sys.argv[3])))
    else:
        main()
