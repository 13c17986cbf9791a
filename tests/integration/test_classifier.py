"""The classifier through the real broker: real processes of the workload generator, with
random names, classified by behaviour; labels outrank it; windows survive a restart."""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from bench.workloads import start_mix
from pipeline import events as ev
from pipeline.bus import topic_partitions
from support.corelane_instance import ROOT, Instance

pytestmark = pytest.mark.integration


class ClassificationLog:
    """Reads a classifications topic from the start and keeps what it said, as it arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: list[tuple[float, ev.Classification]] = []  # (time received, item)
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> "ClassificationLog":
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False)
        await self._consumer.start()
        parts = await topic_partitions(self.bootstrap, [self.topic])
        self._consumer.assign(parts)
        for tp in parts:
            await self._consumer.seek_to_beginning(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        for records in (await self._consumer.getmany(timeout_ms=200)).values():
            for record in records:
                for item in ev.decode(record.value).data.items:
                    self.seen.append((time.monotonic(), item))

    def latest(self, pid: int, start_time: int) -> ev.Classification | None:
        mine = [c for _, c in self.seen if (c.pid, c.start_time) == (pid, start_time)]
        return mine[-1] if mine else None

    async def wait_for(self, want: dict[tuple[int, int], str], timeout_s: float
                       ) -> dict[tuple[int, int], float]:
        """Until each identity's latest class is the wanted one; returns when each got it."""
        got: dict[tuple[int, int], float] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(got) < len(want):
            await self.poll()
            for (pid, start), cls in want.items():
                latest = self.latest(pid, start)
                if latest is not None and latest.cls == cls and (pid, start) not in got:
                    got[(pid, start)] = time.monotonic()
        return got


async def test_sleepers_and_burners_classified_by_behaviour(kafka_bootstrap: str,
                                                            tmp_path: Path) -> None:
    prefix = f"e2e-cls-{random.randrange(10**6)}."
    corelane = Instance(tmp_path, kafka_bootstrap, prefix,
                        collector="{interval_s: 1.0, containers: false}")
    corelane.start()
    try:
        corelane.wait_recording()
        async with ClassificationLog(kafka_bootstrap, prefix + "classifications") as log:
            seed = random.randrange(10**6)
            with start_mix({"latency_critical": 2, "compute_batch": 1}, seed=seed) as mix:
                started = time.monotonic()
                want = {(w.pid, w.start_time): w.label for w in mix.workloads
                        if w.role == "main"}
                got = await log.wait_for(want, timeout_s=30)
                missing = {k: (v, log.latest(*k)) for k, v in want.items() if k not in got}
                assert not missing, f"seed {seed}: not classified as expected: {missing}"
                # Both threading variants of the sleepers are among them (the generator
                # alternates), so a worker thread's wake-ups carry it too.
                slowest = max(got.values()) - started
                assert slowest <= 10.0, f"seed {seed}: took {slowest:.1f} s"

                # An explicit label outranks behaviour, at once.
                sleeper = next(w for w in mix.workloads if w.label == "latency_critical"
                               and w.role == "main")
                done = subprocess.run(
                    [sys.executable, "-m", "corelane", "label", "--pid", str(sleeper.pid),
                     "interactive"], cwd=ROOT, env=corelane.env, capture_output=True,
                    text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                key = (sleeper.pid, sleeper.start_time)
                assert await log.wait_for({key: "interactive"}, timeout_s=10), \
                    log.latest(*key)
                latest = log.latest(*key)
                assert latest is not None and latest.source == "label"

                # Killed and started again, it has the windows back at once: a fresh window
                # needs several sweeps before it can judge.
                corelane.kill()
                seen_before = len(log.seen)
                corelane.start()
                restarted = time.monotonic()
                burner = next(w for w in mix.workloads if w.label == "compute_batch"
                              and w.role == "main")
                while time.monotonic() - restarted < 30:
                    await log.poll()
                    again = [c for _, c in log.seen[seen_before:]
                             if (c.pid, c.start_time) == (burner.pid, burner.start_time)]
                    if again:
                        break
                assert again and again[0].cls == "compute_batch"
                # Said from the rebuilt window, before any new sweep could have filled one.
                assert "after restart" in again[0].reason, again[0]
                corelane.wait_recording()
    finally:
        if corelane.proc is not None and corelane.proc.poll() is None:
            corelane.terminate()
