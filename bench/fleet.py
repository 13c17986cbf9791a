"""A fleet on one broker: how far classifier and allocator workers keep up with N hosts.

    .venv/bin/python bench/fleet.py [--hosts 5,10,20,40] [--workers 1,2] [--repeats 3]
                                    [--procs 200] [--churn 1] [--seconds 40] [--warmup 12]
                                    [--partitions 8] [--own-sessions] [--json FILE] [--logs DIR]

Starts a real single-node broker (free loopback ports, data in a temporary folder). For
each number of hosts, each number of workers and each repeat, on topics of their own
(a prefix per run, deleted after it): starts the workers, each a process of its own with
its own home and API port; once their consumer group is stable, publishes N synthetic
hosts (``bench.synthetic.fleet_hosts``: each its own topology and ``--procs`` processes,
``--churn`` of them replaced every sweep) through one real ``Publisher`` per host, a host
sample and a sweep in chunks of ``kafka.chunk_rows`` at 1 Hz, the hosts' sweeps spread
evenly over each second as unsynchronised hosts would be. The topology goes with a host's
first sample and every minute after, as the collector sends it.

Each worker is ``corelane up --role worker`` (classifier, allocator, alerter and notifier
on one faust app; the workers are one consumer group and split the partitions, so the
hosts, among them).

Measured, from what is on the topics once the workers have stopped:

- **classification lag**: a process born at sweep k is first classifiable at sweep
  k + max(min_samples - 1, min_span_s) (from the settings; early tiers at k + 1), so its
  first classification on the topic answers that sweep: the lag is the classification's
  time minus that sweep's timestamp. Only processes born after ``--warmup`` count (the
  first sweeps judge every process at once);
- **plan latency**: from that first classification (a class change: the process had none)
  to the first decision for the same process with that tier;
- the CPU time of each worker process (user + system, from /proc) over the measured part,
  as a share of one core, and the broker's and this process's beside it;
- the publishers' own delay (sweep timestamp to the broker's acknowledgement), so that a
  late publisher is not taken for a slow worker.

A host is over the limit when the p99 of either lag passes 2 s or first classifications
go missing. Printed: a line per run, then per (hosts, workers) the median and spread over
the repeats, the hosts per worker each met the targets at, and the throughput ratio of
2 workers to 1.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from bench.harness import (ROOT, bench_config, bench_settings, cpu_seconds,  # noqa: E402
                           quantile, run_delay_seconds, running_broker, spread)
from bench.synthetic import FleetHost, fleet_hosts  # noqa: E402
from corelane.roles import agent_group  # noqa: E402
from pipeline.bus import Publisher, Stamper, ensure_topics, replay_topic, topic_types  # noqa: E402
from pipeline.events import Envelope, ProcessSamples  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

TARGET_S = 2.0


# --------------------------------------------------------------------------- the workers

@contextmanager
def workers(count: int, env: dict[str, str], folder: Path, own_sessions: bool = False
            ) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` workers (``corelane up --role worker``), each with its own home, database
    path and API port, their output in ``folder``/worker-K.log; stopped with SIGTERM (then
    SIGKILL) by their pids. ``own_sessions``: each in a session of its own, as separate
    services run (with autogroup scheduling the kernel shares CPU per session, so workers
    of one session split one share between them)."""
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        for k in range(count):
            home = folder / f"worker-{k}"
            home.mkdir(parents=True, exist_ok=True)
            wenv = {**env, "CORELANE_HOME": str(home), "CORELANE_DB": str(home / "w.duckdb"),
                    "CORELANE_API": f"127.0.0.1:{free_port()}"}
            cmd = [str(Path(sys.executable).with_name("corelane")), "up", "--role", "worker"]
            log = stack.enter_context(open(folder / f"worker-{k}.log", "wb"))
            procs.append(subprocess.Popen(cmd, env=wenv, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=ROOT, start_new_session=own_sessions))
        try:
            yield procs
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


