"""The synthetic fleet every benchmark that needs load shares: realistic ProcessSamples
whose cumulative counters move every sweep, without /proc.

``Fleet`` is one host's processes; ``fleet_hosts`` makes N hosts, each with its own name,
its own CPU topology (``fleet_machines``: the shipped profiles and the sysfs captures
under tests/data/sysfs, in turn) and its own ``Fleet``. With ``churn``, a host replaces
that many of its processes each sweep (new pid, new start time) and says which identities
were born at which sweep, so that a benchmark can tell when each new process's first
classification is due.
"""
from __future__ import annotations

import random
import re
import tarfile
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from pipeline.events import Classification, HostSample, ProcessSample
from pipeline.topology import Topology, cpulist_format, list_profiles, load_profile, read_topology
from pipeline.vocabulary import CLASSES, DEFAULT_TIER_OF

CHUNK_ROWS = 250
NAMES = ["postgres", "nginx", "java", "python3", "node", "redis-server", "sshd", "bash",
         "systemd", "kworker/0:1", "containerd-shim", "envoy", "chrome", "ffmpeg", "rsync"]


LOADS = [0.0, 0.0, 0.01, 0.05, 0.2, 0.9]
SYSFS_CAPTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "sysfs"
# Parts of a sysfs capture the topology reader never opens (thousands of files on servers).
_SKIP = re.compile(r"/(memory\d*|cpuidle|power|vulnerabilities|firmware_node|microcode)(/|$)")


class Fleet:
    """One host's ``procs`` long-lived processes whose cumulative counters move each sweep.

    ``churn`` processes are replaced each sweep (from the second on) by new ones: a new pid
    and start time, a fresh load, counters from zero. ``born`` maps each identity to the
    sweep (from 0) at which it was first in a sweep, ``gone`` a replaced one to the last
    sweep it was in. ``cpus`` sets the affinity and last
    CPU the samples report."""

    def __init__(self, procs: int, seed: int = 1, churn: int = 0, cpus: int = 2) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self._churn_rng = random.Random(seed * 7919 + 1)  # churn leaves the sweeps' draws be
        self.churn = churn
        self.cpus = cpus
        self.affinity = cpulist_format(range(cpus))
        self.ident = [(1000 + i * 7, 10_000 + i * 13) for i in range(procs)]
        self.name = [NAMES[i % len(NAMES)] for i in range(procs)]
        self.cmd = [f"/usr/bin/{n} --config /etc/{n}/{n}.conf --worker {i % 16}"
                    for i, n in enumerate(self.name)]
        self.cgroup = [f"/system.slice/{n}.service" for n in self.name]
        self.load = [rng.choice(LOADS) for _ in range(procs)]
        self.cpu_s = [0.0] * procs
        self.delay = [0] * procs
        self.run = [0] * procs
        self.vol = [0] * procs
        self.invol = [0] * procs
        self.sweeps = 0
        self.born: dict[tuple[int, int], int] = {ident: 0 for ident in self.ident}
        self.gone: dict[tuple[int, int], int] = {}
        self._next_pid = 1000 + procs * 7

    def _replace(self, i: int) -> None:
        """Process ``i`` exits; a new one takes its slot."""
        rng = self._churn_rng
        self.gone[self.ident[i]] = self.sweeps - 1
        self._next_pid += 1 + rng.randint(0, 5)
        ident = (self._next_pid, 10_000 + self.sweeps * 100 + i % 100)
        self.ident[i] = ident
        self.born[ident] = self.sweeps
        self.load[i] = rng.choice(LOADS)
        self.cpu_s[i], self.delay[i], self.run[i], self.vol[i], self.invol[i] = 0.0, 0, 0, 0, 0

    def sweep(self, interval: float = 1.0) -> list[ProcessSample]:
        rng, out = self.rng, []
        if self.churn and self.sweeps:
            for i in self._churn_rng.sample(range(len(self.ident)), self.churn):
                self._replace(i)
        self.sweeps += 1
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
                last_cpu=i % self.cpus, nice=0 if i % 7 else 10, affinity=self.affinity))
        return out

    def classify(self) -> list[Classification]:
        return [Classification(pid=pid, start_time=start, cls=CLASSES[i % len(CLASSES)],
                               tier=DEFAULT_TIER_OF[CLASSES[i % len(CLASSES)]],
                               confidence=0.9, source="rule")
                for i, (pid, start) in enumerate(self.ident)]


def fleet_machines() -> list[str]:
    """The machines a synthetic fleet is made of, in turn: every shipped profile, then every
    sysfs capture under tests/data/sysfs."""
    return list_profiles() + sorted(a.name.removesuffix(".tar.xz")
                                    for a in SYSFS_CAPTURES.glob("*.tar.xz"))


