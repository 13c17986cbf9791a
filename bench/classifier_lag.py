"""How far the classifier agent falls behind 1,000 processes published at 1 Hz.

    .venv/bin/python bench/classifier_lag.py [--procs 1000] [--seconds 600] [--every 10]

Starts a real single-node broker (free loopback ports, data in a temporary folder) and runs
the classifier agent alone in its own process: a faust app from ``create_app`` with only
``ClassifierAgent`` installed, run with ``faust_app_running`` until SIGTERM, publishing its
classifications through a ``Publisher``. Once the agent's consumer has its partitions, the
parent publishes one host sample and one ``--procs``-process sweep (in chunks, as the
collector does) every second, and measures the lag two ways:

- in messages, every ``--every`` seconds: end offsets of the process samples topic minus
  the offsets the agent's consumer group committed. faust commits what its agents have
  finished every ``broker_commit_interval`` (2.8 s by default), so this figure trails what
  was really consumed by up to that long (about 12 messages at 4 messages a second); the
  offset the agent itself last finished, reported by the child every second, gives the
  fresher figure beside it;
- in seconds, for every sample batch: from the sweep's timestamp to the moment the agent
  had published that batch's classifications (or decided it had none to publish). A
  stalled agent shows as the delay of the batches it finally reaches, and the age of the
  newest batch it finished is reported too.

Printed: a line per minute (max lag in messages, committed and processed; max delay in
seconds; the agent's CPU share of one core; classifications published), then the run's
maxima, whether the lag stayed bounded (first against last minute, and the fitted trend),
the agent's CPU share over the run, and the load average before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from agents.classifier import ClassifierAgent  # noqa: E402
from bench.harness import (bench_settings, child_process, cpu_seconds,  # noqa: E402
                           publish_sweeps, running_broker)
from corelane.runtime import run_to_end  # noqa: E402
from pipeline.bus import Publisher, topic_partitions  # noqa: E402
from pipeline.events import Envelope  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

REPORT_EVERY_S = 1.0


def app_id(settings: Settings) -> str:
    # faust's consumer group is the app id; the same one `corelane up` uses.
    return settings.kafka.topic_prefix + "agents"


# --------------------------------------------------------------------------- the child

class TimedClassifierAgent(ClassifierAgent):
    """The classifier agent, noting when each sample batch's classifications went out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_ts: float | None = None
        self.delays: list[float] = []        # per batch, since the last report
        self.all_delays: list[float] = []
        self.newest_ts = 0.0

    def on_samples(self, event: Envelope) -> Any:
        result = super().on_samples(event)
        self._batch_ts = event.ts
        return result

    async def _publish(self, host: str, result: Any) -> None:
        await super()._publish(host, result)
        if self._batch_ts is not None:  # warm_up publishes without a live batch
            delay = time.time() - self._batch_ts
            self.delays.append(delay)
            self.all_delays.append(delay)
            self.newest_ts = max(self.newest_ts, self._batch_ts)
            self._batch_ts = None


