"""A small recorded world for the API's unit tests: one host with two processes, a
container, a plan, enforcements, an alert, written to a real DuckDB history and folded into
a live view. Commands are caught on their way out instead of reaching a broker."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from agents.classifier import ClassifierAgent
from api.live import LiveState
from api.server import create_api
from api.service import ApiService
from pipeline import events as ev
from pipeline.bus import Publisher, Stamper
from pipeline.bus.hub import EventHub
from pipeline.events import Envelope, Payload
from pipeline.settings import Settings, load_settings
from pipeline.topology import Topology, load_profile
from storage.history import HistoryStore
from storage.query import QueryEngine

HOST = "h1"
TOKEN = "t" * 32
TRADER = (101, 5000)
BATCH = (202, 6000)
CONTAINER = "c0ffee" + "0" * 58


def sample(pid: int, start: int, name: str, ts_index: int, **kw: object) -> ev.ProcessSample:
    return ev.ProcessSample(pid=pid, start_time=start, ppid=1, name=name,
                            cmdline=f"/usr/bin/{name} --serve", state="S",
                            run_delay_ns=ts_index * 2_000_000, cpu_time_s=ts_index * 0.5,
                            **kw)  # type: ignore[arg-type]


@dataclass
class Caught:
    """What the API published, in order."""
    events: list[Envelope] = field(default_factory=list)

    async def publish(self, payload: Payload) -> Envelope:
        event = ev.envelope(payload, HOST, len(self.events) + 1)
        self.events.append(event)
        return event


class ApiWorld:
    def __init__(self, tmp_path: Path) -> None:
        self.settings: Settings = load_settings(env={"CORELANE_HOME": str(tmp_path),
                                                     "CORELANE_TOKEN": TOKEN})
        self.settings.host_id = HOST
        self.settings.api.read_cache_s = 0.0    # each test reads what it just recorded
        self.store = HistoryStore(tmp_path / "history.duckdb", self.settings.storage)
        self.live = LiveState()
        self.hub = EventHub()
        self.hub.on_event(self.live.apply)
        self.caught = Caught()
        self.classifier = ClassifierAgent(self.settings, Publisher(self.settings,
                                                                   Stamper(HOST)))
        self.topology: Topology = load_profile("apple-m4-max")
        self.t0 = time.time() - 600
        self._offset = 0
        self.engine = QueryEngine(self.store.connection, 5.0, 10_000)
        self.service = ApiService(
            settings=self.settings, parts={}, topology=self.topology,
            publish=self.caught.publish, get_engine=lambda: self.engine, live=self.live,
            hub=self.hub, explain=self.classifier.explain, token=TOKEN,
            history_cursor=self.store.cursor)
        self.client = TestClient(create_api(self.service), raise_server_exceptions=False)

    def record(self, payload: Payload, at: float, host: str = HOST) -> Envelope:
        event = ev.envelope(payload, host, self._offset, ts=self.t0 + at)
        self.store.write([(f"corelane.{ev.EVENT_TYPES[event.type].topic}", 0, self._offset,
                           event)])
        self._offset += 1
        self.hub.offer(event)
        if event.type == "process_samples":
            self.classifier.on_samples(event)
        return event

    def populate(self) -> ApiWorld:
        for i in range(8):
            self.record(ev.ProcessSamples(batch=f"s{i}", samples=[
                sample(*TRADER, "trader", i, cpu_share=0.05, affinity="1", nice=-5),
                sample(*BATCH, "cruncher", i, cpu_share=0.98, affinity="0", nice=19,
                       policy=5, container_id=CONTAINER)]), at=float(i))
        self.record(ev.HostSample(cpu_percent=[35.0, 80.0], cpu_freq_khz=[3000.0, None],
                                  load=(1.0, 0.8, 0.5), mem_total_bytes=8 << 30,
                                  mem_available_bytes=4 << 30,
                                  pressure={"memory_some": 12.5},
                                  tier_memory_bytes={"low": 3 << 20},
                                  tier_pressure={"low.memory_some": 4.0}), at=7.5)
        self.record(ev.ContainerSamples(batch="cs1", samples=[ev.ContainerSample(
            id=CONTAINER, name="cruncher-box", image="busybox", status="running",
            pids=[BATCH[0]], cpu_share=0.98, memory_bytes=1 << 20)]), at=7.6)
        self.record(ev.Classifications(batch="c1", items=[
            ev.Classification(pid=TRADER[0], start_time=TRADER[1], cls="latency_critical",
                              tier="ultra_critical", confidence=0.97, source="rule",
                              reason="rule trading"),
            ev.Classification(pid=BATCH[0], start_time=BATCH[1], cls="compute_batch",
                              tier="low", confidence=0.9, source="model",
                              reason="model v1 p=0.90")]), at=6.0)
        plan = self.record(ev.Decisions(batch="plan-1", plan_seq=3, mode="balanced",
                                        strategy="exclusive", items=[
            ev.Decision(target="process", tier="ultra_critical", cpus="1", pid=TRADER[0],
                        start_time=TRADER[1], nice=-10, policy="other",
                        reason="exclusive core for ultra_critical"),
            ev.Decision(target="process", tier="low", cpus="0", pid=BATCH[0],
                        start_time=BATCH[1], nice=19, policy="idle", ioclass="idle",
                        reason="low on shared"),
            ev.Decision(target="container", tier="low", cpus="0", container_id=CONTAINER,
                        reason="container at its processes' tier")]), at=6.5)
        self.record(ev.Enforcements(batch="e1", plan_seq=3, plan_id=plan.data.batch, items=[
            ev.Enforcement(target="process", outcome="applied", pid=TRADER[0],
                           start_time=TRADER[1], before={"nice": 0, "cpus": "0-1"},
                           after={"nice": -10, "cpus": "1"})]), at=7.0)
        alert = ev.open_alert("model_drift", "the model drifted", self.t0 + 3, alert_id="a1")
        self.record(alert, at=3.0)
        self.record(ev.resolve_alert(alert, self.t0 + 5), at=5.0)
        self.record(ev.open_alert("recorder_lag", "behind", self.t0 + 6, alert_id="a2"),
                    at=6.0)
        return self

    def close(self) -> None:
        self.client.close()
        self.store.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def own_process() -> tuple[int, str]:
    return os.getpid(), "python"


def bare_api(parts: dict | None = None, get_engine=lambda: None) -> object:
    """The whole API over the given parts and history engine, with nothing recorded."""
    settings = load_settings(env={})
    settings.host_id = HOST
    return create_api(ApiService(settings=settings, parts=parts or {},
                                 topology=load_profile("apple-m4-max"),
                                 publish=Caught().publish, get_engine=get_engine))
