"""Publishing events: envelopes stamped per host, batches split to fit a message, and the
short-lived publish of a command (a label, a mode)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.events import Batch, Envelope, Payload, batched, encode, envelope
from pipeline.health import PartHealth, degraded, ok
from pipeline.settings import Settings
from pipeline.stats import Stats, counter, gauge, labelled, note

log = logging.getLogger(__name__)


class Stamper:
    """Wraps payloads in envelopes for one host, numbering each event type's stream."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._seq: dict[type, int] = {}

    def stamp(self, data: Payload, ts: float | None = None, host: str | None = None) -> Envelope:
        """``host`` names another host the event is about (a worker classifying for it)."""
        seq = self._seq.get(type(data), 0) + 1
        self._seq[type(data)] = seq
        return envelope(data, host=host or self.host, seq=seq, ts=ts)


class BrokerUnreachable(RuntimeError):
    """No broker answers at the configured address."""


class MessageTooLarge(ValueError):
    """An event whose encoding is over kafka.max_message_bytes."""


@dataclass
class BusStats(Stats):
    published: dict[str, int] = labelled("messages the broker took, by event type", "type")
    dead_lettered: dict[str, int] = labelled("unreadable messages sent to dead-letter, by the "
                                             "topic they came from", "topic")
    send_failures: int = counter("publishes the broker did not take")
    last_publish_ts: float | None = gauge("when the broker last took a message (epoch s)")
    last_failure_ts: float | None = gauge("when a publish last failed (epoch s)")
    last_failure: str | None = note("what the last failed publish said")


async def send_one(settings: Settings, payload: Any) -> Envelope:
    """Publish one event from a short-lived command (a label, a mode): checks that a broker
    answers first, so a stopped corelane is a clear error rather than a long retry."""
    from pipeline.bus.topics import ensure_topics
    from pipeline.kafka.broker import is_answering
    bootstrap = settings.kafka.bootstrap
    if not await asyncio.to_thread(is_answering, bootstrap, 5.0):
        raise BrokerUnreachable(f"no Kafka broker answers at {bootstrap} (CORELANE_KAFKA); "
                                f"is corelane running?")
    await ensure_topics(settings)
    async with Publisher(settings) as publisher:
        return await publisher.publish(payload)


class Publisher:
    """Publishes envelopes keyed by the host they are about (the envelope's ``host``, which
    is not this process's host when a worker classifies or plans for another), so that all
    of a host's events sit on one partition, and the worker that owns that partition owns
    the host. Splits batches until each fits a message."""

    def __init__(self, settings: Settings, stamper: Stamper | None = None) -> None:
        self.settings = settings
        self.stamper = stamper or Stamper(settings.host)
        self._producer: AIOKafkaProducer | None = None  # made in start(): needs the loop
        self.stats = BusStats()

    @property
    def sent(self) -> int:
        return sum(self.stats.published.values())

    async def start(self) -> None:
        kafka = self.settings.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            compression_type=None if kafka.compression == "none" else kafka.compression,
            max_request_size=kafka.max_message_bytes,
            linger_ms=5,
            acks="all",
            # a send retried after a broker stall (its first try was appended, its answer
            # lost) must not land twice: the broker drops the retry by its sequence number
            enable_idempotence=True,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        return self._producer

    async def __aenter__(self) -> "Publisher":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _encode(self, event: Envelope) -> bytes:
        raw = encode(event)
        limit = self.settings.kafka.max_message_bytes
        if len(raw) > limit:
            raise MessageTooLarge(f"{event.type} event {event.id} is {len(raw)} bytes, over "
                                  f"kafka.max_message_bytes={limit}")
        return raw

    def _took(self, events: Iterable[Envelope]) -> None:
        for event in events:
            self.stats.published[event.type] = self.stats.published.get(event.type, 0) + 1
        self.stats.last_publish_ts = time.time()

    def _failed(self, exc: BaseException) -> None:
        self.stats.send_failures += 1
        self.stats.last_failure_ts = time.time()
        self.stats.last_failure = f"{type(exc).__name__}: {exc}"

    async def send(self, event: Envelope) -> None:
        """Send one envelope and wait until the broker has it."""
        try:
            await self.producer.send_and_wait(self.settings.topic(event.type),
                                              self._encode(event), key=event.host.encode())
        except Exception as exc:
            self._failed(exc)
            raise
        self._took([event])

    async def publish(self, data: Payload, ts: float | None = None) -> Envelope:
        event = self.stamper.stamp(data, ts)
        await self.send(event)
        return event

    def batch(self, make: type[Batch], rows: list[Any], field: str, **fields: Any) -> list[Batch]:
        """One sweep/cycle/plan as chunk payloads that each fit in a message."""
        kafka = self.settings.kafka
        return batched(make, rows, kafka.chunk_rows, field, max_bytes=kafka.max_message_bytes,
                       **fields)

    async def publish_many(self, events: Iterable[Envelope]) -> int:
        """Send several envelopes concurrently (one produce round trip where they fit)."""
        events = list(events)
        try:
            futures = [await self.producer.send(self.settings.topic(e.type), self._encode(e),
                                                key=e.host.encode()) for e in events]
            await asyncio.gather(*futures)
        except Exception as exc:
            self._failed(exc)
            raise
        self._took(events)
        return len(futures)

    def encoded(self, events: Iterable[Envelope]) -> list[tuple[Envelope, bytes]]:
        """Each envelope with its bytes, for ``publish_each``; one that can never fit a
        message is dropped here, with an error, since sending it again cannot help."""
        out = []
        for event in events:
            try:
                out.append((event, self._encode(event)))
            except MessageTooLarge as exc:
                self._failed(exc)
                log.error("%s; dropped", exc)
        return out

    async def publish_each(self, items: Sequence[tuple[Envelope, bytes]]
                           ) -> list[tuple[Envelope, bytes]]:
        """Send several encoded envelopes concurrently; returns those the broker did not
        take (none when all went), so that a retry sends only those and nothing twice."""
        pending = []
        failed: list[tuple[Envelope, bytes]] = []
        for item in items:
            event, raw = item
            try:
                pending.append((item, await self.producer.send(
                    self.settings.topic(event.type), raw, key=event.host.encode())))
            except Exception as exc:  # noqa: BLE001 - reported per event, never raised
                self._failed(exc)
                failed.append(item)
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        taken = []
        for (item, _), result in zip(pending, results):
            if isinstance(result, BaseException):
                self._failed(result)
                failed.append(item)
            else:
                taken.append(item[0])
        if taken:
            self._took(taken)
        return failed

    def health(self, now: float) -> PartHealth:
        s = self.stats
        if s.last_failure_ts is not None and (s.last_publish_ts is None
                                              or s.last_failure_ts > s.last_publish_ts):
            return degraded(f"the broker at {self.settings.kafka.bootstrap} did not take the "
                            f"last message: {s.last_failure}")
        return ok()
