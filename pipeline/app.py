"""The faust application every agent of corelane joins.

Topics carry raw bytes: events are decoded with ``pipeline.events.decode`` so that a message
that cannot be read goes to the dead-letter topic with its reason instead of stopping an
agent inside faust's own deserializer.
"""
from __future__ import annotations

import faust

from pipeline.events import EVENT_TYPES
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
