"""The collector loop: sweep host, processes and containers, and hand the events to a sink.

A sink is where events go: the broker (``KafkaSink``) or standard output as JSON lines
(``StdoutSink``, for ``corelane collect --stdout``). Sweeps read /proc and call Docker, which
block, so they run in a worker thread and leave the event loop free for the HTTP API.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from typing import IO, Protocol

from aiokafka.errors import KafkaError

from pipeline.bus import Publisher, Stamper
from pipeline.collectors.containers import ContainerSampler
from pipeline.collectors.host import HostSampler
from pipeline.collectors.proc_events import ProcEvent
from pipeline.collectors.process import ProcessSampler
from pipeline.events import (Alert, ContainerSamples, Envelope, ProcessSamples, batched,
                             encode, open_alert, resolve_alert)
from pipeline.health import PartHealth, degraded, ok
from pipeline.settings import Settings
from pipeline.stats import Stats, counter, gauge, note
from pipeline.topology import Topology

# How often the host sample carries the topology again (an allocator that starts later
# learns it within this long; its own host's it knows at once).
TOPOLOGY_EVERY_S = 60.0
# Health turns degraded when nothing was swept or published for this long.
STALE_AFTER_S = 30.0

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def emit(self, events: list[Envelope]) -> None: ...


class KafkaSink:
    """Sweeps to the broker without ever holding the collector up.

    ``emit`` only queues a sweep's events; a sender task publishes them in order. While the
    broker does not take them (down, or hung), sweeps wait in a buffer bounded by
    ``collector.buffer_bytes``, are sent in order once it answers again (only the messages
    it did not take, so none twice), and only when the buffer is full is the oldest sweep
    dropped and counted. The collector's health reads how old the oldest waiting sweep is.
    """
    buffered = True

    def __init__(self, publisher: Publisher, stats: CollectorStats | None = None,
                 max_bytes: int = 64 << 20, retry_s: float = 1.0) -> None:
        self.publisher = publisher
        self.stats = stats if stats is not None else CollectorStats()
        self.max_bytes, self.retry_s = max_bytes, retry_s
        self._queue: deque[tuple[float, int, list[tuple[Envelope, bytes]]]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._broker_down = False

    async def emit(self, events: list[Envelope]) -> None:
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever())
        # Encoded once, here: the bytes both size the buffer and go to the broker.
        items = self.publisher.encoded(events)
        size = sum(len(raw) for _, raw in items)
        self._queue.append((time.time(), size, items))
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._queue) > 1:
            _, dropped, _ = self._queue.popleft()
            self._bytes -= dropped
            self.stats.dropped_sweeps += 1
        self._note()
        self._ready.set()

    def _note(self) -> None:
        self.stats.buffered_sweeps = len(self._queue)
        self.stats.buffered_bytes = self._bytes
        self.stats.oldest_buffered_ts = self._queue[0][0] if self._queue else None

    async def _send_forever(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            queued_at, size, items = self._queue[0]
            left = await self.publisher.publish_each(items)
            if left:
                if not self._broker_down:
                    self._broker_down = True
                    log.warning("the broker is not taking sweeps; they wait in the collector's "
                                "buffer (collector.buffer_bytes) and go in order when it does")
                if self._queue and self._queue[0][2] is items:
                    self._queue[0] = (queued_at, size, left)
                await asyncio.sleep(self.retry_s)
                continue
            if self._broker_down:
                self._broker_down = False
                log.info("the broker takes sweeps again; %d waiting sweeps follow",
                         len(self._queue) - 1)
            if self._queue and self._queue[0][2] is items:
                self._queue.popleft()
                self._bytes -= size
            self.stats.last_emit_ts = time.time()
            self._note()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give what waits ``timeout_s`` to go, then stop the sender."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline and not self._broker_down:
            await asyncio.sleep(0.05)
        if self._queue:
            log.warning("%d sweeps were still waiting for the broker at the stop",
                        len(self._queue))
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender


class StdoutSink:
    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream or sys.stdout.buffer

    async def emit(self, events: list[Envelope]) -> None:
        self.stream.write(b"".join(encode(e) + b"\n" for e in events))
        self.stream.flush()


@dataclass
class CollectorStats(Stats):
    sweeps: int = counter("sweeps of this host")
    events: int = counter("events the sweeps made")
    last_sweep_ts: float | None = gauge("when the last sweep started (epoch s)")
    last_sweep_s: float = gauge("seconds the last sweep took", 0.0)
    last_emit_ts: float | None = gauge("when the sink last took a sweep's events (epoch s)")
    processes: int = gauge("processes in the last sweep", 0)
    containers: int = gauge("containers in the last sweep", 0)
    containers_available: bool | None = gauge("whether the Docker engine answers")
    dropped_sweeps: int = counter("sweeps dropped: the broker did not take them and the "
                                  "buffer was full")
    buffered_sweeps: int = gauge("sweeps waiting for the broker", 0)
    buffered_bytes: int = gauge("bytes of sweeps waiting for the broker", 0)
    oldest_buffered_ts: float | None = gauge("when the oldest waiting sweep was made (epoch s)")
    fast_samples: int = counter("samples of new processes taken between sweeps")
    errors: list[str] = note("the last few errors", factory=list)


class Collector:
    """Turns one sweep of this host into events: a host sample and the process and
    container batches, chunked so each message stays under the broker's limit."""

    def __init__(self, settings: Settings, stamper: Stamper,
                 topology: Topology | None = None,
                 skip_pids: Callable[[], Iterable[int]] = lambda: ()) -> None:
        """``skip_pids`` are corelane's own helpers (its wake-up probe): sampled, they would
        be classified and placed like the work they measure."""
        self.settings = settings
        self.skip_pids = skip_pids
        self.stamper = stamper
        self.topology = topology
        self._topology_sent: float | None = None
        cfg = settings.collector
        paths = settings.host_paths
        self.host = HostSampler(paths, cgroup_root=settings.applier.cgroup_root,
                                topology=topology)
        self.processes = ProcessSampler(paths, thread_detail=cfg.thread_detail)
        self.containers = ContainerSampler(cfg.docker_host) if cfg.containers else None
        self.stats = CollectorStats()
        self._docker_alert: Alert | None = None
        self._last_sweep: float | None = None
        # new pids sampled between sweeps -> until when (monotonic); the lock keeps the
        # sweep and the fast lane off the sampler's state at the same time
        self._fast: dict[int, float] = {}
        self._last_pids: set[int] | None = None
        self.swept_new: set[int] = set()
        self._sampler_lock = threading.Lock()
        self.fast_wanted = asyncio.Event()

    def watch_new(self, pids: Iterable[int]) -> None:
        """Sample these new processes faster for their first seconds."""
        window = self.settings.collector.fast_for_s
        if window <= 0:
            return
        until = time.monotonic() + window
        skip = set(self.skip_pids())
        added = False
        for pid in pids:
            if pid not in skip and pid not in self._fast:
                self._fast[pid] = until
                added = True
        if added:
            self.fast_wanted.set()

    @property
    def has_new(self) -> bool:
        return bool(self._fast)

    def on_proc_events(self, events: Iterable[ProcEvent]) -> None:
        """A fork or an exec: a process (or a program) is new."""
        self.watch_new(e.pid for e in events)

    def fast_sweep(self) -> list[Envelope]:
        """Samples of the new processes still in their first seconds, as partial batches."""
        now = time.monotonic()
        skip = set(self.skip_pids())
        self._fast = {pid: until for pid, until in self._fast.items()
                      if until > now and pid not in skip}
        if not self._fast:
            return []
        with self._sampler_lock:
            procs = self.processes.sample(list(self._fast))
        for gone in set(self._fast) - {p.pid for p in procs}:
            self._fast.pop(gone, None)
        if not procs:
            return []
        self.stats.fast_samples += len(procs)
        ts = time.time()
        kafka = self.settings.kafka
        return [self.stamper.stamp(part, ts) for part in batched(
            ProcessSamples, procs, kafka.chunk_rows, "samples",
            max_bytes=kafka.max_message_bytes, partial=True,
            interval_s=self.settings.collector.fast_every_s)]

    def sweep(self) -> list[Envelope]:
        started = time.monotonic()
        ts = time.time()
        interval = 0.0 if self._last_sweep is None else started - self._last_sweep
        self._last_sweep = started
        kafka = self.settings.kafka

        host_sample = self.host.sample()
        if self.topology is not None and (self._topology_sent is None
                                          or started - self._topology_sent >= TOPOLOGY_EVERY_S):
            host_sample.topology = self.topology.to_dict()
            self._topology_sent = started
        events = [self.stamper.stamp(host_sample, ts)]
        with self._sampler_lock:
            procs = self.processes.sweep()
        skip = set(self.skip_pids())
        if skip:
            procs = [p for p in procs if p.pid not in skip]
        pids = {p.pid for p in procs}
        if self._last_pids is not None:
            # what the kernel's events did not announce (no connector, or lost ones); the
            # loop hands them to the fast lane (this runs in a worker thread)
            self.swept_new = pids - self._last_pids
        self._last_pids = pids
        events += [self.stamper.stamp(part, ts) for part in batched(
            ProcessSamples, procs, kafka.chunk_rows, "samples",
            max_bytes=kafka.max_message_bytes, interval_s=interval)]
        if self.containers is not None:
            containers = self.containers.sweep()
            events += self._container_availability_alerts(ts)
            if self.containers.available:
                events += [self.stamper.stamp(part, ts) for part in batched(
                    ContainerSamples, containers, kafka.chunk_rows, "samples",
                    max_bytes=kafka.max_message_bytes, interval_s=interval)]
            self.stats.containers = len(containers)
            self.stats.containers_available = self.containers.available

        self.stats.sweeps += 1
        self.stats.events += len(events)
        self.stats.processes = len(procs)
        self.stats.last_sweep_ts = ts
        self.stats.last_sweep_s = time.monotonic() - started
        return events

    def health(self, now: float) -> PartHealth:
        s = self.stats
        if s.last_sweep_ts is None or now - s.last_sweep_ts > STALE_AFTER_S:
            return degraded("no sweep of this host lately")
        interval = self.settings.collector.interval_s
        if s.oldest_buffered_ts is not None and now - s.oldest_buffered_ts > 2 * interval:
            wait = now - s.oldest_buffered_ts
            return degraded(f"the broker has not taken sweeps for {wait:.0f} s: "
                            f"{s.buffered_sweeps} sweeps ({s.buffered_bytes} bytes) wait in the "
                            f"buffer, {s.dropped_sweeps} dropped so far", wait)
        lag = None if s.last_emit_ts is None else max(0.0, now - s.last_emit_ts)
        if lag is None or lag > STALE_AFTER_S:
            return degraded("sweeps are not reaching the broker", lag)
        return ok(lag)

    def resend_topology(self) -> None:
        """Send the topology with the next sweep (the one that carried it was lost)."""
        self._topology_sent = None

    def _container_availability_alerts(self, ts: float) -> list[Envelope]:
        # One alert per outage: opened when Docker goes away, resolved when it comes back.
        assert self.containers is not None
        if not self.containers.available and self._docker_alert is None:
            self._docker_alert = open_alert(
                "docker_unavailable",
                f"containers are not sampled: {self.containers.unavailable_reason}", ts)
            return [self.stamper.stamp(self._docker_alert, ts)]
        if self.containers.available and self._docker_alert is not None:
            resolved = resolve_alert(self._docker_alert, ts, "containers are sampled again")
            self._docker_alert = None
            return [self.stamper.stamp(resolved, ts)]
        return []