async def report(agent: TimedClassifierAgent, app: Any, topic: str,
                 stop: asyncio.Event) -> None:
    """A JSON line a second on stdout: what the agent finished since the last line."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), REPORT_EVERY_S)
        except asyncio.TimeoutError:
            pass
        try:
            assigned = any(tp.topic == topic for tp in app.consumer.assignment())
        except Exception:  # the consumer is not built until the app has started
            assigned = False
        delays, agent.delays = agent.delays, []
        print(json.dumps({
            "t": time.time(), "assigned": assigned, "batches": len(delays),
            "max_delay": max(delays, default=None), "newest_ts": agent.newest_ts or None,
            "last_offset": agent.last_offset, **agent.stats.to_json()}), flush=True)


async def run_classifier_only() -> None:
    """The child: the classifier agent and nothing else, until SIGTERM."""
    from agents.contract import create_app, install
    from corelane.runtime import run_agents

    settings = bench_settings(dict(os.environ))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    app = create_app(settings, app_id=app_id(settings))
    async with Publisher(settings) as publisher:
        agent = TimedClassifierAgent(settings, publisher)
        install(app, agent, settings, publisher)
        await agent.warm_up()
        reporter = asyncio.create_task(
            report(agent, app, settings.topic("process_samples"), stop))
        await run_agents(app, stop)
        await reporter
    delays = sorted(agent.all_delays)
    print(json.dumps({"final": True, **agent.stats.to_json(), "batches": len(delays),
                      "p50_delay": delays[len(delays) // 2] if delays else None,
                      "p99_delay": delays[int(len(delays) * 0.99)] if delays else None,
                      "max_delay": delays[-1] if delays else None}), flush=True)


# --------------------------------------------------------------------------- the parent

@dataclass
class Probe:
    """One lag measurement."""
    t: float
    end: int                     # messages on the topic
    committed: int | None        # the group's committed offsets (None: nothing committed yet)
    processed: int | None        # offsets the agent last reported finished (+1)
    committed_age_s: float       # age of the oldest message not committed
    cpu_s: float


@dataclass
class Run:
    reports: list[dict[str, Any]] = field(default_factory=list)  # the child's lines
    probes: list[Probe] = field(default_factory=list)
    sweep_ts: list[float] = field(default_factory=list)
    sweep_end: list[int] = field(default_factory=list)           # cumulative messages
    final: dict[str, Any] | None = None


def read_reports(stdout: IO[str], run: Run) -> None:
    for line in stdout:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("final"):
            run.final = item
        else:
            run.reports.append(item)


class LagProbe:
    """Reads the group's committed offsets and the topic's end offsets."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.bootstrap = settings.kafka.bootstrap
        self.topic = settings.topic("process_samples")
        self.group = group
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False)

    async def __aenter__(self) -> "LagProbe":
        self.parts = await topic_partitions(self.bootstrap, [self.topic])
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def offsets(self) -> tuple[int, int | None]:
        """(end, committed) summed over the topic's partitions."""
        ends = await self.consumer.end_offsets(self.parts)
        got = await self.admin.list_consumer_group_offsets(self.group, partitions=self.parts)
        committed = [got[tp].offset for tp in self.parts if tp in got and got[tp].offset >= 0]
        return sum(ends.values()), (sum(committed) if committed else None)


def age_of_message(run: Run, index: int, end: int, now: float) -> float:
    """Age of message ``index`` (its sweep's timestamp); 0 when it is not published yet.
    Offsets count from 0 because this run is the topic's only producer."""
    if index >= end:
        return 0.0
    k = bisect.bisect_right(run.sweep_end, index)
    return now - run.sweep_ts[k] if k < len(run.sweep_ts) else 0.0


async def probe_once(probe: LagProbe, run: Run, pid: int) -> Probe:
    end, committed = await probe.offsets()
    now = time.time()
    last = run.reports[-1]["last_offset"] if run.reports else None
    return Probe(t=now, end=end, committed=committed,
                 processed=None if last is None else last + 1,
                 committed_age_s=age_of_message(run, committed or 0, end, now),
                 cpu_s=cpu_seconds(pid))


@dataclass
class Minute:
    index: int
    lag_committed: int | None
    lag_processed: int | None
    committed_age_s: float
    max_delay_s: float | None
    batches: int
    cpu_share: float
    classifications: int