async def wait_for_group(settings: Settings, members: int, procs: list[subprocess.Popen[bytes]],
                         timeout_s: float = 120.0) -> float:
    """Until the workers' consumer group is stable with ``members`` members; returns the
    seconds it took."""
    started = time.monotonic()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        while True:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited before its group formed")
            try:
                described = await admin.describe_consumer_groups([agent_group("worker", settings)])
                group = described[0].groups[0]
                state, have = group[2], len(group[5])
            except Exception:  # noqa: BLE001 - the coordinator may not be there yet
                state, have = "", 0
            if state == "Stable" and have == members:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the workers' group is {state or 'unknown'} with {have} of "
                                   f"{members} members after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- publishing

@dataclass
class Published:
    """What the fleet published: each host's sweep timestamps, in order, and the delay from
    a sweep's timestamp to the broker's acknowledgement."""
    sweep_ts: dict[str, list[float]] = field(default_factory=dict)
    ack_delay_s: list[float] = field(default_factory=list)
    rows: int = 0


async def publish_host(settings: Settings, host: FleetHost, t0: float, seconds: float,
                       out: Published) -> None:
    """One host at 1 Hz from ``t0`` for ``seconds``, through its own Publisher."""
    stamps = out.sweep_ts.setdefault(host.name, [])
    interval = settings.collector.interval_s
    async with Publisher(settings, Stamper(host.name)) as publisher:
        tick = 0
        while tick * interval < seconds:
            ts = t0 + tick * interval
            await asyncio.sleep(max(0.0, ts - time.time()))
            samples = host.fleet.sweep(interval)
            chunks = publisher.batch(ProcessSamples, samples, "samples", interval_s=interval)
            with_topology = tick % round(60 / interval) == 0
            events = [publisher.stamper.stamp(host.host_sample(with_topology), ts)]
            events += [publisher.stamper.stamp(part, ts) for part in chunks]
            await publisher.publish_many(events)
            out.ack_delay_s.append(time.time() - ts)
            stamps.append(ts)
            out.rows += len(samples)
            tick += 1


async def publish_fleet(settings: Settings, hosts: list[FleetHost], seconds: float) -> Published:
    """Every host at once, host i's sweeps i/N of a second after the first's."""
    out = Published()
    t0 = math.ceil(time.time()) + 1.0
    await asyncio.gather(*(publish_host(settings, h, t0 + i / len(hosts), seconds, out)
                           for i, h in enumerate(hosts)))
    return out


# --------------------------------------------------------------------------- the figures

async def read_back(settings: Settings, event_type: str) -> list[Envelope]:
    return [e async for e in replay_topic(settings, event_type,
                                          topic_types(settings, [event_type]))]


def due_offsets(settings: Settings) -> tuple[int, int]:
    """Sweeps after its birth at which a new process is first classifiable: (in full, early)."""
    c = settings.classifier
    interval = settings.collector.interval_s
    full = max(c.min_samples - 1, math.ceil(c.min_span_s / interval - 1e-9))
    early = max(c.early_min_samples - 1, math.ceil(c.early_min_span_s / interval - 1e-9))
    return full, early


@dataclass
class Lags:
    classification: list[float] = field(default_factory=list)
    due_ts: list[float] = field(default_factory=list)   # each classification's sweep
    plan: list[float] = field(default_factory=list)
    expected: int = 0          # processes born in the measured part, alive until judged
    missing: int = 0           # of those, never classified
    unplanned: int = 0         # classified, but no decision with that tier followed
    early_before_due: int = 0  # classified before the sweep they were due (must stay 0)


