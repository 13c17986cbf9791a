"""The Kafka transport: topic creation, a batching publisher, and a reader that dead-letters.

Samples are produced with aiokafka directly (one message per chunk of a sweep): faust's
per-event cost is the limit at these rates (STACK.md), while its agents consume.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.events import (EVENT_TYPES, Batch, DeadLetter, Envelope, EventDecodeError,
                             Payload, batched, decode, encode, envelope)
from pipeline.metrics import DEAD_LETTERS, EVENTS_PUBLISHED
from pipeline.settings import Settings

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


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every corelane topic that does not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap,
                                request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in (settings.topic(name) for name in EVENT_TYPES) if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(t, num_partitions=settings.kafka.partitions, replication_factor=1)
             for t in missing])
        # The listing can lag a creation, and another instance may race us: a topic that
        # already exists is fine, any other refusal is not.
        created = []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                message = rest[0] if rest and rest[0] else f"error code {code}"
                raise KafkaTopicError(f"the broker at {settings.kafka.bootstrap} refused to "
                                      f"create topic {topic}: {message}")
        await _wait_for_leaders(admin, missing, timeout_s)
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str],
                            timeout_s: float) -> None:
    # A new topic's partitions elect leaders a moment after creation; producing before that
    # only earns retries and warnings.
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        if all(d["error_code"] == 0 and d["partitions"]
               and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaTopicError(f"topics {', '.join(topics)} have no partition leaders after "
                                  f"{timeout_s:.0f}s")
        await asyncio.sleep(0.1)


class BrokerUnreachable(RuntimeError):
    """No broker answers at the configured address."""


async def send_one(settings: Settings, payload: Any) -> Envelope:
    """Publish one event from a short-lived command (a label, a mode): checks that a broker
    answers first, so a stopped corelane is a clear error rather than a long retry."""
    from pipeline.kafka.broker import is_answering
    bootstrap = settings.kafka.bootstrap
    if not await asyncio.to_thread(is_answering, bootstrap, 5.0):
        raise BrokerUnreachable(f"no Kafka broker answers at {bootstrap} (CORELANE_KAFKA); "
                                f"is corelane running?")
    await ensure_topics(settings)
    async with Publisher(settings) as publisher:
        return await publisher.publish(payload)


async def replay_topic(settings: Settings, event_type: str, types: dict[str, str],
                       since_s: float | None = None) -> AsyncIterator[Envelope]:
    """Every readable event of one topic, from ``since_s`` seconds ago (None: from its
    beginning) up to its end as it is when called: state an agent rebuilds on start.
    Unreadable messages are skipped (the live agent dead-letters them when it gets there)."""
    bootstrap = settings.kafka.bootstrap
    parts = await topic_partitions(bootstrap, [settings.topic(event_type)])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        # Explicit offsets: seek_to_beginning races the reset that assign() starts, and
        # lost it here about as often as it won.
        if since_s is None:
            starts = await consumer.beginning_offsets(parts)
        else:
            since = int((time.time() - since_s) * 1000)
            found = await consumer.offsets_for_times({tp: since for tp in parts})
            starts = {tp: found[tp].offset if found.get(tp) is not None else ends[tp]
                      for tp in parts}
        for tp in parts:
            consumer.seek(tp, starts[tp])
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                        continue
                    try:
                        event = read_record(record, types)
                    except EventDecodeError:
                        continue
                    yield event
    finally:
        await consumer.stop()


class KafkaTopicError(RuntimeError):
    pass


async def topic_partitions(bootstrap: str, topics: Iterable[str],
                           timeout_s: float = 30.0) -> list[TopicPartition]:
    """Every partition of the given topics, asked of the broker itself.

    A consumer's own metadata can be older than a topic created a moment ago.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    missing = [d["topic"] for d in described if d["error_code"] != 0]
    if missing:
        raise KafkaTopicError(f"topics not found at {bootstrap}: {', '.join(missing)}")
    return [TopicPartition(d["topic"], p["partition"]) for d in described
            for p in sorted(d["partitions"], key=lambda p: p["partition"])]


class MessageTooLarge(ValueError):
    pass


