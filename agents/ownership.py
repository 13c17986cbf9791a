"""Which hosts a worker owns, and the hand-over of a host's state when its partition moves.

Every event about a host is keyed by the host's id, so each of a host's streams sits on
one partition of its topic, the same partition number on every topic (Kafka's default
partitioner, murmur2 of the key, as aiokafka and the Java client compute it). faust gives
a worker the same partition numbers of every topic its agents read (they are
co-partitioned: same count, same subscribers), so owning partition ``p`` of the samples
topic means owning every host whose id hashes to ``p``: its samples, its classifications
and its plans arrive at that worker and at no other.

When the group rebalances (a worker died or joined), ``follow_partitions`` tells each part
that keeps per-host state which partitions it lost (it forgets those hosts, so two workers
never plan one host) and which it gained (it rebuilds those hosts' state from the topics
before their first event is handed to it).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

from agents.contract import AgentStats, Handler, Position, keep_going
from pipeline.bus import follow_topic, read_tail, topic_types
from pipeline.events import Envelope
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def partition_of(host: str, partitions: int) -> int:
    """The partition a host's events land on (the producer's default partitioner)."""
    return (murmur2(host.encode()) & 0x7FFFFFFF) % partitions


class Ownership:
    """The partitions assigned to this worker, and so the hosts it owns."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.owned: frozenset[int] = frozenset()
        self.suspended: frozenset[int] = frozenset()   # revoked, until the new assignment
        self.pending: frozenset[int] = frozenset()     # gained, until their state is rebuilt
        self.rebalances = 0

    def owns(self, host: str) -> bool:
        """Whether this worker judges and plans ``host`` now: not while its partition is
        revoked (an event still in a buffer must not make a plan another worker makes),
        nor while its state is being rebuilt (faust may resume the stream before that is
        done, and a plan made from half the state would move the host's processes)."""
        p = partition_of(host, self.partitions)
        return p in self.owned and p not in self.suspended and p not in self.pending

    def revoke(self, partitions: Iterable[int]) -> None:
        self.suspended = self.suspended | frozenset(partitions)

    def hosts_in(self, hosts: Iterable[str], partitions: Iterable[int]) -> list[str]:
        """Those of ``hosts`` whose events land on one of ``partitions``."""
        wanted = set(partitions)
        return [h for h in hosts if partition_of(h, self.partitions) in wanted]

    def reassign(self, assigned: Iterable[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Take a new assignment; returns (partitions gained, partitions lost). The gained
        are pending until ``rebuilt``."""
        new = frozenset(assigned)
        gained, lost = new - self.owned, self.owned - new
        self.owned, self.suspended, self.pending = new, frozenset(), gained
        self.rebalances += 1
        return gained, lost

    def rebuilt(self) -> None:
        """The gained partitions' hosts have their state: their events count from now."""
        self.pending = frozenset()


class OwnsHosts:
    """For an agent whose state is per host (``hosts``): which hosts are its own. Without
    ``ownership`` (one process for every host) all of them are."""
    ownership: Ownership | None
    hosts: dict[str, Any]

    def mine(self, host: str) -> bool:
        """Whether ``host`` is this agent's to judge or plan now."""
        return self.ownership is None or self.ownership.owns(host)

    def hosts_on(self, partitions: Iterable[int]) -> list[str]:
        """The hosts it holds state of whose events land on ``partitions``."""
        assert self.ownership is not None, "only a worker of a group hands hosts over"
        return self.ownership.hosts_in(list(self.hosts), partitions)


async def read_tails(settings: Settings, partitions: frozenset[int],
                     spans: dict[str, float]) -> dict[str, list[Envelope]]:
    """The tail of each topic of ``spans`` (event type: seconds before its newest message)
    on ``partitions``, read side by side: what a worker taking hosts over rebuilds from."""
    async def tail(event_type: str, span_s: float) -> list[Envelope]:
        return [e async for e in read_tail(settings, event_type,
                                           topic_types(settings, [event_type]), span_s,
                                           partitions=partitions)]
    read = await asyncio.gather(*(tail(t, span) for t, span in spans.items()))
    return dict(zip(spans, read))


class HandsOver(Protocol):
    """A part whose state is per host: it forgets hosts it lost and rebuilds those gained."""
    name: str

    def release(self, partitions: frozenset[int]) -> None: ...

    async def take_over(self, partitions: frozenset[int]) -> None: ...


def follow_partitions(app: Any, settings: Settings, ownership: Ownership,
                      parts: Sequence[HandsOver]) -> None:
    """On every assignment faust makes, hand the hosts of the partitions that moved: the
    lost are released first, then the gained are rebuilt, part by part in the order of
    ``parts`` (upstream first: each rebuilds from what those before it said). faust may
    resume a gained partition's stream before this returns (with no tables its recovery is
    done at once), so the gained stay pending, their events ignored, until every part has
    rebuilt them."""
    topic = settings.topic("process_samples")

    async def on_assigned(_sender: Any, assigned: Iterable[Any], **_: Any) -> None:
        gained, lost = ownership.reassign(tp.partition for tp in assigned if tp.topic == topic)
        if not gained and not lost:
            return
        log.info("partitions of %s: now %s (gained %s, lost %s)", topic,
                 sorted(ownership.owned) or "none", sorted(gained) or "none",
                 sorted(lost) or "none")
        for part in parts:
            if lost:
                with keep_going(f"{part.name}: releasing partitions {sorted(lost)}"):
                    part.release(lost)

        try:
            # One after the other, upstream first: the classifier says its rebuilt classes
            # while it takes over, and the allocator, still pending then, would drop them
            # and plan the host's processes as unclassified until their next change; after
            # it, the allocator finds them in the tail it reads.
            for part in parts if gained else ():
                # an exception here would crash the whole app: the part starts cold instead
                with keep_going(f"{part.name}: taking over partitions {sorted(gained)}"):
                    await part.take_over(gained)
        finally:
            ownership.rebuilt()

    async def on_revoked(_sender: Any, revoked: Iterable[Any], **_: Any) -> None:
        ownership.revoke(tp.partition for tp in revoked if tp.topic == topic)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)


class Broadcasting(Protocol):
    """A part some of whose events every worker must see, whichever partitions it holds:
    an operator's command for every host, a label by pattern. They are keyed by the host
    that sent them, so a group would hand them to one worker only."""
    name: str
    stats: AgentStats

    def broadcasts(self) -> Sequence[Handler]: ...


async def follow_broadcasts(settings: Settings, part: Broadcasting, stop: asyncio.Event,
                            since_s: float = 30.0) -> None:
    """Each of the part's broadcast handlers on every partition of its topic, until
    ``stop``. It starts ``since_s`` back, so that nothing published between the part's
    warm-up and this start is missed (taking a command again is harmless: the last wins)."""
    async def follow(handler: Handler) -> None:
        topic = settings.topic(handler.event_type)

        async def handle(event: Envelope) -> None:
            with keep_going(f"{part.name} on broadcast {event.type} {event.id}", part.stats):
                await handler.handle(event, Position(topic, -1, -1))
            part.stats.events += 1
            part.stats.last_event_ts = event.ts

        await follow_topic(settings, handler.event_type,
                           topic_types(settings, [handler.event_type]), handle, stop,
                           since_s=since_s)

    await asyncio.gather(*(follow(h) for h in part.broadcasts()))