@lru_cache(maxsize=None)
def machine_topology(name: str) -> Topology:
    """A machine of ``fleet_machines``: a profile, or a capture read from a temporary
    unpacked copy (once per process)."""
    if name in list_profiles():
        return load_profile(name)
    with tempfile.TemporaryDirectory(prefix="corelane-fleet-sysfs-") as tmp:
        with tarfile.open(SYSFS_CAPTURES / f"{name}.tar.xz") as tar:
            keep = [m for m in tar.getmembers() if not _SKIP.search(m.name)]
            tar.extractall(tmp, members=keep, filter="data")
        return replace(read_topology(Path(tmp) / name), source=name)


@dataclass
class FleetHost:
    """One synthetic host: its id, its own topology and its processes."""
    name: str
    topology: Topology
    fleet: Fleet

    def host_sample(self, with_topology: bool) -> HostSample:
        """A host sample for this machine's CPUs; ``with_topology`` as a collector sends it
        on its first sweep and every minute."""
        n = len(self.topology.cpus)
        return HostSample(cpu_percent=[40.0] * n, cpu_freq_khz=[None] * n, load=(1.0, 1.0, 1.0),
                          mem_total_bytes=64 << 30, mem_available_bytes=48 << 30, interval_s=1.0,
                          topology=self.topology.to_dict() if with_topology else None)


def fleet_hosts(count: int, procs: int = 200, seed: int = 1, churn: int = 0) -> list[FleetHost]:
    """``count`` hosts named fleet-000, fleet-001, ..., each with ``procs`` processes of its
    own (seeded from ``seed`` and its number) on the next machine of ``fleet_machines``."""
    machines = fleet_machines()
    hosts = []
    for i in range(count):
        topology = machine_topology(machines[i % len(machines)])
        hosts.append(FleetHost(f"fleet-{i:03d}", topology,
                               Fleet(procs, seed=seed * 100_003 + i, churn=churn,
                                     cpus=len(topology.cpus))))
    return hosts


def live_history(settings, fleet: Fleet, t0: float, seconds: int, topology,
                 host: str = "fleet-host", chunk_rows: int = CHUNK_ROWS, save_model=None):
    """The events a live corelane would have recorded for ``fleet`` over ``seconds``: one
    sweep and one host sample a second, and the classifications and plans its own
    classifier and planner make of them (``agents.classification.hosts``,
    ``agents.allocation.hosts``), published as the agents publish them. A history to
    replay without running a broker. ``save_model(model, ts)``, if given, is called once a
    minute with the model as it has learned so far (e.g. to put a version on a shelf)."""
    from agents.allocation import pool_states, to_decisions
    from agents.allocation.hosts import Planner
    from agents.classification.hosts import HostClassifiers
    from agents.classification.rules import load_rule_set
    from agents.classification.model import OnlineModel
    from pipeline.bus.publisher import Stamper
    from pipeline.topology import cpulist_format
    from pipeline.events import (Classifications, Decisions, HostSample, ProcessSamples,
                                 batched)

    stamper = Stamper(host)
    cfg = settings.classifier
    classifiers = HostClassifiers(cfg, OnlineModel(cfg.model), load_rule_set(settings))
    planner = Planner(settings, topology, host, housekeeping_pids=lambda: [])
    yield stamper.stamp(settings.configuration(), ts=t0 - 0.5)
    last_plan = None
    for i in range(seconds):
        ts = t0 + i
        if save_model is not None and i and i % 60 == 0:
            save_model(classifiers.model, ts)
        yield (sample := stamper.stamp(HostSample(
            cpu_percent=[40.0] * len(topology.cpus), cpu_freq_khz=[None] * len(topology.cpus),
            load=(1.0, 1.0, 1.0), mem_total_bytes=24 << 30, mem_available_bytes=20 << 30,
            interval_s=1.0, topology=topology.to_dict() if i % 60 == 0 else None), ts=ts))
        planner.on_host_sample(sample)
        parts = batched(ProcessSamples, fleet.sweep(), chunk_rows, "samples", interval_s=1.0)
        changed = False
        event = None
        for j, part in enumerate(parts):
            event = stamper.stamp(part, ts=ts + 0.001 * (j + 1))
            yield event
            planner.on_samples(event)
            items = classifiers.on_samples(event).classifications
            if items:
                for out in batched(Classifications, items, chunk_rows, "items"):
                    c_event = stamper.stamp(out, ts=event.ts + 0.0005)
                    yield c_event
                    changed |= planner.on_classifications(c_event)
        # As a replay plans: at a class change, else once a whole sweep is in and the
        # interval has passed since the last plan.
        swept = event.ts
        if changed or last_plan is None or swept - last_plan >= settings.allocator.interval_s:
            result = planner.make_plan(host, swept)
            if result is None:
                continue
            last_plan = swept
            decisions = to_decisions(result)
            if planner.due(host, result, decisions, swept):
                for part in batched(Decisions, decisions, chunk_rows, "items",
                                    plan_seq=result.seq, mode=result.mode,
                                    strategy=result.strategy, pools=pool_states(result),
                                    reserve=cpulist_format(result.reserve)):
                    yield stamper.stamp(part, ts=swept)