def measure_lags(settings: Settings, hosts: list[FleetHost], published: Published,
                 classifications: list[Envelope], decisions: list[Envelope],
                 warmup_sweeps: int) -> Lags:
    full, early = due_offsets(settings)
    early_tiers = set(settings.classifier.early_tiers)
    first: dict[tuple[str, int, int], tuple[float, str]] = {}
    for event in sorted(classifications, key=lambda e: e.ts):
        for c in event.data.items:
            first.setdefault((event.host, c.pid, c.start_time), (event.ts, c.tier))
    plans: dict[str, list[tuple[float, dict[tuple[int, int], str]]]] = defaultdict(list)
    for event in sorted(decisions, key=lambda e: e.ts):
        plans[event.host].append((event.ts, {(d.pid, d.start_time): d.tier
                                             for d in event.data.items if d.target == "process"}))
    lags = Lags()
    for host in hosts:
        stamps = published.sweep_ts[host.name]
        gone = host.fleet.gone   # churn replaces processes at random, young ones too
        for ident, born in host.fleet.born.items():
            if born < warmup_sweeps or born + full >= len(stamps):
                continue
            if gone.get(ident, len(stamps)) < born + full:
                continue  # gone before it could be judged
            lags.expected += 1
            got = first.get((host.name, *ident))
            if got is None:
                lags.missing += 1
                continue
            ts, tier = got
            due = born + full
            if tier in early_tiers and ts < stamps[due]:
                due = born + early
            if ts < stamps[due]:
                lags.early_before_due += 1
            lags.classification.append(ts - stamps[due])
            lags.due_ts.append(stamps[due])
            host_plans = plans.get(host.name, [])
            i = bisect.bisect_left(host_plans, ts, key=lambda p: p[0])
            follow = next((p_ts for p_ts, items in host_plans[i:]
                           if items.get(ident) == tier), None)
            if follow is None:
                lags.unplanned += 1
            else:
                lags.plan.append(follow - ts)
    return lags


@dataclass
class RunResult:
    hosts: int
    workers: int
    repeat: int
    lags: Lags
    worker_cpu: list[float]    # share of one core, each worker
    worker_wait: list[float]   # seconds per second each worker's threads waited for a CPU
    broker_cpu: float
    parent_cpu: float
    ack_p99: float | None
    rows: int
    group_s: float
    load: tuple[float, float, float]

    def halves(self) -> tuple[float | None, float | None]:
        """The classification lag's p99 over the first and the second half of the measured
        sweeps: a backlog that grows is over the limit, one that shrinks is the warm-up's."""
        pairs = sorted(zip(self.lags.due_ts, self.lags.classification))
        mid = len(pairs) // 2
        return (quantile([x for _, x in pairs[:mid]], 0.99),
                quantile([x for _, x in pairs[mid:]], 0.99))

    def passed(self) -> bool:
        c99, p99 = quantile(self.lags.classification, 0.99), quantile(self.lags.plan, 0.99)
        return (c99 is not None and p99 is not None and c99 <= TARGET_S and p99 <= TARGET_S
                and self.lags.missing == 0 and self.lags.unplanned == 0)

    def line(self) -> str:
        def q(xs: list[float]) -> str:
            if not xs:
                return "-"
            return "/".join(f"{quantile(xs, p):.2f}" for p in (0.5, 0.95, 0.99)) + \
                f" max {max(xs):.2f} (n={len(xs)})"
        halves = "/".join("-" if x is None else f"{x:.2f}" for x in self.halves())
        return (f"{self.hosts:>3} hosts {self.workers} worker(s) #{self.repeat + 1}: "
                f"classification lag p50/p95/p99 {q(self.lags.classification)} s (p99 first/"
                f"second half {halves}); plan latency "
                f"{q(self.lags.plan)} s; missing {self.lags.missing}/{self.lags.expected}, "
                f"unplanned {self.lags.unplanned}, early {self.lags.early_before_due}; worker CPU "
                f"{', '.join(f'{c * 100:.0f}%' for c in self.worker_cpu)} (waiting for a CPU "
                f"{', '.join(f'{c * 100:.0f}%' for c in self.worker_wait)}); broker "
                f"{self.broker_cpu * 100:.0f}%, publishers {self.parent_cpu * 100:.0f}%; "
                f"publish ack p99 {self.ack_p99 or 0:.3f} s; load {self.load[0]:.1f} -> "
                f"{'met' if self.passed() else 'NOT met'}")


