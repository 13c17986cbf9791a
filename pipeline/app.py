"""The faust application every agent of corelane joins.

Topics carry raw bytes: events are decoded with ``pipeline.events.decode`` so that a message
that cannot be read goes to the dead-letter topic with its reason instead of stopping an
agent inside faust's own deserializer.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import faust

from pipeline.bus import Publisher, dead_letter, read_record
from pipeline.events import EVENT_TYPES, Envelope, EventDecodeError
from pipeline.settings import Settings


def create_app(settings: Settings, app_id: str = "corelane", **options: object) -> faust.App:
    """A faust app on the configured broker, with web server off and one topic per event type."""
    app = faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap.split(",")],
        web_enabled=False,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.home_path / "faust"),
        # Agents restart after a crash faster than the default minute-long session expires.
        broker_session_timeout=settings.kafka.group_session_timeout_s,
        broker_heartbeat_interval=settings.kafka.group_session_timeout_s / 3,
        broker_rebalance_timeout=settings.kafka.group_session_timeout_s,
        consumer_auto_offset_reset="latest",
        **options,
    )
    app.corelane_topics = {  # type: ignore[attr-defined]
        name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                        partitions=settings.kafka.partitions)
        for name in EVENT_TYPES
    }
    return app


async def decoded(stream: faust.StreamT, topic_types: dict[str, str],
                  publisher: Publisher) -> AsyncIterator[Envelope]:
    """The envelopes of an agent's stream; a message that cannot be read goes to the
    dead-letter topic with the reason and the agent carries on."""
    async for event in stream.events():
        message = event.message
        try:
            yield read_record(message, topic_types)
        except EventDecodeError as exc:
            await dead_letter(publisher, message, str(exc))


@contextlib.contextmanager
def keep_going(log: logging.Logger, what: str) -> Iterator[None]:
    """Log a failure of one event's handling and carry on: in faust an exception that
    leaves an agent or a timer crashes the whole app, and every agent with it. The broker
    being slow for a moment (a publish timing out) must cost one event, not corelane."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - anything, by design; it is logged
        log.warning("%s failed, going on: %s: %s", what, type(exc).__name__, exc)
