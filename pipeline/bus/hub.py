"""Events as they are read, handed to whoever in this process follows them.

The recorder reads every corelane topic; it offers each event it reads to the hub, and the
hub hands it on to its followers (the API's live view, the live stream, the instance's own
stop on a shutdown command) without a second read of the topics. Offering never waits: a
follower that falls behind loses its backlog, is told how much it lost, and carries on
with what comes next, so a slow reader can never slow recording.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline.events import Envelope

# Events a follower may have waiting before its backlog is dropped.
DEFAULT_BACKLOG = 1000


@dataclass(eq=False)   # each follower is itself, whatever it holds
class Follower:
    """One reader of the hub: a bounded queue of events, and what it has lost."""
    types: frozenset[str] | None = None      # event types wanted (None: all)
    hosts: frozenset[str] | None = None      # hosts wanted (None: all)
    backlog: int = DEFAULT_BACKLOG
    dropped: int = 0                         # events dropped since the last ``take``
    queue: asyncio.Queue[Envelope] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.backlog)

    def wants(self, event: Envelope) -> bool:
        return ((self.types is None or event.type in self.types)
                and (self.hosts is None or event.host in self.hosts))

    def offer(self, event: Envelope) -> None:
        if not self.wants(event):
            return
        if self.queue.full():
            # Drop the whole backlog, not just the oldest: the reader is behind, and what
            # it needs is the present, with a word that it missed some.
            self.dropped += self.queue.qsize()
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def take(self, timeout_s: float | None = None) -> tuple[int, Envelope | None]:
        """(events dropped since the last take, the next event or None on timeout)."""
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout_s)
        except asyncio.TimeoutError:
            event = None
        dropped, self.dropped = self.dropped, 0
        return dropped, event


class EventHub:
    """Hands every offered event to the followers that want it, and to plain callbacks."""

    def __init__(self) -> None:
        self._followers: set[Follower] = set()
        self._callbacks: list[Callable[[Envelope], None]] = []

    def follow(self, types: Iterable[str] | None = None, hosts: Iterable[str] | None = None,
               backlog: int = DEFAULT_BACKLOG) -> Follower:
        follower = Follower(frozenset(types) if types else None,
                            frozenset(hosts) if hosts else None, backlog)
        self._followers.add(follower)
        return follower

    def leave(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def on_event(self, callback: Callable[[Envelope], None]) -> None:
        """Call ``callback`` with every event, in the reader's task: it must be quick."""
        self._callbacks.append(callback)

    @property
    def followers(self) -> int:
        return len(self._followers)

    def offer(self, event: Envelope) -> None:
        for callback in self._callbacks:
            callback(event)
        for follower in tuple(self._followers):
            follower.offer(event)
