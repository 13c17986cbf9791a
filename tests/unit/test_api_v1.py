"""The /api/v1 endpoints over a small recorded world: each read answers from the live view
or the history, each command publishes its event (and only with the token), and every
error is a 4xx JSON message."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.server import json_depth
from pipeline import events as ev
from pipeline.bus.hub import EventHub
from support.api_world import BATCH, CONTAINER, TRADER, ApiWorld, auth

V1 = "/api/v1"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    w = ApiWorld(tmp_path).populate()
    yield w
    w.close()


def get(world: ApiWorld, path: str, status: int = 200) -> dict:
    response = world.client.get(V1 + path)
    assert response.status_code == status, response.text
    return response.json()


# --- reads -------------------------------------------------------------------------------

def test_health_says_live_and_ready(world: ApiWorld) -> None:
    body = get(world, "/health")
    assert body["live"] is True and body["ready"] is True and body["host"] == "h1"


def test_processes_are_the_live_sweep_with_class_plan_and_delay(world: ApiWorld) -> None:
    page = get(world, "/processes")
    by_pid = {p["pid"]: p for p in page["items"]}
    assert set(by_pid) == {TRADER[0], BATCH[0]} and page["next_offset"] is None
    trader = by_pid[TRADER[0]]
    assert (trader["class"], trader["tier"], trader["cpus"], trader["policy"]) == (
        "latency_critical", "ultra_critical", "1", "other")
    assert trader["run_delay_ms_s"] == pytest.approx(2.0)     # 2 ms more per 1 s sweep
    cruncher = by_pid[BATCH[0]]
    assert (cruncher["policy"], cruncher["nice"], cruncher["ioclass"]) == ("idle", 19, "idle")


@pytest.mark.parametrize("query, pids", [
    ("tier=low", [BATCH[0]]), ("class=latency_critical", [TRADER[0]]),
    ("name=crunch", [BATCH[0]]), ("container=c0ffee", [BATCH[0]]), ("tier=critical", []),
    ("limit=1", [TRADER[0]]), ("limit=1&offset=1", [BATCH[0]])])
def test_processes_filter_and_page(world: ApiWorld, query: str, pids: list[int]) -> None:
    assert [p["pid"] for p in get(world, f"/processes?{query}")["items"]] == pids


def test_first_page_says_where_the_next_starts(world: ApiWorld) -> None:
    assert get(world, "/processes?limit=1")["next_offset"] == 1


def test_one_process_with_its_trail(world: ApiWorld) -> None:
    body = get(world, f"/processes/{TRADER[0]}")
    assert body["live"] is True and body["start_time"] == TRADER[1]
    assert [c["reason"] for c in body["classifications"]] == ["rule trading"]
    assert [d["cpus"] for d in body["decisions"]] == ["1"]
    assert body["enforcements"][0]["before"] == {"nice": 0, "cpus": "0-1"}
    assert body["enforcements"][0]["tier"] == "ultra_critical"
    by_identity = get(world, f"/processes/{BATCH[0]}:{BATCH[1]}")
    assert by_identity["process"]["name"] == "cruncher"


def test_a_past_process_by_identity_and_unknown_ones(world: ApiWorld) -> None:
    world.record(ev.ProcessSamples(batch="s9", samples=[]), at=9.0)   # everything gone
    past = get(world, f"/processes/{TRADER[0]}:{TRADER[1]}")
    assert past["live"] is False and past["process"]["name"] == "trader"
    assert "no live process" in get(world, f"/processes/{TRADER[0]}", 404)["message"]
    assert "in the history" in get(world, "/processes/77:1", 404)["message"]
    assert "PID:START_TIME" in get(world, "/processes/abc", 400)["message"]


def test_event_lists_filter_by_tier_pid_and_time(world: ApiWorld) -> None:
    assert [c["pid"] for c in get(world, "/classifications?tier=low")["items"]] == [BATCH[0]]
    assert [d["target"] for d in get(world, "/decisions?tier=low")["items"]] == [
        "container", "process"]
    assert get(world, f"/decisions?pid={TRADER[0]}")["items"][0]["reason"] == \
        "exclusive core for ultra_critical"
    assert get(world, "/enforcements?tier=low")["items"] == []
    assert get(world, "/classifications?from=-1s")["items"] == []
    assert get(world, "/decisions?limit=1")["next_offset"] == 1
    assert "cannot read the time" in get(world, "/decisions?from=yesterday", 400)["message"]


def test_event_lists_leave_out_the_rows_of_empty_chunks(world: ApiWorld) -> None:
    # An empty batch is kept as one row with its item columns NULL (so a replay reads it
    # back); it is no classification, decision or enforcement to list.
    before = {path: get(world, path)["items"]
              for path in ("/classifications", "/decisions", "/enforcements")}
    world.record(ev.Classifications(batch="c-empty", items=[]), at=8.0)
    world.record(ev.Decisions(batch="plan-empty", plan_seq=4, mode="balanced", items=[]),
                 at=8.1)
    world.record(ev.Enforcements(batch="e-empty", plan_seq=4, plan_id="plan-empty",
                                 items=[]), at=8.2)
    rows = world.engine.run("SELECT count(*) FROM enforcements WHERE target IS NULL", [])
    assert rows.rows == [(1,)], "the empty batch should be stored as a row"
    for path, items in before.items():
        assert get(world, path)["items"] == items, path


def test_tiers_are_pools_members_and_demand(world: ApiWorld) -> None:
    body = get(world, "/tiers")
    assert (body["plan_seq"], body["mode"], body["strategy"]) == (3, "balanced", "exclusive")
    tiers = {t["tier"]: t for t in body["tiers"]}
    assert [t["tier"] for t in body["tiers"]] == ["ultra_critical", "low"]
    assert tiers["low"]["demand_cores"] == pytest.approx(0.98)
    assert (tiers["ultra_critical"]["cpus"], tiers["ultra_critical"]["members"]) == ("1", 1)
    # the host's pressure, and the tier group's memory and pressure (tier limits)
    assert body["pressure"] == {"memory_some": 12.5}
    assert (tiers["low"]["memory_bytes"], tiers["low"]["pressure"]) == (
        3 << 20, {"memory_some": 4.0})
    assert (tiers["ultra_critical"]["memory_bytes"], tiers["ultra_critical"]["pressure"]) == (
        None, {})


def test_containers_and_their_stats(world: ApiWorld) -> None:
    (box,) = get(world, "/containers")
    assert (box["name"], box["tier"], box["processes"]) == ("cruncher-box", "low", 1)
    stats = get(world, "/containers/c0ffee/stats?step=60")
    assert stats["container"]["id"] == CONTAINER and stats["series"][0]["memory_bytes_max"] \
        == 1 << 20
    assert "no live container" in get(world, "/containers/beef/stats", 404)["message"]


def test_core_utilization_live_and_over_a_window(world: ApiWorld) -> None:
    now = get(world, "/core-utilization")
    assert [c["percent"] for c in now["live"]] == [35.0, 80.0] and now["series"] == []
    window = get(world, "/core-utilization?from=-1h&step=3600")
    assert {p["cpu"] for p in window["series"]} == {0, 1}
    assert "empty" in get(world, "/core-utilization?from=-1h&to=-2h", 400)["message"]


def test_latency_stats_per_tier_and_per_process(world: ApiWorld) -> None:
    tiers = {r["tier"]: r for r in get(world, "/latency-stats?from=-1h")["rows"]}
    assert tiers["low"]["p99"] == pytest.approx(2.0) and tiers["low"]["samples"] == 7
    per = get(world, "/latency-stats?from=-1h&per=process&tier=ultra_critical")["rows"]
    assert [(r["pid"], r["name"]) for r in per] == [(TRADER[0], "trader")]
    assert get(world, "/latency-stats?per=thread", 400)["message"].startswith("bad request")


def test_alerts_open_and_resolved(world: ApiWorld) -> None:
    assert [a["alert_id"] for a in get(world, "/alerts?state=open")["items"]] == ["a2"]
    resolved = get(world, "/alerts?state=resolved")["items"]
    assert [a["alert_id"] for a in resolved] == ["a1"] and resolved[0]["resolved_at"]


def test_topology_stats_and_unknown_host(world: ApiWorld) -> None:
    assert len(get(world, "/topology")["cpus"]) == len(world.topology.cpus)
    assert "unknown host 'nope'" in get(world, "/processes?host=nope", 404)["message"]
    parts = get(world, "/stats")["parts"]
    assert parts == {}


def test_stats_give_counts_and_rates(tmp_path: Path) -> None:
    w = ApiWorld(tmp_path)
    from pipeline.bus import BusStats

    class Part:
        stats = BusStats()

        def health(self, now: float):  # noqa: ANN201
            from pipeline.health import ok
            return ok()
    part = Part()
    part.stats.published["label"] = 5
    w.service.parts = {"bus": part}
    try:
        first = w.client.get(f"{V1}/stats").json()["parts"]["bus"]
        assert first["counters"]["published.label"] == 5
        assert first["rates"]["published.label"] == 0      # nothing to compare with yet
        part.stats.published["label"] = 50
        again = w.client.get(f"{V1}/stats").json()["parts"]["bus"]
        assert again["counters"]["published.label"] == 50
        assert again["rates"]["published.label"] > 0
    finally:
        w.close()


# --- commands ------------------------------------------------------------------------------

def post(world: ApiWorld, path: str, body: object | None, status: int = 202,
         token: bool = True) -> dict:
    response = world.client.post(V1 + path, json=body, headers=auth() if token else {})
    assert response.status_code == status, response.text
    return response.json()


def test_every_post_needs_the_token(world: ApiWorld) -> None:
    for path, body in (("/labels", {"class": "idle", "match": "x"}), ("/mode", {"mode": "auto"}),
                       ("/rebalance", {}), ("/admin/shutdown", {}),
                       ("/classify-workload", {"pid": 1})):
        refused = post(world, path, body, 401, token=False)
        assert "bearer token" in refused["message"]
        wrong = world.client.post(V1 + path, json=body,
                                  headers={"Authorization": "Bearer " + "x" * 32})
        assert wrong.status_code == 401
    assert world.caught.events == []


def test_a_label_by_pid_binds_to_the_identity_read_now(world: ApiWorld) -> None:
    accepted = post(world, "/labels", {"class": "interactive", "pid": os.getpid()})
    (event,) = world.caught.events
    assert accepted == {"id": event.id, "type": "label", "topic": "corelane.labels"}
    assert (event.data.cls, event.data.pid, event.data.author) == ("interactive",
                                                                   os.getpid(), "api")
    assert event.data.start_time is not None


def test_register_process_is_a_label_naming_a_tier(world: ApiWorld) -> None:
    post(world, "/register-process", {"tier": "critical", "match": "^trader$"})
    (event,) = world.caught.events
    assert (event.type, event.data.tier, event.data.cls, event.data.match) == (
        "label", "critical", None, "^trader$")


@pytest.mark.parametrize("path, body, says", [
    ("/labels", {"class": "gold", "match": "x"}, "unknown class 'gold'"),
    ("/labels", {"class": "idle"}, "exactly one of a pid or a match"),
    ("/labels", {"class": "idle", "match": "("}, "match '('"),
    ("/labels", {"class": "idle", "pid": 2 ** 31 - 2}, "no process"),
    ("/register-process", {"tier": "gold", "pid": 1}, "unknown tier 'gold'"),
    ("/mode", {"mode": "turbo"}, "unknown mode 'turbo'"),
    ("/mode", {"mode": "auto", "extra": 1}, "extra"),
    ("/containers/c0ffee/priority", {"tier": "gold"}, "unknown tier"),
])
def test_bad_commands_are_400_and_publish_nothing(world: ApiWorld, path: str, body: dict,
                                                  says: str) -> None:
    assert says in post(world, path, body, 400)["message"]
    assert world.caught.events == []


def test_mode_rebalance_priority_and_shutdown_are_commands(world: ApiWorld) -> None:
    post(world, "/mode", {"mode": "emergency", "hosts": ["h1"]})
    post(world, "/rebalance", None)
    post(world, "/containers/c0ffee/priority", {"tier": "critical"})
    post(world, "/admin/shutdown", {"reason": "maintenance"})
    commands = [(e.data.name, e.data.args) for e in world.caught.events]
    assert commands == [
        ("mode", {"mode": "emergency", "hosts": ["h1"]}), ("rebalance", {}),
        ("container_priority", {"container_id": CONTAINER, "tier": "critical", "host": "h1"}),
        ("shutdown", {"host": "h1", "reason": "maintenance"})]
    assert "no live container" in post(world, "/containers/beef/priority",
                                       {"tier": "low"}, 404)["message"]


def test_classify_workload_gives_the_judgement_and_its_features(world: ApiWorld) -> None:
    body = post(world, "/classify-workload", {"pid": TRADER[0]}, 200)
    assert body["name"] == "trader" and body["samples"] == 8
    assert "cpu_mean" in body["features"] and body["decision"]["cpus"] == "1"
    assert "no window" in post(world, "/classify-workload", {"pid": 4}, 404)["message"]


# --- bodies and errors ---------------------------------------------------------------------

def test_deep_or_huge_bodies_are_refused_before_parsing(world: ApiWorld) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/query", "/labels"):
        response = world.client.post(V1 + path, content=deep, headers={
            **auth(), "content-type": "application/json"})
        assert response.status_code == 400 and "deeper" in response.json()["message"]
    huge = world.client.post(V1 + "/query", content=b"x" * 2_000_000)
    assert huge.status_code == 413 and "api.max_body_bytes" in huge.json()["message"]
    assert json_depth(b'{"a": "[[[[[[[["}', limit=3) <= 3     # brackets in strings do not count


def test_not_json_and_wrong_types_are_400(world: ApiWorld) -> None:
    response = world.client.post(V1 + "/mode", content=b"{nope", headers={
        **auth(), "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["message"].startswith("bad request")
    assert post(world, "/classify-workload", {"pid": "x"}, 400)["message"]


def test_stream_refuses_unknown_types(world: ApiWorld) -> None:
    assert "unknown event type" in get(world, "/stream?types=nope", 400)["message"]


def test_docs_and_schema_are_served_and_typed(world: ApiWorld) -> None:
    schema = world.client.get(V1 + "/openapi.json").json()
    assert world.client.get(V1 + "/docs").status_code == 200
    for path, item in schema["paths"].items():
        for method, op in item.items():
            ok = op["responses"].get("200") or op["responses"].get("202")
            assert ok is not None, (path, method)
            content = ok.get("content", {})
            if "application/json" in content:
                assert content["application/json"]["schema"] != {}, (path, method)
    assert "/metrics" in schema["info"]["description"]


# --- the hub that feeds the stream ---------------------------------------------------------

async def test_a_slow_follower_loses_its_backlog_and_is_told() -> None:
    hub = EventHub()
    slow = hub.follow(types=["alert"], backlog=3)
    other = hub.follow(hosts=["h2"])
    for i in range(10):
        hub.offer(ev.envelope(ev.open_alert("r", f"m{i}", 0.0), "h1", i))
    dropped, event = await slow.take(0.1)
    # Each time the backlog of 3 was full it went: three times, and the newest is left.
    assert dropped == 9 and event is not None and event.data.message == "m9"
    assert other.queue.empty()
    hub.leave(slow)
    assert hub.followers == 1
    assert await asyncio.wait_for(other.take(0.05), 1) == (0, None)


def test_a_repeated_read_is_served_from_memory_until_it_is_stale(tmp_path: Path) -> None:
    w = ApiWorld(tmp_path)
    w.settings.api.read_cache_s = 0.5
    from fastapi.testclient import TestClient
    from api.server import create_api
    client = TestClient(create_api(w.service))
    try:
        w.populate()
        first = client.get(V1 + "/processes").json()
        w.record(ev.ProcessSamples(batch="gone", samples=[]), at=20.0)   # all gone
        assert client.get(V1 + "/processes").json() == first           # within 0.5 s
        assert client.get(V1 + "/processes?limit=5").json()["items"] == []   # another read
        assert client.get(V1 + "/stream?types=nope").status_code == 400    # errors not kept
        import time
        time.sleep(0.6)
        assert client.get(V1 + "/processes").json()["items"] == []
    finally:
        client.close()
        w.close()


async def test_reads_that_arrive_while_an_answer_is_made_wait_for_it() -> None:
    from api.server import ReadCache
    made = 0

    async def slow_app(scope, receive, send) -> None:  # noqa: ANN001
        nonlocal made
        made += 1
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"answer"})

    cache = ReadCache(slow_app, ttl_s=5.0)
    bodies: list[list[bytes]] = []

    async def request() -> None:
        got: list[bytes] = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                got.append(message["body"])
        await cache({"type": "http", "method": "GET", "path": "/api/v1/tiers",
                     "query_string": b""}, None, send)  # type: ignore[arg-type]
        bodies.append(got)

    await asyncio.gather(*(request() for _ in range(10)))
    assert made == 1 and bodies == [[b"answer"]] * 10
