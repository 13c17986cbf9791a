"""Checking a history against its topics: every message once, as one set of rows."""
from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import events as ev
from pipeline.bus import topic_partitions

# What makes a row unique within one event: a process, a container, or the event itself.
ROW_KEY = {"process_samples": "event_id, pid, start_time",
           "classifications": "event_id, pid, start_time",
           "container_samples": "event_id, container_id",
           "decisions": "event_id, target, pid, start_time, container_id",
           "enforcements": "event_id, target, pid, start_time, container_id"}


async def topic_ids(bootstrap: str, topic: str) -> list[str]:
    """Every message on a topic, read by a plain consumer to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(bootstrap, [topic])
        consumer.assign(parts)
        for tp in parts:
            await consumer.seek_to_beginning(tp)
        ends = await consumer.end_offsets(parts)
        ids: list[str] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        event = ev.decode(record.value)
                    except ev.EventDecodeError:
                        ids.append(f"unreadable@{record.offset}")
                        continue
                    # An event on a topic not its own is unreadable there, as to the readers.
                    belongs = topic.endswith("." + ev.EVENT_TYPES[event.type].topic)
                    ids.append(event.id if belongs else f"unreadable@{record.offset}")
        return ids
    finally:
        await consumer.stop()


async def inject(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"test")
    finally:
        await producer.stop()