def summarise_minute(run: Run, index: int, t0: float) -> Minute:
    lo, hi = t0 + index * 60, t0 + (index + 1) * 60
    probes = [p for p in run.probes if lo <= p.t < hi]
    prev = next((p for p in reversed(run.probes) if p.t <= lo), None)
    reports = [r for r in run.reports if lo <= r["t"] < hi]
    before = [r for r in run.reports if r["t"] < lo]
    lags_c = [p.end - p.committed for p in probes if p.committed is not None]
    # A report can be newer than the end offsets read just before it: never below 0.
    lags_p = [max(0, p.end - p.processed) for p in probes if p.processed is not None]
    delays = [r["max_delay"] for r in reports if r["max_delay"] is not None]
    cpu = 0.0
    if probes and prev is not None and probes[-1].t > prev.t:
        cpu = (probes[-1].cpu_s - prev.cpu_s) / (probes[-1].t - prev.t)
    made = (reports[-1]["classifications"] if reports else 0) - (
        before[-1]["classifications"] if before else 0)
    return Minute(index, max(lags_c, default=None), max(lags_p, default=None),
                  max((p.committed_age_s for p in probes), default=0.0),
                  max(delays, default=None), sum(r["batches"] for r in reports), cpu,
                  max(made, 0))


def fmt_minute(m: Minute) -> str:
    def opt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)
    return (f"minute {m.index + 1:>2}: lag committed {opt(m.lag_committed, 'd'):>3} msgs "
            f"(oldest uncommitted {m.committed_age_s:4.1f} s), processed "
            f"{opt(m.lag_processed, 'd'):>3} msgs; max delay {opt(m.max_delay_s, '.2f')} s "
            f"over {m.batches} batches; CPU {m.cpu_share * 100:4.1f}% of a core; "
            f"{m.classifications} classifications")