class Publisher:
    """Publishes envelopes keyed by host, splitting batches until each fits a message."""

    def __init__(self, settings: Settings, stamper: Stamper | None = None) -> None:
        self.settings = settings
        self.stamper = stamper or Stamper(settings.host)
        self._producer: AIOKafkaProducer | None = None  # made in start(): needs the loop
        self._key = self.stamper.host.encode()
        self.sent = 0

    async def start(self) -> None:
        kafka = self.settings.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            compression_type=None if kafka.compression == "none" else kafka.compression,
            max_request_size=kafka.max_message_bytes,
            linger_ms=5,
            acks="all",
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

    async def send(self, event: Envelope) -> None:
        """Send one envelope and wait until the broker has it."""
        raw = encode(event)
        if len(raw) > self.settings.kafka.max_message_bytes:
            raise MessageTooLarge(f"{event.type} event {event.id} is {len(raw)} bytes, over "
                                  f"kafka.max_message_bytes={self.settings.kafka.max_message_bytes}")
        await self.producer.send_and_wait(self.settings.topic(event.type), raw, key=self._key)
        self.sent += 1
        EVENTS_PUBLISHED.labels(event.type).inc()

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
        futures = []
        for event in events:
            raw = encode(event)
            if len(raw) > self.settings.kafka.max_message_bytes:
                raise MessageTooLarge(f"{event.type} event {event.id} is {len(raw)} bytes")
            futures.append(await self.producer.send(self.settings.topic(event.type), raw,
                                                     key=self._key))
            EVENTS_PUBLISHED.labels(event.type).inc()
        await asyncio.gather(*futures)
        self.sent += len(futures)
        return len(futures)


def read_record(record: ConsumerRecord, topic_types: dict[str, str]) -> Envelope:
    """Decode a record and check it belongs on its topic; raises EventDecodeError saying why.

    ``topic_types`` maps each topic read to the event type it carries.
    """
    event = decode(record.value)
    expected = topic_types.get(record.topic)
    if expected is not None and event.type != expected:
        raise EventDecodeError(f"a {event.type} event does not belong on {record.topic}, "
                               f"which carries {expected} events")
    return event


def dead_letter_payload(record: ConsumerRecord, reason: str) -> DeadLetter:
    raw = record.value or b""
    return DeadLetter(topic=record.topic, partition=record.partition, offset=record.offset,
                      reason=reason,
                      key=record.key.decode("utf-8", "replace") if record.key else None,
                      payload=raw.decode("utf-8", "replace"))


async def dead_letter(publisher: Publisher, record: ConsumerRecord, reason: str) -> Envelope:
    """Publish an unreadable record whole to the dead-letter topic, with the reason."""
    event = await publisher.publish(dead_letter_payload(record, reason))
    DEAD_LETTERS.labels(record.topic).inc()
    log.warning("unreadable message on %s[%d]@%d sent to dead-letter: %s",
                record.topic, record.partition, record.offset, reason)
    return event


def topic_types(settings: Settings, event_types: Iterable[str]) -> dict[str, str]:
    return {settings.topic(t): t for t in event_types}


@dataclass
class Received:
    """One readable message and where it came from."""
    record: ConsumerRecord
    event: Envelope


class EventReader:
    """Reads corelane topics; what it cannot read goes to the dead-letter topic.

    A bad message never stops the reader: it is published whole to ``deadletter`` with the
    reason and skipped.
    """

    def __init__(self, settings: Settings, event_types: Iterable[str], group_id: str | None,
                 publisher: Publisher, from_beginning: bool = True,
                 **consumer_options: Any) -> None:
        self.settings = settings
        self.publisher = publisher
        self._topic_type = topic_types(settings, event_types)
        self._consumer = AIOKafkaConsumer(
            *self._topic_type,
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=group_id is not None,
            **consumer_options,
        )
        self.dead_lettered = 0

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def __aenter__(self) -> "EventReader":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        await dead_letter(self.publisher, record, reason)
        self.dead_lettered += 1

    async def __aiter__(self) -> AsyncIterator[Received]:
        async for record in self._consumer:
            try:
                event = read_record(record, self._topic_type)
            except EventDecodeError as exc:
                await self.dead_letter(record, str(exc))
                continue
            yield Received(record, event)

