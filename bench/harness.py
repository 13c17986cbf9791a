"""What the agent benchmarks share: a real broker on free loopback ports, a child process
for the agent under test, synthetic sweeps published at 1 Hz, and a pid's CPU time.

The agent runs in a child process so that its CPU time can be read from /proc apart from
the publisher's and the broker's.
"""
from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.synthetic import Fleet  # noqa: E402
from pipeline import procfs  # noqa: E402
from pipeline.bus import Publisher, ensure_topics  # noqa: E402
from pipeline.hostpaths import LIVE  # noqa: E402
from pipeline.events import HostSample, ProcessSamples  # noqa: E402
from pipeline.kafka.broker import LocalBroker  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402


def bench_settings(env: dict[str, str]) -> Settings:
    return load_settings(env=env)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, every thread) a live process has used."""
    stat = procfs.read_stat(LIVE.proc, pid)
    if stat is None:
        raise ProcessLookupError(f"no process {pid}")
    return (stat.utime + stat.stime) / procfs.CLOCK_TICKS


def run_delay_seconds(pid: int) -> float:
    """The time a live process's threads, together, waited on a run queue for a CPU: what a
    shared machine takes from it (on top of ``cpu_seconds``)."""
    totals = procfs.thread_totals(LIVE.proc, pid)
    if totals is None:
        raise ProcessLookupError(f"no process {pid}")
    return totals.run_delay_ns / 1e9


@dataclass
class BenchBroker:
    """A running broker, its home folder and the environment a child needs to reach it."""
    tmp: Path
    env: dict[str, str]
    settings: Settings
    broker: LocalBroker


def bench_config(env: dict[str, str], folder: Path, config: dict[str, Any]) -> dict[str, str]:
    """``env`` with CORELANE_CONFIG naming a file in ``folder`` that holds ``config`` (the
    built-in defaults fill in every other setting)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return {**env, "CORELANE_CONFIG": str(path)}


@contextmanager
def running_broker(prefix: str, heap_mb: int = 512, timeout: float = 180,
                   config: dict[str, Any] | None = None) -> Iterator[BenchBroker]:
    """A single-node broker on free loopback ports with its data in a temporary folder and
    every corelane topic created; stopped by its pid and the folder removed on exit.
    ``config`` is the settings the benchmark runs with (see ``bench_config``)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        bootstrap = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "CORELANE_KAFKA": bootstrap, "CORELANE_HOME": tmp,
               "CORELANE_DB": str(Path(tmp) / "history.duckdb")}
        env.pop("CORELANE_CONFIG", None)  # a developer's own config must not leak in
        if config is not None:
            env = bench_config(env, Path(tmp), config)
        settings = bench_settings(env)
        broker = LocalBroker(bootstrap, home=tmp, heap_mb=heap_mb, controller_port=free_port())
        print(f"starting a broker at {bootstrap} ...", flush=True)
        broker.start(timeout=timeout)
        try:
            asyncio.run(ensure_topics(settings))
            yield BenchBroker(Path(tmp), env, settings, broker)
        finally:
            broker.stop()


@contextmanager
def child_process(script: str, env: dict[str, str], *args: str,
                  stderr: IO[str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``script --child ARGS`` with its stdout piped; killed (by its pid) if still running
    when the block ends, so a failed run leaves nothing behind."""
    child = subprocess.Popen([sys.executable, script, "--child", *args], env=env,
                             stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> str:
    """Median [min .. max] of repeated measurements."""
    if not values:
        return "-"

    def f(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return (f"{f(statistics.median(values))} [{f(min(values))} .. {f(max(values))}]"
            if len(values) > 1 else f(values[0]))


def host_sample() -> HostSample:
    return HostSample(cpu_percent=[50.0, 40.0], cpu_freq_khz=[None, None], load=(1.0, 1.0, 1.0),
                      mem_total_bytes=24 << 30, mem_available_bytes=20 << 30, interval_s=1.0)


# Called after each sweep is acknowledged: (sweep number from 0, its timestamp, process
# sample messages it took).
OnSweep = Callable[[int, float, int], Awaitable[None] | None]


async def publish_sweeps(settings: Settings, procs: int, seconds: float,
                         on_sweep: OnSweep | None = None) -> int:
    """One host sample and one ``procs``-process sweep every second for ``seconds``, the
    sweep in chunks as the collector sends it; returns the process rows published."""
    fleet = Fleet(procs)
    rows = 0
    async with Publisher(settings) as publisher:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            ts = time.time()
            samples = fleet.sweep()
            chunks = publisher.batch(ProcessSamples, samples, "samples", interval_s=1.0)
            events = [publisher.stamper.stamp(host_sample(), ts)]
            events += [publisher.stamper.stamp(part, ts) for part in chunks]
            await publisher.publish_many(events)
            rows += len(samples)
            if on_sweep is not None:
                pending = on_sweep(tick, ts, len(chunks))
                if pending is not None:
                    await pending
            tick += 1
            # Absolute schedule: a slow sweep is made up for, not carried into every later one.
            await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
    return rows
