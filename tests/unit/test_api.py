"""The HTTP API's answers: health reflects each part, metrics come from the parts' stats,
errors are JSON for people."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support.api_world import bare_api
from pipeline.bus import Stamper
from pipeline.collectors.collector import Collector
from pipeline.settings import Settings, load_settings


@pytest.fixture
def collector(tmp_path: Path) -> Collector:
    settings: Settings = load_settings(env={"CORELANE_HOME": str(tmp_path)})
    settings.collector.containers = False
    return Collector(settings, Stamper("h1"))


def client(collector: Collector) -> TestClient:
    return TestClient(bare_api({"collector": collector}))


def test_health_is_degraded_until_a_sweep_is_published(collector: Collector) -> None:
    body = client(collector).get("/api/v1/health").json()
    assert body["status"] == "degraded" and body["host"] == "h1"
    part = body["parts"]["collector"]
    assert part["state"] == "degraded" and "no sweep" in part["reason"]

    stats = collector.stats
    stats.sweeps, stats.last_sweep_ts, stats.last_emit_ts = 1, time.time(), time.time()
    body = client(collector).get("/api/v1/health").json()
    assert body["status"] == "ok" and body["parts"]["collector"]["stats"]["sweeps"] == 1
    assert body["parts"]["collector"]["lag_s"] < 5


def test_health_goes_stale(collector: Collector) -> None:
    old = time.time() - 120
    collector.stats.sweeps, collector.stats.last_sweep_ts = 5, old
    collector.stats.last_emit_ts = old
    assert client(collector).get("/api/v1/health").json()["status"] == "degraded"


def test_metrics_carry_every_stat_with_its_description(collector: Collector) -> None:
    collector.stats.sweeps, collector.stats.processes = 7, 312
    text = client(collector).get("/metrics").text
    assert "# HELP corelane_collector_sweeps_total sweeps of this host" in text
    assert "corelane_collector_sweeps_total 7.0" in text
    assert "corelane_collector_processes 312.0" in text
    assert "process_cpu_seconds_total" in text      # corelane's own CPU, for its cost
    assert "errors" not in text.replace("corelane_collector_errors", "")  # notes stay out


def test_unknown_paths_and_methods_are_json_4xx(collector: Collector) -> None:
    api = client(collector)
    missing = api.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"message": "Not Found"}
    wrong = api.post("/api/v1/health")
    assert wrong.status_code == 405 and "message" in wrong.json()
