"""A rebalance completes while agents that share a topic are busy.

Several of corelane's agents read one topic. faust counts a message once for each of them,
and a rebalance empties their buffers without counting the buffered ones down, so a
worker that waits for every message to be done before it lets its partitions go waits
for ever once one agent took a message another still held in its buffer: the fleet's
workers then never split the hosts. Here one agent is held in the middle of an event
while the other has taken the next one, and a second member joins the group."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agents.contract import Position, create_app, install
from corelane.runtime import run_agents
from pipeline import events as ev
from pipeline.bus import Publisher, ensure_topics
from support.broker_settings import settings_for
from support.label_sink import LabelSink, wait_given
from support.waiting import wait_for_async

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# The second member of the group: the same app with one agent on the same topic.
MEMBER = """
import asyncio, sys
from pathlib import Path
from agents.contract import create_app, install
from corelane.runtime import run_agents
from pipeline.bus import Publisher
from support.broker_settings import settings_for
from support.label_sink import LabelSink

async def main():
    cfg = settings_for(sys.argv[1], Path(sys.argv[3]), sys.argv[2])
    app = create_app(cfg, app_id=sys.argv[2] + "agents")
    stop = asyncio.Event()
    async with Publisher(cfg) as publisher:
        install(app, LabelSink(), cfg, publisher)
        await run_agents(app, stop)
asyncio.run(main())
"""


class HeldSink(LabelSink):
    """A label sink that holds its first event until ``release`` is set."""
    name = "held-sink"

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def take(self, event: ev.Envelope, at: Position) -> None:
        if not self.seen:
            self.holding.set()
            await self.release.wait()
        self.seen.append(event)


async def test_a_rebalance_completes_while_an_agent_holds_an_event_another_has_taken(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"e2e-rebalance-{os.getpid()}."
    cfg = settings_for(kafka_bootstrap, tmp_path / "first", prefix)
    await ensure_topics(cfg)
    labels = cfg.topic("label")
    held, quick = HeldSink(), LabelSink()
    app = create_app(cfg, app_id=f"{prefix}agents")
    assignments: list[float] = []

    async def on_assigned(_sender: object, *_: object, **__: object) -> None:
        assignments.append(time.monotonic())
    app.on_partitions_assigned.connect(on_assigned)

    stop = asyncio.Event()
    member: subprocess.Popen | None = None
    async with Publisher(cfg) as publisher:
        install(app, held, cfg, publisher)
        install(app, quick, cfg, publisher)
        running = asyncio.create_task(run_agents(app, stop))
        try:
            await wait_given(app, labels, running, 60)
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for seq in (1, 2):  # one host: one partition, one after the other
                    await producer.send_and_wait(labels, ev.encode(ev.envelope(
                        ev.Label(cls="idle", pid=seq, start_time=seq), host="h", seq=seq)),
                        key=b"h")
            finally:
                await producer.stop()
            # the held agent is in its first event, the other has taken both
            await wait_for_async("both agents taking the labels",
                                 lambda: held.holding.is_set() and len(quick.seen) == 2, 30)
            before, rebalances = len(assignments), app.rebalancing_count
            member = subprocess.Popen(
                [sys.executable, "-c", MEMBER, kafka_bootstrap, prefix, str(tmp_path / "second")],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # the rebalance begins while the event is held, and the held agent finishes it
            await wait_for_async(
                "the second member's joining",
                lambda: app.rebalancing_count > rebalances or member.poll() is not None, 60)
            await asyncio.sleep(1)
            held.release.set()
            await wait_for_async(
                "the rebalance after the second member joined",
                lambda: len(assignments) > before or member.poll() is not None, 60)
            assert member.poll() is None, f"the second member stopped: {member.stderr.read()}"
            assert not running.done(), f"the faust app stopped: {running!r}"
            # the held agent was not lost in the rebalance: it finishes its event
            await wait_for_async("the held agent finishing its event", lambda: held.seen, 10)
            assert held.seen[0].data.pid == 1
        finally:
            if member is not None:
                member.terminate()
                try:
                    member.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    member.kill()
                    member.wait()
            stop.set()
            await asyncio.wait_for(running, 60)