async def delete_run_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        prefix = settings.kafka.topic_prefix
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def run_once(base_env: dict[str, str], folder: Path, broker_pid: int | None,
             hosts: list[FleetHost], workers_n: int, repeat: int, args: argparse.Namespace,
             run_no: int) -> RunResult:
    config = {"kafka": {"topic_prefix": f"fleet{run_no}.", "partitions": args.partitions},
              "classifier": {"snapshot_interval_s": 3600}}
    run_dir = folder / f"run-{run_no}"
    env = bench_config(base_env, run_dir, config)
    settings = bench_settings(env)
    asyncio.run(ensure_topics(settings))
    with workers(workers_n, env, run_dir, args.own_sessions) as procs:
        group_s = asyncio.run(wait_for_group(settings, workers_n, procs))
        time.sleep(2.0)

        async def publish_and_sample() -> tuple[Published, list[float], list[float], float,
                                                float]:
            task = asyncio.create_task(publish_fleet(settings, hosts, args.warmup + args.seconds))
            await asyncio.sleep(args.warmup + 1.0)
            t0, c0 = time.monotonic(), [cpu_seconds(p.pid) for p in procs]
            d0 = [run_delay_seconds(p.pid) for p in procs]
            b0 = cpu_seconds(broker_pid) if broker_pid else 0.0
            s0 = time.process_time()
            published = await task
            dt = time.monotonic() - t0
            shares = [(cpu_seconds(p.pid) - c) / dt for p, c in zip(procs, c0)]
            waits = [(run_delay_seconds(p.pid) - d) / dt for p, d in zip(procs, d0)]
            broker = ((cpu_seconds(broker_pid) - b0) / dt) if broker_pid else 0.0
            return published, shares, waits, broker, (time.process_time() - s0) / dt

        published, shares, waits, broker, parent = asyncio.run(publish_and_sample())
        time.sleep(args.drain)  # what the workers still owe
        load = os.getloadavg()
    classifications = asyncio.run(read_back(settings, "classifications"))
    decisions = asyncio.run(read_back(settings, "decisions"))
    warmup_sweeps = int(args.warmup)
    lags = measure_lags(settings, hosts, published, classifications, decisions, warmup_sweeps)
    asyncio.run(delete_run_topics(settings))
    if args.logs:
        for log in run_dir.glob("worker-*.log"):
            shutil.copy(log, Path(args.logs) / f"run-{run_no}-{log.name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return RunResult(len(hosts), workers_n, repeat, lags, shares, waits, broker, parent,
                     quantile(published.ack_delay_s, 0.99), published.rows, group_s, load)


