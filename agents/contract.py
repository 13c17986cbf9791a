"""The agent contract: what a faust agent of corelane gives, and the one place it is wired.

An agent is plain Python around a pure core. It says which events it handles
(``handlers``), what it does on a clock (``timers``), how it rebuilds its state before the
first event (``warm_up``), what it releases on stop (``close``), what it counts (``stats``,
typed, one description per field) and how it is (``health``). ``install`` turns those into
faust agents and timers on one app, so no agent writes a faust closure of its own, and
every handler gets the same care: messages that cannot be read go to the dead-letter topic
with the reason, and an exception costs one event, never the app.

Topics carry raw bytes: events are decoded with ``pipeline.events.decode`` rather than by
faust's own deserializer, which would stop the agent on a bad message.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import faust

from pipeline.bus import Publisher, cluster_replication, dead_letter, read_record, topic_types
from pipeline.events import EVENT_TYPES, Envelope, EventDecodeError
from pipeline.health import PartHealth, degraded, ok
from pipeline.kafka.clients import faust_credentials
from pipeline.settings import Settings
from pipeline.stats import Stats, counter, gauge, note

log = logging.getLogger(__name__)


@dataclass
class AgentStats(Stats):
    """What every agent counts; each agent's own stats add to these."""
    events: int = counter("events handled")
    failures: int = counter("events whose handling failed (logged, then skipped)")
    last_event_ts: float | None = gauge("the event time of the last event handled (epoch s)")
    last_failure: str | None = note("what the last failure said")


class Position(NamedTuple):
    """Where an event sat on its topic."""
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Handler:
    """Handles each event of one type, in order; told where on the topic it sat."""
    event_type: str
    handle: Callable[[Envelope, Position], Awaitable[None]]


@dataclass(frozen=True)
class Timer:
    """Runs every ``interval_s`` while the app runs."""
    name: str
    interval_s: float
    run: Callable[[], Awaitable[None]]


class Agent(Protocol):
    name: str
    stats: AgentStats

    def handlers(self) -> Sequence[Handler]: ...

    def timers(self) -> Sequence[Timer]: ...

    async def warm_up(self) -> None: ...

    def close(self) -> None: ...

    def health(self, now: float) -> PartHealth: ...


class _App(faust.App):
    """A faust app whose own topics get the replication corelane's topics get."""

    corelane_settings: Settings

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if self.corelane_settings.kafka.replication_factor is None:
            # As many copies as the cluster has nodes, up to 3: asked of the cluster once,
            # before faust declares a topic of its own (its assignor's, tables' changelogs).
            factor, _ = await cluster_replication(self.corelane_settings)
            self.conf.topic_replication_factor = factor


def create_app(settings: Settings, app_id: str = "corelane", **options: object) -> faust.App:
    """A faust app on the configured broker, with web server off and one topic per event type.

    It connects as ``kafka.security`` says, produces with acks from all in-sync replicas
    (faust offers idempotence only inside transactions) and gives the topics it creates
    the replication corelane's topics get.
    """
    kafka = settings.kafka
    app = _App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka.security),
        web_enabled=False,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=kafka.replication_factor or 1,
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.home_path / "faust"),
        # Agents restart after a crash faster than the default minute-long session expires.
        broker_session_timeout=settings.kafka.group_session_timeout_s,
        broker_heartbeat_interval=settings.kafka.group_session_timeout_s / 3,
        broker_rebalance_timeout=settings.kafka.group_session_timeout_s,
        consumer_auto_offset_reset="latest",
        # Several agents read one topic (the classifier, allocator, shadow and alerter all
        # read the process samples). faust counts a message once per agent, and a rebalance
        # clears the agents' buffers without counting down the ones still buffered there:
        # after one agent took a message, a wait for every message to be done never ends,
        # and the rebalance with it. Nothing here needs that wait: a revoked host is
        # suspended at once (agents.ownership), and the worker gaining it rebuilds its
        # state from the topics, so an event handled on both sides of a hand-over is
        # harmless.
        stream_wait_empty=False,
        **options,
    )
    app.corelane_settings = settings
    app.corelane_topics = {  # type: ignore[attr-defined]
        name: app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                        partitions=settings.kafka.partitions)
        for name in EVENT_TYPES
    }
    return app


