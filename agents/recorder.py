"""The recorder: every corelane topic into the DuckDB history, exactly once.

Exactly once rests on one rule: the rows of a batch and the offsets they were read up to are
committed in the same DuckDB transaction (``HistoryStore.write``), and on start the recorder
seeks each partition to the offset stored there (the earliest, on an empty database). A
crash at any moment loses the uncommitted batch only, which is read again.

This is why the recorder uses a plain aiokafka consumer with assigned partitions rather than
a faust agent or a consumer group: the group's committed offsets would be a second truth
that a crash could leave out of step with the database.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents.contract import keep_going
from pipeline.bus import (Publisher, dead_letter, dead_letter_payload, partitions_for,
                          read_record, topic_types)
from pipeline.bus.hub import EventHub
from pipeline.events import (EVENT_TYPES, Alert, Envelope, EventDecodeError, envelope,
                             open_alert, resolve_alert)
from pipeline.health import PartHealth, degraded, down, ok
from pipeline.kafka.clients import client_options
from pipeline.settings import Settings
from pipeline.stats import Stats, counter, gauge, note
from storage.history import HistoryStore, Record
from storage.retention import retention_step
from storage.rows import rows_in

log = logging.getLogger(__name__)


# How often retention runs between batches; each run does a bounded step (a minute's
# rollup needs one step, so twice a minute keeps up).
RETENTION_EVERY_S = 30.0


# How long one read waits for messages: a fraction of the flush interval, so a flush is
# never late by much, and not so short that an idle recorder spins.
POLL_MS = 500
# Health turns degraded when what is recorded is this far behind what was published.
BEHIND_AFTER_S = 30.0


@dataclass
class RecorderStats(Stats):
    batches: int = counter("transactions written to the history")
    rows: int = counter("rows written")
    messages: int = counter("messages read from the topics")
    dead_lettered: int = counter("messages that could not be read")
    last_flush_ts: float | None = gauge("when the last batch was committed (epoch s)")
    last_flush_s: float = gauge("seconds the last commit took", 0.0)
    last_event_ts: float | None = gauge("the newest event time recorded (epoch s)")
    write_failures: int = counter("batches the history could not take (full disk, ...)")
    last_write_error: str | None = note("why the history last refused a batch")


class Recorder:
    name = "recorder"

    def __init__(self, settings: Settings, store: HistoryStore, publisher: Publisher,
                 hub: EventHub | None = None) -> None:
        self.settings = settings
        self.hub = hub                        # handed every event read, as it is read
        self.store = store
        self.publisher = publisher
        self.stats = RecorderStats()
        self._types = topic_types(settings, EVENT_TYPES)
        self._deadletter_topic = settings.topic("deadletter")
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._pending: list[Record] = []
        self._pending_rows = 0
        self._oldest_pending: float | None = None
        self._pending_newest: float | None = None
        self._last_retention = 0.0
        # While the history refuses writes: why, when to try again, and the alert raised.
        self._failing: str | None = None
        self._retry_at = 0.0
        self._alert: Alert | None = None
        self._taken: dict[tuple[str, int], int] = {}   # the highest offset read, per partition

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * self.settings.kafka.max_message_bytes,
            **client_options(self.settings.kafka.security))
        await consumer.start()
        self._consumer = consumer
        self._partitions = await partitions_for(self.settings, self._types)
        consumer.assign(self._partitions)
        stored = await asyncio.to_thread(self.store.offsets)
        for tp in self._partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        log.info("recording %d partitions into %s", len(self._partitions), self.store.path)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 10.0) -> RecorderStats:
        """Record until ``stop`` is set, then read up to the ends seen at that moment
        (within ``drain_timeout_s``), write what is pending and return."""
        assert self._consumer is not None, "start() first"
        while not stop.is_set():
            if self._failing is not None and time.monotonic() < self._retry_at:
                # Nothing is read while the history cannot take it: Kafka keeps it.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._retry_at - time.monotonic())
                continue
            await self._poll(timeout_ms=POLL_MS)
            await self._flush_if_due()
            await self._retention_if_due()
        if self._failing is None:
            await self._drain(drain_timeout_s)
        await self.flush()
        return self.stats

    async def _poll(self, timeout_ms: int) -> int:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        count = 0
        for records in batch.values():
            for record in records:
                await self._take(record)
                count += 1
        return count

    async def _take(self, record: ConsumerRecord) -> None:
        place = (record.topic, record.partition)
        again = record.offset <= self._taken.get(place, -1)   # read again after a rewind
        self._taken[place] = max(record.offset, self._taken.get(place, -1))
        try:
            event: Envelope | None = read_record(record, self._types)
        except EventDecodeError as exc:
            # Said once per message, not again each time a rewind reads it.
            event = None if again and record.topic != self._deadletter_topic else \
                await self._unreadable(record, str(exc))
        self._pending.append((record.topic, record.partition, record.offset, event))
        if event is not None and self.hub is not None and not again:
            with keep_going("handing an event on to its followers"):
                self.hub.offer(event)
        self._pending_rows += rows_in(event) if event is not None else 0
        if event is not None:
            self._pending_newest = max(self._pending_newest or 0.0, event.ts)
        self.stats.messages += 1
        if self._oldest_pending is None:
            self._oldest_pending = time.monotonic()

    async def _unreadable(self, record: ConsumerRecord, reason: str) -> Envelope | None:
        self.stats.dead_lettered += 1
        if record.topic != self._deadletter_topic:
            try:
                await dead_letter(self.publisher, record, reason, self.name)
                return None   # its record comes back on the dead-letter topic, and is kept
            except Exception as exc:  # noqa: BLE001 - the message must not stop recording
                log.warning("could not publish the dead-letter record of %s@%d (%s: %s); "
                            "keeping it in the history directly", record.topic,
                            record.offset, type(exc).__name__, exc)
        # Publishing it back to the topic it came from would loop (and a failed publish
        # must not lose it): keep it in the table, once, under its own place as its id.
        return envelope(dead_letter_payload(record, reason, self.name), host=self.settings.host,
                        seq=0, event_id=f"{record.topic}:{record.partition}:{record.offset}")

    async def _flush_if_due(self) -> None:
        cfg = self.settings.storage
        if not self._pending:
            return
        age = time.monotonic() - (self._oldest_pending or time.monotonic())
        if self._pending_rows >= cfg.flush_rows or age >= cfg.flush_interval_s:
            await self.flush()

    async def flush(self) -> int:
        """Write everything pending in one transaction with its offsets."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, []
        newest, self._pending_newest = self._pending_newest, None
        self._pending_rows, self._oldest_pending = 0, None
        started = time.monotonic()
        try:
            rows = await asyncio.to_thread(self.store.write, pending)
        except Exception as exc:  # noqa: BLE001 - a refusing history must not stop corelane
            await self._write_failed(exc)
            return 0
        if self._failing is not None:
            await self._write_resumed()
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.last_flush_ts = time.time()
        self.stats.last_flush_s = time.monotonic() - started
        if newest is not None:
            self.stats.last_event_ts = max(self.stats.last_event_ts or 0.0, newest)
        return rows

    async def _write_failed(self, exc: Exception) -> None:
        """The history refused a batch: read again from what it holds, a while later."""
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        first = self._failing is None
        self._failing = reason
        self._retry_at = time.monotonic() + self.settings.storage.write_retry_s
        self.stats.write_failures += 1
        self.stats.last_write_error = reason
        if first:
            log.error("the history cannot be written (%s): recording pauses and retries every "
                      "%.0f s; nothing is lost, the topics still hold it", reason,
                      self.settings.storage.write_retry_s)
            self._alert = open_alert("history_write", f"the history cannot be written: {reason}",
                                     time.time(), severity="critical",
                                     details={"path": str(self.store.path)})
            with keep_going("raising the history-write alert"):
                await self.publisher.publish(self._alert)
        await self._rewind()

    async def _write_resumed(self) -> None:
        log.info("the history is written again; recording goes on from where it stopped")
        self._failing = None
        if self._alert is not None:
            with keep_going("resolving the history-write alert"):
                await self.publisher.publish(resolve_alert(
                    self._alert, time.time(), "the history is written again"))
            self._alert = None

    async def _rewind(self) -> None:
        """Every partition back to the offset the history holds (its start when none)."""
        assert self._consumer is not None
        stored = await asyncio.to_thread(self.store.offsets)
        for tp in self._partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    def health(self, now: float) -> PartHealth:
        """The lag is how far the newest recorded event is behind now."""
        if self._consumer is None:
            return down("not reading the topics")
        s = self.stats
        if self._failing is not None:
            lag = None if s.last_event_ts is None else max(0.0, now - s.last_event_ts)
            return degraded(f"the history cannot be written ({self._failing}); retrying every "
                            f"{self.settings.storage.write_retry_s:.0f} s, nothing is lost", lag)
        lag = None if s.last_event_ts is None else max(0.0, now - s.last_event_ts)
        if lag is not None and lag > BEHIND_AFTER_S:
            return degraded(f"the history is {lag:.0f} s behind", lag)
        return ok(lag)

    async def _retention_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        # One bounded step per turn: recording waits for at most one step, never a whole sweep
        # of the history. A step that fails (a full disk) is tried again next turn.
        with keep_going("the retention step"):
            await asyncio.to_thread(retention_step, self.store, time.time())

    async def _drain(self, timeout_s: float) -> None:
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            behind = {tp: end for tp, end in ends.items() if await self._position(tp) < end}
            if not behind:
                return
            await self._poll(timeout_ms=200)
            await self._flush_if_due()
        log.warning("stopped before reading everything: what is left is recorded on the next "
                    "start")

    async def _position(self, tp: TopicPartition) -> int:
        assert self._consumer is not None
        return await self._consumer.position(tp)