async def measure(settings: Settings, procs: int, seconds: float, every: float, pid: int,
                  run: Run) -> tuple[list[Minute], Probe, Probe, Probe, int]:
    """Publish for ``seconds`` while probing every ``every`` s; returns the minutes, the
    first probe, the one at the end of publishing and one after the agent drained."""
    async with LagProbe(settings, app_id(settings)) as probe:
        def on_sweep(tick: int, ts: float, messages: int) -> None:
            run.sweep_ts.append(ts)
            run.sweep_end.append((run.sweep_end[-1] if run.sweep_end else 0) + messages)

        first = await probe_once(probe, run, pid)
        run.probes.append(first)
        t0 = first.t
        minutes: list[Minute] = []
        done = asyncio.Event()

        async def probing() -> None:
            tick = 1
            while True:
                try:  # publishing's end stops the probing at once, not at its next tick
                    await asyncio.wait_for(done.wait(), max(0.0, t0 + tick * every - time.time()))
                    return
                except asyncio.TimeoutError:
                    pass
                run.probes.append(await probe_once(probe, run, pid))
                tick += 1
                index = int((run.probes[-1].t - t0) // 60)
                if index > len(minutes):  # a minute has ended: say how it went
                    minute = summarise_minute(run, len(minutes), t0)
                    minutes.append(minute)
                    print(fmt_minute(minute), flush=True)

        prober = asyncio.create_task(probing())
        rows = await publish_sweeps(settings, procs, seconds, on_sweep)
        done.set()
        await prober
        at_end = await probe_once(probe, run, pid)
        run.probes.append(at_end)
        if len(minutes) * 60 < at_end.t - t0 - 1:  # the last, possibly short, minute
            minute = summarise_minute(run, len(minutes), t0)
            minutes.append(minute)
            print(fmt_minute(minute), flush=True)
        # Give the agent the commit interval and a little more to finish what it has.
        drained = at_end
        deadline = time.time() + 15
        while time.time() < deadline and (drained.committed or 0) < drained.end:
            await asyncio.sleep(1.0)
            drained = await probe_once(probe, run, pid)
    return minutes, first, at_end, drained, rows


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y), in y per minute."""
    if len(points) < 2:
        return 0.0
    ts = [t for t, _ in points]
    ys = [y for _, y in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_to_end(run_classifier_only())
        return

    load_before = os.getloadavg()
    run = Run()
    with running_broker("corelane-bench-classifier-") as bench:
        log_path = bench.tmp / "agent.log"
        with open(log_path, "w") as log, child_process(__file__, bench.env, stderr=log) as child:
            assert child.stdout is not None
            reader = threading.Thread(target=read_reports, args=(child.stdout, run), daemon=True)
            reader.start()
            # Publishing before the agent's consumer has its partition would lose the first
            # sweeps to auto_offset_reset=latest.
            deadline = time.time() + 120
            while not (run.reports and run.reports[-1]["assigned"]):
                if time.time() > deadline or child.poll() is not None:
                    raise SystemExit(f"the agent did not get its partitions:\n"
                                     f"{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            time.sleep(2.0)
            print(f"classifier agent pid {child.pid}; publishing {args.procs} processes at "
                  f"1 Hz for {args.seconds:.0f} s, lag probed every {args.every:.0f} s",
                  flush=True)
            minutes, first, at_end, drained, rows = asyncio.run(
                measure(bench.settings, args.procs, args.seconds, args.every, child.pid, run))
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
            reader.join(timeout=10)
        agent_log = log_path.read_text().splitlines()
    if child.returncode != 0 or run.final is None:
        print("the agent did not stop cleanly; the end of its log:", *agent_log[-30:], sep="\n")

    wall = at_end.t - first.t
    share = (at_end.cpu_s - first.cpu_s) / wall
    messages = run.sweep_end[-1] if run.sweep_end else 0
    lags_c = [p.end - p.committed for p in run.probes if p.committed is not None]
    lags_p = [max(0, p.end - p.processed) for p in run.probes if p.processed is not None]
    newest_age = max((r["t"] - r["newest_ts"] for r in run.reports
                      if r["newest_ts"] is not None and r["t"] <= at_end.t), default=0.0)
    delays = [(r["t"], r["max_delay"]) for r in run.reports
              if r["max_delay"] is not None and r["t"] <= at_end.t]
    full = [m for m in minutes if m.max_delay_s is not None]
    print(f"published: {len(run.sweep_ts)} sweeps, {rows} process rows in {messages} messages "
          f"(topic end offset {at_end.end})")
    print(f"max lag: {max(lags_c, default=0)} messages committed, {max(lags_p, default=0)} "
          f"processed; oldest uncommitted message at most "
          f"{max(p.committed_age_s for p in run.probes):.1f} s old")
    if run.final is not None and run.final["batches"]:
        f = run.final
        print(f"delay from sweep to classified, per batch ({f['batches']} batches): median "
              f"{f['p50_delay']:.3f} s, p99 {f['p99_delay']:.3f} s, max {f['max_delay']:.3f} s; "
              f"newest batch classified at most {newest_age:.2f} s old (sweeps are 1 s apart)")
    if full:
        a, b = full[0], full[-1]
        slope = slope_per_minute(delays)
        bounded = (b.max_delay_s <= a.max_delay_s + 0.5  # type: ignore[operator]
                   and slope * wall / 60 < 0.5)
        print(f"first minute: max delay {a.max_delay_s:.2f} s, lag {a.lag_committed} msgs "
              f"committed / {a.lag_processed} processed; last minute: max delay "
              f"{b.max_delay_s:.2f} s, lag {b.lag_committed} / {b.lag_processed}; trend "
              f"{slope * 1000:+.1f} ms per minute -> "
              f"{'bounded (no upward trend)' if bounded else 'NOT bounded'}")
    print(f"at the end of publishing: {at_end.end - (at_end.committed or 0)} messages not "
          f"committed; {drained.t - at_end.t:.0f} s later: "
          f"{drained.end - (drained.committed or 0)}")
    print(f"agent CPU: {at_end.cpu_s - first.cpu_s:.1f} s over {wall:.0f} s = "
          f"{share * 100:.1f}% of one core")
    if run.final is not None:
        f = run.final
        print(f"agent: {f['sweeps']} sample batches classified, {f['classifications']} "
              f"classifications published, {f['learned']} windows learned, "
              f"{f['alerts']} alerts")
    warnings = [line for line in agent_log if "WARN" in line.upper() or "ERROR" in line.upper()]
    print(f"agent log: {len(agent_log)} lines, {len(warnings)} warnings/errors",
          *warnings[:5], sep="\n  ")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