async def run_fast_lane(collector: Collector, sink: Sink, stop: asyncio.Event) -> None:
    """Sample new processes every ``collector.fast_every_s`` while there are any; idle
    (and free) otherwise."""
    every = collector.settings.collector.fast_every_s
    while not stop.is_set():
        if not collector.has_new:
            collector.fast_wanted.clear()
            waiter = asyncio.ensure_future(collector.fast_wanted.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            continue
        started = time.monotonic()
        events = await asyncio.to_thread(collector.fast_sweep)
        if events:
            try:
                await sink.emit(events)
            except KafkaError as exc:
                log.debug("samples of new processes not published: %r", exc)
        delay = every - (time.monotonic() - started)
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass


async def run_collector(collector: Collector, sink: Sink, count: int | None = None,
                        interval_s: float | None = None,
                        stop: asyncio.Event | None = None) -> CollectorStats:
    """Sweep every interval (on a fixed cadence, not drifting by the sweep's own cost)
    until ``count`` sweeps are done or ``stop`` is set; sample new processes faster
    between sweeps meanwhile."""
    interval = collector.settings.collector.interval_s if interval_s is None else interval_s
    stop = stop or asyncio.Event()
    fast = asyncio.create_task(run_fast_lane(collector, sink, stop)) if count is None else None
    try:
        return await _sweep_loop(collector, sink, count, interval, stop)
    finally:
        if fast is not None:
            fast.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fast
        if isinstance(sink, KafkaSink):
            await sink.close()


async def _sweep_loop(collector: Collector, sink: Sink, count: int | None, interval: float,
                      stop: asyncio.Event) -> CollectorStats:
    next_at = time.monotonic()
    while not stop.is_set() and (count is None or collector.stats.sweeps < count):
        events = await asyncio.to_thread(collector.sweep)
        new, collector.swept_new = collector.swept_new, set()
        collector.watch_new(new)
        try:
            await sink.emit(events)
            if not getattr(sink, "buffered", False):   # a buffered sink says when it sent
                collector.stats.last_emit_ts = time.time()
        except KafkaError as exc:
            # A broker that times out now may answer at the next sweep; stopping the
            # collector would stop everything. The sweep is lost, and counted.
            collector.stats.dropped_sweeps += 1
            collector.resend_topology()
            collector.stats.errors = (collector.stats.errors + [f"{time.strftime('%H:%M:%S')} "
                                      f"sweep not published: {exc!r}"])[-5:]
            log.warning("sweep %d not published (%r); going on", collector.stats.sweeps, exc)
        if count is not None and collector.stats.sweeps >= count:
            break
        next_at += interval
        delay = next_at - time.monotonic()
        if delay < 0:  # a sweep overran: start the next one now and reset the cadence
            log.debug("sweep overran its interval by %.3fs", -delay)
            next_at, delay = time.monotonic(), 0.0
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass
    return collector.stats
