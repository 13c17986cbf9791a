"""A synthetic edge: a host that exists only on the bus.

Run as a process (``python tests/support/synthetic_edge.py``) with the same environment
as a `corelane up` (``CORELANE_CONFIG``, ``CORELANE_KAFKA``, ``CORELANE_HOST``), it
publishes what a collector of that host would: a host sample with the host's topology (a
named profile, other CPUs than this machine's) and a sweep of a few processes whose
cumulative counters move each sweep, every ``INTERVAL_S``. Its processes behave the same
every run, two of them hogs and the rest asleep, so their classes and placement are steady:
anything that moves them is corelane's doing.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.bus import Publisher  # noqa: E402
from pipeline.events import HostSample, ProcessSample, ProcessSamples  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.topology import load_profile  # noqa: E402

INTERVAL_S = 0.5
PROFILE = "apple-m4-max"
# (name, cores used, wake-ups per second): two hogs, a busy server, sleepers
PROCESSES = [("cruncher", 0.95, 5), ("render", 0.9, 8), ("api", 0.2, 400),
             ("cron", 0.0, 0), ("agetty", 0.0, 0), ("sshd", 0.001, 1)]


def sweep(tick: int) -> list[ProcessSample]:
    elapsed = tick * INTERVAL_S
    out = []
    for i, (name, share, wakeups) in enumerate(PROCESSES):
        pid, start = 5000 + i, 100_000 + i
        run_ns = int(share * elapsed * 1e9)
        out.append(ProcessSample(
            pid=pid, start_time=start, ppid=1, name=name, state="R" if share > 0.5 else "S",
            cmdline=f"/usr/bin/{name}", uid=1000, cgroup=f"/system.slice/{name}.service",
            cpu_share=share if tick else 0.0, cpu_time_s=share * elapsed,
            rss_bytes=40_000_000, vm_bytes=400_000_000, threads=1,
            vol_ctx=int(wakeups * elapsed), invol_ctx=int(share * 20 * elapsed),
            run_time_ns=run_ns, run_delay_ns=run_ns // 200,
            timeslices=int((wakeups + share * 20) * elapsed), affinity="0-15"))
    return out


async def main() -> None:
    settings = load_settings()
    topology = load_profile(PROFILE)
    cpus = len(topology.cpu_ids)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Publisher(settings) as publisher:
        stamp = publisher.stamper.stamp
        start, tick = time.monotonic(), 0
        while not stop.is_set():
            ts = time.time()
            host = HostSample(cpu_percent=[12.0] * cpus, cpu_freq_khz=[None] * cpus,
                              load=(2.0, 2.0, 2.0), mem_total_bytes=64 << 30,
                              mem_available_bytes=40 << 30, interval_s=INTERVAL_S,
                              topology=topology.to_dict() if tick % 20 == 0 else None)
            batch = publisher.batch(ProcessSamples, sweep(tick), "samples",
                                    interval_s=INTERVAL_S)
            await publisher.publish_many([stamp(host, ts), *(stamp(p, ts) for p in batch)])
            tick += 1
            delay = start + tick * INTERVAL_S - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass


if __name__ == "__main__":
    asyncio.run(main())
