"""Reading topics back: one record to an event, the dead-letter path, and the replays an
agent rebuilds its state from on start."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.bus.publisher import Publisher
from pipeline.bus.topics import partitions_for
from pipeline.events import DeadLetter, Envelope, EventDecodeError, decode
from pipeline.kafka.clients import client_options
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Where to start reading each partition, given the consumer, the partitions and their ends.
StartsFn = Callable[[AIOKafkaConsumer, list[TopicPartition], dict[TopicPartition, int]],
                    Awaitable[dict[TopicPartition, int]]]


def read_record(record: ConsumerRecord, topic_types: Mapping[str, str]) -> Envelope:
    """Decode a record and check it belongs on its topic; raises EventDecodeError saying why.

    ``topic_types`` maps each topic read to the event type it carries.
    """
    event = decode(record.value)
    expected = topic_types.get(record.topic)
    if expected is not None and event.type != expected:
        raise EventDecodeError(f"a {event.type} event does not belong on {record.topic}, "
                               f"which carries {expected} events")
    return event


# The bytes of an unreadable message a dead-letter record keeps (base64 makes them 4/3 as
# many): enough to see what it was, and far under any broker's message limit.
DEAD_LETTER_PREFIX = 64 * 1024
_MAX_REASON = 2000
_MAX_KEY = 1024


def dead_letter_payload(record: ConsumerRecord, reason: str, reader: str) -> DeadLetter:
    """What ``reader`` keeps of an unreadable record: where, why, its size and sha256, and
    the first DEAD_LETTER_PREFIX bytes; never larger than about 90 KB, whatever it was."""
    raw = record.value or b""
    key = record.key.decode("utf-8", "replace")[:_MAX_KEY] if record.key else None
    return DeadLetter(topic=record.topic, partition=record.partition, offset=record.offset,
                      reason=reason[:_MAX_REASON], reader=reader, key=key, size=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest(),
                      payload_b64=base64.b64encode(raw[:DEAD_LETTER_PREFIX]).decode())


async def dead_letter(publisher: Publisher, record: ConsumerRecord, reason: str,
                      reader: str) -> Envelope:
    """Publish what ``reader`` keeps of an unreadable record to the dead-letter topic."""
    event = await publisher.publish(dead_letter_payload(record, reason, reader))
    counts = publisher.stats.dead_lettered
    counts[record.topic] = counts.get(record.topic, 0) + 1
    log.warning("%s: unreadable message on %s[%d]@%d sent to dead-letter: %s", reader,
                record.topic, record.partition, record.offset, reason[:300])
    return event


@contextlib.asynccontextmanager
async def _consumer_on(settings: Settings, event_type: str,
                       partitions: Collection[int] | None, reset: str
                       ) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer outside any group, assigned the partitions of one topic (of
    ``partitions`` only, when given; none may be left), connected as ``kafka.security``
    says."""
    parts = [tp for tp in await partitions_for(settings, [settings.topic(event_type)])
             if partitions is None or tp.partition in partitions]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset=reset,
                                **client_options(settings.kafka.security))
    await consumer.start()
    try:
        if parts:
            consumer.assign(parts)
        yield consumer, parts
    finally:
        await consumer.stop()


async def _offsets_since(consumer: AIOKafkaConsumer, parts: list[TopicPartition],
                         ends: dict[TopicPartition, int], since_s: float
                         ) -> dict[TopicPartition, int]:
    """Each partition's first offset of the last ``since_s`` seconds (its end if none)."""
    since = int((time.time() - since_s) * 1000)
    found = await consumer.offsets_for_times({tp: since for tp in parts})
    return {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in parts}


async def _read_range(settings: Settings, event_type: str, types: Mapping[str, str],
                      starts_of: StartsFn, partitions: Collection[int] | None = None
                      ) -> AsyncIterator[Envelope]:
    """Every readable event of one topic (of ``partitions`` only, when given) from the
    offsets ``starts_of(consumer, parts, ends)`` chooses, up to the topic's end as it is when
    called. Unreadable messages are skipped (the live agent dead-letters them when it gets
    there)."""
    async with _consumer_on(settings, event_type, partitions, "earliest") as (consumer, parts):
        if not parts:
            return
        ends = await consumer.end_offsets(parts)
        starts = await starts_of(consumer, parts, ends)
        # Explicit offsets: seek_to_beginning races the reset that assign() starts, and
        # lost it here about as often as it won.
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


async def replay_topic(settings: Settings, event_type: str, types: Mapping[str, str],
                       since_s: float | None = None, partitions: Collection[int] | None = None
                       ) -> AsyncIterator[Envelope]:
    """Every readable event of one topic, from ``since_s`` seconds ago (None: from its
    beginning) up to its end as it is when called: state an agent rebuilds on start (or, of
    ``partitions`` only, when it takes over the hosts on them)."""
    async def starts(consumer: AIOKafkaConsumer, parts: list[TopicPartition],
                     ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        if since_s is None:
            return await consumer.beginning_offsets(parts)
        return await _offsets_since(consumer, parts, ends, since_s)

    async for event in _read_range(settings, event_type, types, starts, partitions):
        yield event


async def read_tail(settings: Settings, event_type: str, types: Mapping[str, str],
                    span_s: float, partitions: Collection[int] | None = None
                    ) -> AsyncIterator[Envelope]:
    """The events of each partition of one topic (of ``partitions`` only, when given) from
    ``span_s`` seconds before that partition's newest message up to its end.

    The span is counted back from the newest message, not from now: a topic that has been
    quiet for a day (corelane was stopped) still gives its last events, which is what an
    agent needs to carry on where the previous run stopped.
    """
    async def starts(consumer: AIOKafkaConsumer, parts: list[TopicPartition],
                     ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        firsts = await consumer.beginning_offsets(parts)
        out = {}
        for tp in parts:
            if ends[tp] <= firsts[tp]:
                out[tp] = ends[tp]
                continue
            consumer.seek(tp, ends[tp] - 1)
            newest = await consumer.getone(tp)
            since = newest.timestamp - int(span_s * 1000)
            found = (await consumer.offsets_for_times({tp: since})).get(tp)
            out[tp] = found.offset if found is not None else firsts[tp]
        return out

    async for event in _read_range(settings, event_type, types, starts, partitions):
        yield event


async def follow_topic(settings: Settings, event_type: str, types: Mapping[str, str],
                       handle: Callable[[Envelope], Awaitable[None]], stop: asyncio.Event,
                       since_s: float = 0.0) -> None:
    """Hand every readable event of one topic, on every partition, to ``handle`` from
    ``since_s`` seconds ago until ``stop``: for what each member of a consumer group must
    see whichever partitions it holds (an operator's command for every host). Not a group
    member itself. Unreadable messages are skipped (the recorder dead-letters them)."""
    async with _consumer_on(settings, event_type, None, "latest") as (consumer, parts):
        ends = await consumer.end_offsets(parts)
        for tp, offset in (await _offsets_since(consumer, parts, ends, since_s)).items():
            consumer.seek(tp, offset)
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        event = read_record(record, types)
                    except EventDecodeError:
                        continue
                    try:
                        await handle(event)
                    except Exception as exc:  # noqa: BLE001 - one event, never the follower
                        log.warning("handling %s event %s failed, going on: %s: %s",
                                    event_type, event.id, type(exc).__name__, exc)
