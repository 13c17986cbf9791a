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

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

from agents.contract import keep_going
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
        self.rebalances = 0

    def owns(self, host: str) -> bool:
        return partition_of(host, self.partitions) in self.owned

    def hosts_in(self, hosts: Iterable[str], partitions: Iterable[int]) -> list[str]:
        """Those of ``hosts`` whose events land on one of ``partitions``."""
        wanted = set(partitions)
        return [h for h in hosts if partition_of(h, self.partitions) in wanted]

    def reassign(self, assigned: Iterable[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Take a new assignment; returns (partitions gained, partitions lost)."""
        new = frozenset(assigned)
        gained, lost = new - self.owned, self.owned - new
        self.owned = new
        self.rebalances += 1
        return gained, lost


class HandsOver(Protocol):
    """A part whose state is per host: it forgets hosts it lost and rebuilds those gained."""
    name: str

    def release(self, partitions: frozenset[int]) -> None: ...

    async def take_over(self, partitions: frozenset[int]) -> None: ...


def follow_partitions(app: Any, settings: Settings, ownership: Ownership,
                      parts: Sequence[HandsOver]) -> None:
    """On every assignment faust makes, hand the hosts of the partitions that moved: the
    lost are released first, then the gained are rebuilt, before faust resumes the streams
    (it awaits this signal while their partitions are paused)."""
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
        for part in parts:
            if gained:
                # an exception here would crash the whole app: the part starts cold instead
                with keep_going(f"{part.name}: taking over partitions {sorted(gained)}"):
                    await part.take_over(gained)

    app.on_partitions_assigned.connect(on_assigned)
