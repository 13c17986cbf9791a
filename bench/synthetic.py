"""A synthetic fleet of long-lived processes for the storage and recorder benchmarks:
realistic ProcessSamples whose cumulative counters move every sweep, without /proc."""
from __future__ import annotations

import random

from pipeline.vocabulary import CLASSES, DEFAULT_TIER_OF
from pipeline.events import Classification, ProcessSample

CHUNK_ROWS = 250
NAMES = ["postgres", "nginx", "java", "python3", "node", "redis-server", "sshd", "bash",
         "systemd", "kworker/0:1", "containerd-shim", "envoy", "chrome", "ffmpeg", "rsync"]


class Fleet:
    """``procs`` long-lived processes whose cumulative counters move each sweep."""

    def __init__(self, procs: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.ident = [(1000 + i * 7, 10_000 + i * 13) for i in range(procs)]
        self.name = [NAMES[i % len(NAMES)] for i in range(procs)]
        self.cmd = [f"/usr/bin/{n} --config /etc/{n}/{n}.conf --worker {i % 16}"
                    for i, n in enumerate(self.name)]
        self.cgroup = [f"/system.slice/{n}.service" for n in self.name]
        self.load = [rng.choice([0.0, 0.0, 0.01, 0.05, 0.2, 0.9]) for _ in range(procs)]
        self.cpu_s = [0.0] * procs
        self.delay = [0] * procs
        self.run = [0] * procs
        self.vol = [0] * procs
        self.invol = [0] * procs

    def sweep(self, interval: float = 1.0) -> list[ProcessSample]:
        rng, out = self.rng, []
        for i, (pid, start) in enumerate(self.ident):
            share = max(0.0, self.load[i] * (0.5 + rng.random()))
            self.cpu_s[i] += share * interval
            self.run[i] += int(share * interval * 1e9)
            self.delay[i] += int(share * rng.random() * 2e7)
            self.vol[i] += rng.randint(0, 50)
            self.invol[i] += rng.randint(0, 5)
            out.append(ProcessSample(
                pid=pid, start_time=start, ppid=1, name=self.name[i], state="S",
                cmdline=self.cmd[i], uid=0 if i % 5 == 0 else 1000, cgroup=self.cgroup[i],
                cpu_share=share, cpu_time_s=self.cpu_s[i], rss_bytes=50_000_000 + i * 4096,
                vm_bytes=900_000_000 + i * 8192, threads=1 + i % 32, vol_ctx=self.vol[i],
                invol_ctx=self.invol[i], run_time_ns=self.run[i], run_delay_ns=self.delay[i],
                timeslices=self.vol[i] + self.invol[i], io_read_bytes=i * 100_000,
                io_write_bytes=i * 50_000, io_rchar=i * 300_000, io_wchar=i * 200_000,
                last_cpu=i % 2, nice=0 if i % 7 else 10, affinity="0-1"))
        return out

    def classify(self) -> list[Classification]:
        return [Classification(pid=pid, start_time=start, cls=CLASSES[i % len(CLASSES)],
                               tier=DEFAULT_TIER_OF[CLASSES[i % len(CLASSES)]],
                               confidence=0.9, source="rule")
                for i, (pid, start) in enumerate(self.ident)]
