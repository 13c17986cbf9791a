"""The composition root: what `corelane up` builds, starts and stops, in order, in one process.

It opens the history (this process owns the DuckDB file from then on), serves the HTTP API
from the start (so `corelane query` can find a running instance), starts the local broker
when none answers at the configured address, creates the topics, publishes the
configuration in force, and runs the collector, the agents (faust, on this process's event
loop) and the recorder. On SIGINT/SIGTERM the collector stops first, then the agents, so
that the recorder can read everything published up to then before it closes the history;
the applier puts back everything corelane changed before that.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import faust
import uvicorn
from faust.contrib.asgi import faust_app_running

from agents.alerter import AlerterAgent
from agents.allocator import AllocatorAgent
from agents.applier import ApplierAgent
from agents.classification.rules import RuleSet, RulesError, load_rule_set
from agents.classifier import ClassifierAgent
from agents.contract import Agent, create_app, install
from agents.notifier import NotifierAgent
from agents.ownership import Ownership, follow_broadcasts, follow_partitions
from agents.recorder import Recorder
from agents.shadow import ShadowAgent, ShadowSpec
from agents.tuner import TunerAgent
from api.auth import ensure_token
from api.live import LiveState
from api.server import create_api, create_part_api
from api.service import ApiService
from corelane.narration import Narrator
from corelane.own_priority import take_own_nice
from corelane.roles import (ALERTER, ALLOCATOR, API, APPLIER, CLASSIFIER, COLLECTOR, NOTIFIER,
                            RECORDER, SHADOWS, TUNER, agent_group, partitioned, parts_of)
from corelane.reload import reload_running
from pipeline import commands
from pipeline.bus import Publisher, Stamper, ensure_topics, partitions_for
from pipeline.bus.hub import EventHub
from pipeline.events import Envelope
from pipeline.collectors.collector import Collector, KafkaSink, run_collector
from pipeline.collectors.containers import engine_client
from pipeline.collectors.proc_events import ProcEventWatcher
from pipeline.health import Reporting
from pipeline.kafka.broker import (LocalBroker, StartProgress, answers, is_loopback,
                                   parse_bootstrap)
from pipeline.settings import Settings
from pipeline.topology import load_profile, read_topology
from storage.history import HistoryStore, StoreError
from storage.query import QueryEngine

log = logging.getLogger(__name__)

# The terminal's one-line summary of every host comes this often.
SUMMARY_EVERY_S = 60.0


class UpError(RuntimeError):
    """corelane cannot start; the message says why and what to do."""


class ConfigInvalid(UpError):
    """A file the configuration names cannot be used (as a bad key, it is the config's)."""


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


async def ensure_broker(settings: Settings,
                        progress: StartProgress | None = None) -> LocalBroker | None:
    """Start the local broker if nothing answers; returns it when this call started it.
    ``progress`` is told how the fetch of its jars and its start go."""
    bootstrap = settings.kafka.bootstrap
    if await asyncio.to_thread(answers, settings, 3.0):
        log.info("using the Kafka broker at %s", bootstrap)
        return None
    if "," in bootstrap or not is_loopback(parse_bootstrap(bootstrap)[0]):
        raise UpError(f"no Kafka broker answers at {bootstrap} (kafka.bootstrap / "
                      f"CORELANE_KAFKA); corelane starts a broker only on this host's loopback")
    broker = LocalBroker.from_settings(settings)
    log.info("starting a local Kafka broker at %s (data in %s); this can take up to a minute",
             bootstrap, broker.state_dir)
    await asyncio.to_thread(broker.start, settings.kafka.broker.start_timeout_s, progress)
    return broker


def own_pids(settings: Settings) -> set[int]:
    """corelane's own processes: never niced or idled, but kept off critical cores."""
    pids = {os.getpid()}
    pids.update(LocalBroker.from_settings(settings).read_pids().values())
    return pids


def lingering_threads(join_s: float) -> list[threading.Thread]:
    """Threads other than this one that a library left running (faust's consumer thread
    waits on a hung broker for as long as it hangs), after giving them ``join_s`` in all."""
    deadline = time.monotonic() + join_s
    left = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left


def up(settings: Settings, dry_run: bool = False, leftover_timeout_s: float = 5.0,
       shadows: Sequence[ShadowSpec] = (), broker_progress: StartProgress | None = None,
       role: str = "all") -> None:
    """Run corelane until SIGINT/SIGTERM. Tasks that a library leaves behind after the parts
    have stopped get a bounded time to finish, so a stop never hangs on them (threads that
    outlive that too are the caller's to abandon: see ``lingering_threads``).
    ``broker_progress`` is told how a local broker's start goes, when one is started."""
    take_own_nice(settings)
    run_to_end(run_up(settings, dry_run=dry_run, shadows=shadows,
                      broker_progress=broker_progress, role=role), leftover_timeout_s)


def run_to_end(main: Coroutine[Any, Any, None], leftover_timeout_s: float = 5.0) -> None:
    """Run ``main`` on a loop of its own; tasks a library leaves behind get a bounded time
    to end, so the process always exits."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=leftover_timeout_s))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def every(interval_s: float, work: Callable[[], object], stop: asyncio.Event) -> None:
    """``work`` every ``interval_s`` on the loop until ``stop``."""
    while not stop.is_set():
        work()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run_agents(app: faust.App, stop: asyncio.Event) -> None:
    """The faust agents, on this loop, until ``stop``."""
    async with faust_app_running(app, stop_timeout=20):
        await stop.wait()


async def _stop_within(name: str, task: asyncio.Future, deadline: float,
                       grace_s: float) -> None:
    """Wait for ``task`` until ``deadline`` (loop time); past it, cancel it and go on."""
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    done, _ = await asyncio.wait({task}, timeout=remaining)
    if not done:
        task.cancel()
        log.warning("%s did not stop within the %.0f s grace period (stop_grace_s): "
                    "abandoned; what it changed is still put back", name, grace_s)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("%s failed while stopping: %s", name, task.exception())


def _stop_on_shutdown(event: Envelope, host: str, started: float,
                      stop: asyncio.Event) -> None:
    """A shutdown command for this host, given since this instance started, stops it as
    SIGTERM does."""
    if (event.type == "command" and event.data.name == commands.SHUTDOWN
            and event.data.args.get("host") == host and event.ts >= started):
        log.info("stopping: shutdown command %s %s", event.id,
                 event.data.args.get("reason") or "")
        stop.set()


def check_before_start(settings: Settings) -> RuleSet:
    """What can be wrong with the configuration beyond its own keys (the rule file it names),
    checked before anything opens, binds or starts."""
    try:
        return load_rule_set(settings)
    except RulesError as exc:
        raise ConfigInvalid(f"{exc} (classifier.rules_file)") from None


async def run_up(settings: Settings, dry_run: bool = False,
                 shadows: Sequence[ShadowSpec] = (),
                 broker_progress: StartProgress | None = None, role: str = "all") -> None:
    """Run the parts of ``role`` (``corelane.roles``; ``all``: every part) until stopped."""
    has = parts_of(role)
    if shadows and SHADOWS not in has:
        raise UpError(f"--shadow runs where the classifier and allocator run: with --role "
                      f"worker or all, not {role}")
    rules = check_before_start(settings) if CLASSIFIER in has else None
    for spec in shadows:
        try:
            load_rule_set(spec.settings)
        except RulesError as exc:
            raise ConfigInvalid(f"shadow policy {spec.name}: {exc} (classifier.rules_file)") \
                from None
    sock = _bind(settings.api.listen)
    started = time.time()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker: LocalBroker | None = None
    publisher: Publisher | None = None
    recorder: Recorder | None = None
    server: _QuietServer | None = None
    store: HistoryStore | None = None
    agents: list[Agent] = []
    # Each part has its own stop, set in order on shutdown: the collector first, so the
    # recorder's final read sees everything that was published.
    stop_collecting, stop_agents, stop_recording = (asyncio.Event() for _ in range(3))
    tasks: dict[str, asyncio.Future[object]] = {}
    watcher = ProcEventWatcher()
    if RECORDER in has:
        try:
            store = await asyncio.to_thread(HistoryStore, settings.db_path, settings.storage)
        except StoreError as exc:
            sock.close()
            raise UpError(f"cannot open the history: {exc}") from None
    try:
        limits = settings.storage
        engine = QueryEngine(store.connection, limits.query_timeout_s, limits.query_max_rows,
                             limits.query_max_bytes) if store is not None else None
        stamper = Stamper(settings.host)
        topology = (load_profile(settings.topology.profile) if settings.topology.profile
                    else read_topology(settings.topology.sys_root))
        publisher = Publisher(settings, stamper)
        tuner = TunerAgent(settings, publisher) \
            if TUNER in has and settings.closed_loop.enabled else None
        collector = Collector(settings, stamper, topology,
                              skip_pids=lambda: [tuner.probe.pid] if tuner and tuner.probe.pid
                              else []) if COLLECTOR in has else None
        hub, live = EventHub(), LiveState()
        narrator: Narrator | None = None
        if store is not None:
            # What the recorder reads is what this process follows: the live view, the
            # terminal's lines and a shutdown command.
            hub.on_event(live.apply)
            narrator = Narrator(live, settings.host)
            hub.on_event(narrator.on_event)
            hub.on_event(lambda event: _stop_on_shutdown(event, settings.host, started, stop))
            recorder = Recorder(settings, store, publisher, hub=hub)
        applier = ApplierAgent(settings, publisher, own_pids=lambda: own_pids(settings),
                               dry_run=dry_run,
                               docker_client=lambda: engine_client(settings.collector.docker_host)
                               ) if APPLIER in has else None
        ownership = Ownership(settings.kafka.partitions) if partitioned(role) else None
        classifier = ClassifierAgent(settings, publisher, rules=rules, ownership=ownership,
                                     share_model=partitioned(role)) \
            if CLASSIFIER in has else None
        alerter = AlerterAgent(settings, publisher,
                               recorder_lag=lambda: recorder.health(time.time()).lag_s
                               if recorder is not None else None) if ALERTER in has else None
        allocator = AllocatorAgent(settings, publisher, topology,
                                   housekeeping_pids=lambda: own_pids(settings),
                                   ownership=ownership) if ALLOCATOR in has else None
        agents = [part for part in (
            classifier, allocator, applier, alerter,
            NotifierAgent(settings) if NOTIFIER in has else None, tuner) if part is not None]
        agents += [ShadowAgent(spec, publisher, topology,
                               housekeeping_pids=lambda: own_pids(settings))
                   for spec in shadows]
        faust_app = create_app(settings, app_id=agent_group(role, settings)) if agents else None
        for agent in agents:
            install(faust_app, agent, settings, publisher)
        parts: dict[str, Reporting] = {
            name: part for name, part in (("collector", collector), ("bus", publisher),
                                          ("recorder", recorder)) if part is not None}
        parts.update((agent.name, agent) for agent in agents)
        if API in has:
            api = create_api(ApiService(
                settings=settings, parts=parts, topology=topology, publish=publisher.publish,
                get_engine=lambda: engine, live=live, hub=hub,
                explain=classifier.explain if classifier is not None else None,
                token=ensure_token(settings), started_at=started,
                history_cursor=store.cursor if store is not None else None, role=role))
        else:
            api = create_part_api(settings.host, parts, started, role)
        server = _QuietServer(uvicorn.Config(api, log_level="warning", lifespan="off"))
        tasks["api"] = asyncio.create_task(server.serve(sockets=[sock]))
        if store is not None:
            log.info("API on http://%s/api/v1/health; history in %s", settings.api.listen,
                     store.path)
        else:
            log.info("%s: health on http://%s/api/v1/health, metrics on /metrics", role,
                     settings.api.listen)

        broker = await ensure_broker(settings, broker_progress)
        created = await ensure_topics(settings)
        if created:
            log.info("created topics: %s", ", ".join(created))
        await publisher.start()
        config = await publisher.publish(settings.configuration())
        log.info("configuration %s from %s in force", config.data.hash[:12], settings.source)
        if recorder is not None:
            await recorder.start()
            tasks["recorder"] = asyncio.create_task(recorder.run(stop_recording))
        if dry_run and applier is not None:
            log.info("dry run: corelane observes and decides, and changes nothing on this host")
        if ownership is not None:
            # The topics' real partition count decides where a host's events land.
            ownership.partitions = len(await partitions_for(
                settings, [settings.topic("process_samples")]))
            follow_partitions(faust_app, settings, ownership,
                              [a for a in (classifier, allocator) if a is not None])
        for agent in agents:
            await agent.warm_up()
        if faust_app is not None:
            tasks["agents"] = asyncio.create_task(run_agents(faust_app, stop_agents))
        if ownership is not None:
            # what every worker reads on every partition, stopped with the agents
            tasks["broadcasts"] = asyncio.ensure_future(asyncio.gather(*(
                follow_broadcasts(settings, part, stop_agents)
                for part in (classifier, allocator) if part is not None)))
        if collector is not None:
            # New processes at their fork and exec: faster samples, and no inherited demotion.
            watcher.subscribe(collector.on_proc_events)
            if applier is not None:
                watcher.subscribe(applier.on_proc_events, rescan=applier.rescan)
            if not watcher.start() and applier is not None:
                tasks["rescan"] = asyncio.create_task(
                    every(settings.collector.interval_s, applier.rescan, stop_collecting))
            tasks["collector"] = asyncio.create_task(
                run_collector(collector, KafkaSink(publisher, collector.stats,
                                                   settings.collector.buffer_bytes),
                              stop=stop_collecting))
            log.info("collecting every %.1fs as host %s", settings.collector.interval_s,
                     settings.host)
        if narrator is not None:
            tasks["summary"] = asyncio.create_task(every(SUMMARY_EVERY_S, narrator.summarise,
                                                         stop_collecting))
        if role != "all":
            log.info("role %s running: %s", role, ", ".join(parts))
        reloads: set[asyncio.Task[None]] = set()

        def on_hangup() -> None:
            task = asyncio.ensure_future(reload_running(settings, publisher, classifier,
                                                        alerter))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks.values()],
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        stopper.cancel()
    finally:
        log.info("stopping")
        watcher.stop()
        # Every part gets its turn within one grace period; one that has not stopped by its
        # end is abandoned with a warning, so a stop is bounded whatever a library waits on.
        deadline = loop.time() + settings.stop_grace_s
        for name, event in (("collector", stop_collecting), ("agents", stop_agents),
                            ("broadcasts", stop_agents), ("recorder", stop_recording)):
            event.set()
            if name in tasks:
                await _stop_within(name, tasks[name], deadline, settings.stop_grace_s)
        # The applier puts back everything corelane changed before the history closes.
        for agent in agents:
            await asyncio.to_thread(agent.close)
        if server is not None:
            server.should_exit = True
            await _stop_within("api", tasks["api"], max(deadline, loop.time() + 2),
                               settings.stop_grace_s)
        for name, closing in (("the recorder's consumer", recorder.stop if recorder else None),
                              ("the publisher", publisher.stop if publisher else None)):
            if closing is not None:
                await _stop_within(name, asyncio.ensure_future(closing()),
                                   loop.time() + 5, 5)
        if store is not None:
            await asyncio.to_thread(store.close)
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
