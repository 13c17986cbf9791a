"""The smallest agent, for tests of the agent contract on a real broker."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.contract import AgentStats, Handler, Position, Timer, event_health
from pipeline import events as ev
from pipeline.health import PartHealth


class LabelSink:
    """Keeps the labels it is given; one whose author is ``fail_on`` makes it fail on
    purpose."""
    name = "label-sink"

    def __init__(self, fail_on: str | None = None) -> None:
        self.stats = AgentStats()
        self.seen: list[ev.Envelope] = []
        self.fail_on = fail_on

    def handlers(self) -> list[Handler]:
        return [Handler("label", self.take)]

    def timers(self) -> list[Timer]:
        return []

    async def take(self, event: ev.Envelope, at: Position) -> None:
        if self.fail_on is not None and event.data.author == self.fail_on:
            raise RuntimeError("a handler failed")
        self.seen.append(event)

    async def warm_up(self) -> None: ...

    def close(self) -> None: ...

    def health(self, now: float) -> PartHealth:
        return event_health(self.stats, now, None)


def assigned_topics(app: Any) -> set[str]:
    """The topics a faust app's consumer has partitions of (none before it has started)."""
    try:
        return {tp.topic for tp in app.consumer.assignment()}
    except Exception:  # the consumer is not built until the app has started
        return set()


async def wait_given(app: Any, topic: str, running: asyncio.Task, timeout_s: float) -> None:
    """Until the group gives the app's consumer ``topic``; fails if it never does, or the
    app (``running``) stops first."""
    deadline = time.monotonic() + timeout_s
    while topic not in assigned_topics(app):
        assert time.monotonic() < deadline, "the agent was never given its topic"
        assert not running.done(), f"the faust app stopped: {running!r}"
        await asyncio.sleep(0.2)
