"""The HTTP API's answers: health reflects the collector, errors are JSON for people."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from api.server import create_api
from pipeline.collect import CollectorStats


def client(stats: CollectorStats) -> TestClient:
    return TestClient(create_api("h1", "127.0.0.1:9092", stats))


def test_health_is_degraded_until_a_sweep_is_published() -> None:
    stats = CollectorStats()
    body = client(stats).get("/api/v1/health").json()
    assert body["status"] == "degraded" and body["host"] == "h1"
    assert body["kafka"]["publishing"] is False

    stats.sweeps, stats.last_sweep_ts, stats.last_emit_ts = 1, time.time(), time.time()
    body = client(stats).get("/api/v1/health").json()
    assert body["status"] == "ok" and body["collector"]["sweeps"] == 1
    assert body["kafka"]["publishing"] is True


def test_health_goes_stale() -> None:
    old = time.time() - 120
    stats = CollectorStats(sweeps=5, last_sweep_ts=old, last_emit_ts=old)
    assert client(stats).get("/api/v1/health").json()["status"] == "degraded"


def test_unknown_paths_and_methods_are_json_4xx() -> None:
    api = client(CollectorStats())
    missing = api.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"message": "Not Found"}
    wrong = api.post("/api/v1/health")
    assert wrong.status_code == 405 and "message" in wrong.json()