def summarise(results: list[RunResult]) -> None:
    print("\nper (hosts, workers), median [min .. max] over the repeats:")
    by: dict[tuple[int, int], list[RunResult]] = defaultdict(list)
    for r in results:
        by[(r.hosts, r.workers)].append(r)
    limit: dict[int, int] = {}
    for (n, w), rs in sorted(by.items()):
        c99 = [x for r in rs if (x := quantile(r.lags.classification, 0.99)) is not None]
        p99 = [x for r in rs if (x := quantile(r.lags.plan, 0.99)) is not None]
        c50 = [x for r in rs if (x := quantile(r.lags.classification, 0.5)) is not None]
        p50 = [x for r in rs if (x := quantile(r.lags.plan, 0.5)) is not None]
        cpu = [sum(r.worker_cpu) for r in rs]
        wait = [max(r.worker_wait) for r in rs]
        per_host = [sum(r.worker_cpu) / n for r in rs]
        met = sum(r.passed() for r in rs)
        if met == len(rs):
            limit[w] = max(limit.get(w, 0), n)
        print(f"  {n:>3} hosts, {w} worker(s): classification lag p50 {spread(c50)} s, p99 "
              f"{spread(c99)} s; plan latency p50 {spread(p50)} s, p99 {spread(p99)} s; "
              f"workers' CPU {spread([c * 100 for c in cpu])}% of a core "
              f"({spread([c * 100 for c in per_host])}% per host), a worker waited for a CPU "
              f"up to {spread([c * 100 for c in wait])}% of the time; missing "
              f"{sum(r.lags.missing for r in rs)}, unplanned {sum(r.lags.unplanned for r in rs)}; "
              f"targets met in {met} of {len(rs)}")
    # Only runs that kept up did all the work in the measured time: a worker that fell
    # behind spent less CPU than the fleet asked of it.
    per_host_all = [sum(r.worker_cpu) / r.hosts for r in results
                    if r.hosts >= 10 and r.passed()]
    if per_host_all:
        per = statistics.median(per_host_all)
        print(f"workers' CPU per host (runs of 10 hosts or more that kept up): "
              f"{spread([x * 100 for x in per_host_all])}% of a core, so a worker with a core "
              f"of its own saturates at about {1 / per:.0f} hosts")
    for w, n in sorted(limit.items()):
        print(f"largest fleet that met both targets in every repeat with {w} worker(s): {n} "
              f"hosts ({n / w:.0f} hosts per worker)")
    if 1 in limit and 2 in limit:
        print(f"throughput ratio, 2 workers / 1 (largest fleet kept up with): "
              f"{limit[2] / limit[1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="5,10,20,40")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--procs", type=int, default=200)
    parser.add_argument("--churn", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="measured seconds of publishing, after the warm-up")
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--drain", type=float, default=6.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--logs", help="keep each run's worker logs in this folder")
    parser.add_argument("--own-sessions", action="store_true",
                        help="start each worker in a session of its own (see workers())")
    args = parser.parse_args()
    if args.warmup + args.seconds > 58:
        parser.error("--warmup + --seconds must stay under a minute: every process of the "
                     "first sweep would get its heartbeat classification at once after that")

    sizes = [int(x) for x in args.hosts.split(",")]
    counts = [int(x) for x in args.workers.split(",")]
    sessions = "each in its own session" if args.own_sessions else "in this session"
    print(f"workers: corelane up --role worker, {sessions}; {args.procs} processes per host, "
          f"{args.churn} replaced per host per sweep; {args.warmup:.0f} s warm-up, "
          f"{args.seconds:.0f} s measured; {args.partitions} "
          f"partitions; {os.cpu_count()} CPUs", flush=True)
    results: list[RunResult] = []
    run_no = 0
    with running_broker("corelane-bench-fleet-", heap_mb=768) as bench, \
            tempfile.TemporaryDirectory(prefix="corelane-fleet-runs-") as runs:
        broker_pid = bench.broker.read_pid()
        for repeat in range(args.repeats):
            for n in sizes:
                for w in counts:
                    hosts = fleet_hosts(n, procs=args.procs, seed=repeat + 1, churn=args.churn)
                    run_no += 1
                    result = run_once(bench.env, Path(runs), broker_pid, hosts, w,
                                      repeat, args, run_no)
                    results.append(result)
                    print(result.line(), flush=True)
    summarise(results)
    if args.json:
        Path(args.json).write_text(json.dumps([{
            "hosts": r.hosts, "workers": r.workers, "repeat": r.repeat,
            "classification_lag_s": r.lags.classification, "plan_latency_s": r.lags.plan,
            "due_ts": r.lags.due_ts,
            "missing": r.lags.missing, "unplanned": r.lags.unplanned,
            "expected": r.lags.expected, "worker_cpu": r.worker_cpu,
            "worker_wait": r.worker_wait,
            "broker_cpu": r.broker_cpu, "parent_cpu": r.parent_cpu, "load": r.load,
            "ack_p99_s": r.ack_p99} for r in results]))


if __name__ == "__main__":
    main()
