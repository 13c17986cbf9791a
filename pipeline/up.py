"""`corelane up`: everything corelane runs on this host, in one process.

It starts the local broker when none answers at the configured address, creates the topics,
serves the HTTP API from the start (so `corelane query` can find a running instance), and
runs the collector. Later parts (classifier, allocator, applier, recorder) join here.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from api.server import create_api
from pipeline.bus import Publisher, Stamper, ensure_topics
from pipeline.collect import Collector, KafkaSink, run_collector
from pipeline.kafka.broker import LocalBroker, broker_from_settings, is_answering
from pipeline.settings import Settings

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class UpError(RuntimeError):
    """corelane cannot start; the message says why and what to do."""


class _QuietServer(uvicorn.Server):
    # corelane owns SIGINT/SIGTERM so that it stops every part in order, not only the server.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        sock.close()
        raise UpError(f"cannot serve the API on {listen} (api.listen / CORELANE_API): "
                      f"{exc.strerror}. Is another corelane running? Choose another port with "
                      f"CORELANE_API=127.0.0.1:PORT.") from None
    sock.listen(128)
    return sock


async def ensure_broker(settings: Settings) -> LocalBroker | None:
    """Start the local broker if nothing answers; returns it when this call started it."""
    bootstrap = settings.kafka.bootstrap
    if await asyncio.to_thread(is_answering, bootstrap, 3.0):
        log.info("using the Kafka broker at %s", bootstrap)
        return None
    host = bootstrap.split(",")[0].rpartition(":")[0]
    if "," in bootstrap or host not in LOCAL_HOSTS:
        raise UpError(f"no Kafka broker answers at {bootstrap} (kafka.bootstrap / "
                      f"CORELANE_KAFKA); corelane starts a broker only on this host's loopback")
    broker = broker_from_settings(settings)
    log.info("starting a local Kafka broker at %s (data in %s); this can take up to a minute",
             bootstrap, broker.state_dir)
    await asyncio.to_thread(broker.start, settings.kafka.broker.start_timeout_s)
    return broker


async def run_up(settings: Settings, dry_run: bool = False) -> None:
    sock = _bind(settings.api.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker: LocalBroker | None = None
    publisher: Publisher | None = None
    server: _QuietServer | None = None
    tasks: list[asyncio.Task[object]] = []
    try:
        stamper = Stamper(settings.host)
        collector = Collector(settings, stamper)
        api = create_api(settings.host, settings.kafka.bootstrap, collector.stats)
        server = _QuietServer(uvicorn.Config(api, log_level="warning", lifespan="off"))
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
        log.info("API on http://%s/api/v1/health", settings.api.listen)

        broker = await ensure_broker(settings)
        created = await ensure_topics(settings)
        if created:
            log.info("created topics: %s", ", ".join(created))
        publisher = Publisher(settings, stamper)
        await publisher.start()
        if dry_run:
            log.info("dry run: corelane observes and decides, and changes nothing on this host")
        tasks.append(asyncio.create_task(
            run_collector(collector, KafkaSink(publisher), stop=stop), name="collector"))
        log.info("collecting every %.1fs as host %s", settings.collector.interval_s,
                 settings.host)

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        stopper.cancel()
    finally:
        log.info("stopping")
        stop.set()
        if server is not None:
            server.should_exit = True
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        if publisher is not None:
            await publisher.stop()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