async def decoded(stream: faust.StreamT, types: dict[str, str], publisher: Publisher,
                  reader: str) -> AsyncIterator[tuple[Envelope, Position]]:
    """The envelopes of an agent's stream; a message that cannot be read goes to the
    dead-letter topic with the reason, under the agent's name, and the agent carries on
    (even when the dead-letter record cannot be published: the recorder keeps its own)."""
    async for event in stream.events():
        message = event.message
        try:
            yield read_record(message, types), Position(message.topic, message.partition,
                                                        message.offset)
        except EventDecodeError as exc:
            with keep_going(f"{reader}: dead-lettering {message.topic}@{message.offset}"):
                await dead_letter(publisher, message, str(exc), reader)


@contextlib.contextmanager
def keep_going(what: str, stats: AgentStats | None = None) -> Iterator[None]:
    """Log a failure of one event's handling and carry on: in faust an exception that
    leaves an agent or a timer crashes the whole app, and every agent with it. The broker
    being slow for a moment (a publish timing out) must cost one event, not corelane."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - anything, by design; it is logged
        log.warning("%s failed, going on: %s: %s", what, type(exc).__name__, exc)
        if stats is not None:
            stats.failures += 1
            stats.last_failure = f"{what}: {type(exc).__name__}: {exc}"


def install(app: faust.App, agent: Agent, settings: Settings, publisher: Publisher) -> None:
    """Give each of the agent's handlers a faust agent and each timer a faust timer."""
    topics = app.corelane_topics  # type: ignore[attr-defined]
    prefix = settings.kafka.topic_prefix
    for handler in agent.handlers():
        _stream(app, topics[handler.event_type], f"{prefix}{agent.name}.{handler.event_type}",
                topic_types(settings, [handler.event_type]), handler, agent.stats, publisher,
                agent.name)
    for timer in agent.timers():
        _timer(app, f"{agent.name} {timer.name}", timer, agent.stats)


def _stream(app: faust.App, topic: faust.TopicT, name: str, types: dict[str, str],
            handler: Handler, stats: AgentStats, publisher: Publisher, reader: str) -> None:
    async def consume(stream: faust.StreamT) -> None:
        async for event, position in decoded(stream, types, publisher, reader):
            with keep_going(f"{name} on event {event.id} from {event.host}", stats):
                await handler.handle(event, position)
            stats.events += 1
            stats.last_event_ts = event.ts

    consume.__name__ = consume.__qualname__ = name.replace(".", "_")
    app.agent(topic, name=name)(consume)


def _timer(app: faust.App, what: str, timer: Timer, stats: AgentStats) -> None:
    async def tick() -> None:
        with keep_going(what, stats):
            await timer.run()

    tick.__name__ = tick.__qualname__ = what.replace(" ", "_").replace(".", "_")
    app.timer(timer.interval_s, name=what)(tick)


def event_health(stats: AgentStats, now: float, quiet_after_s: float | None) -> PartHealth:
    """An agent's health from its stats: its lag is how old the last event it handled is;
    it is degraded while events keep failing or, with ``quiet_after_s``, when none came for
    that long (a stream that should flow every second)."""
    lag = None if stats.last_event_ts is None else max(0.0, now - stats.last_event_ts)
    if stats.failures and stats.last_failure and stats.failures >= stats.events > 0:
        return degraded(f"every event failed so far: {stats.last_failure}", lag)
    if quiet_after_s is not None and lag is not None and lag > quiet_after_s:
        return degraded(f"no event for {lag:.0f} s", lag)
    return ok(lag)
