"""Roles: which parts each runs, which consumer group it joins, what it serves; and the
ownership of hosts by partition that lets workers split them."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from fastapi.testclient import TestClient

from agents.ownership import Ownership, follow_partitions, partition_of
from api.server import create_part_api
from corelane.roles import PARTS, ROLES, agent_group, partitioned, parts_of
from pipeline import events as ev
from pipeline.bus import Publisher, Stamper
from pipeline.health import ok
from pipeline.settings import Settings, load_settings
from pipeline.stats import Stats


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={"CORELANE_HOME": str(tmp_path), "CORELANE_KAFKA": "127.0.0.1:1",
                              "CORELANE_HOST": "edge-a"})


def test_every_part_runs_in_exactly_one_role_of_a_fleet_and_all_runs_them_all() -> None:
    fleet = [PARTS[r] for r in ROLES if r != "all"]
    every = [part for parts in fleet for part in parts]
    assert len(every) == len(set(every))                    # none in two roles
    assert parts_of("all") == set(every)                    # all: today's one process
    assert parts_of("edge") == {"collector", "applier", "tuner"}
    assert {"classifier", "allocator"} <= parts_of("worker")
    assert parts_of("recorder") == {"recorder", "api"}
    with pytest.raises(ValueError, match="unknown role 'boss'; choose one of all, edge"):
        parts_of("boss")


def test_workers_share_one_group_and_each_edge_has_its_own(settings: Settings) -> None:
    other = settings.model_copy(update={"host_id": "edge-b"})
    assert agent_group("worker", settings) == agent_group("worker", other) \
        == agent_group("all", settings) == "corelane.agents"
    # an edge's applier must see every decision for its host, so it is no member of a
    # group that would hand it some hosts' partitions
    assert agent_group("edge", settings) == "corelane.edge.edge-a"
    assert agent_group("edge", other) == "corelane.edge.edge-b"
    assert partitioned("worker") and not partitioned("all") and not partitioned("edge")


def test_a_host_lands_where_the_producer_puts_its_key() -> None:
    partitioner = DefaultPartitioner()
    for host in ("edge-a", "edge-b", "web-7", "db-1", "x" * 40):
        for n in (1, 4, 12):
            assert partition_of(host, n) == partitioner(host.encode(), list(range(n)), [])


def test_reassign_says_what_moved_and_which_hosts_are_owned() -> None:
    own = Ownership(4)
    hosts = [f"h{i}" for i in range(20)]
    assert own.reassign([0, 1]) == ({0, 1}, set())
    assert own.reassign([1, 2, 3]) == ({2, 3}, {0})
    assert own.hosts_in(hosts, [0]) == [h for h in hosts if partition_of(h, 4) == 0]
    assert [h for h in hosts if own.owns(h)] == [h for h in hosts if partition_of(h, 4) != 0]


class FakeApp:
    def __init__(self) -> None:
        self.receivers: list = []
        self.on_partitions_assigned = SimpleNamespace(connect=self.receivers.append)


class Part:
    name = "part"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, set[int]]] = []
        self.fail = fail

    def release(self, partitions: frozenset[int]) -> None:
        self.calls.append(("release", set(partitions)))

    async def take_over(self, partitions: frozenset[int]) -> None:
        self.calls.append(("take_over", set(partitions)))
        if self.fail:
            raise RuntimeError("broker gone")


def test_an_assignment_releases_what_moved_away_before_rebuilding_what_came(
        settings: Settings) -> None:
    app, own = FakeApp(), Ownership(4)
    failing, part = Part(fail=True), Part()
    follow_partitions(app, settings, own, [failing, part])
    [on_assigned] = app.receivers
    samples, other = settings.topic("process_samples"), settings.topic("decisions")
    tp = TopicPartition

    asyncio.run(on_assigned(app, {tp(samples, 0), tp(samples, 1), tp(other, 3)}))
    assert part.calls == [("take_over", {0, 1})]   # only the samples topic says who owns
    asyncio.run(on_assigned(app, {tp(samples, 1), tp(samples, 2)}))
    # a part that fails to take over costs its own state, never the other part's
    assert part.calls[1:] == [("release", {0}), ("take_over", {2})]
    assert failing.calls[-2:] == [("release", {0}), ("take_over", {2})]
    asyncio.run(on_assigned(app, {tp(samples, 1), tp(samples, 2)}))   # nothing moved
    assert len(part.calls) == 3


class Quiet:
    def __init__(self) -> None:
        self.stats = Stats()

    def health(self, now: float):  # type: ignore[no-untyped-def]
        return ok(0.5)


def test_a_worker_serves_its_own_health_and_metrics_and_nothing_else() -> None:
    api = TestClient(create_part_api("w1", {"classifier": Quiet()}, 0.0, "worker"))
    health = api.get("/api/v1/health").json()
    assert health["role"] == "worker" and health["host"] == "w1"
    assert set(health["parts"]) == {"classifier"}          # never another role's parts
    assert "corelane_classifier_lag_s 0.5" in api.get("/metrics/").text
    missing = api.get("/api/v1/processes")
    assert missing.status_code == 404 and "recorder" in missing.json()["message"]


class Producer:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
        self.keys.append(key)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_events_about_another_host_are_keyed_by_that_host(settings: Settings) -> None:
    publisher = Publisher(settings, Stamper("worker-1"))
    publisher._producer = producer = Producer()  # type: ignore[assignment]
    stamp = publisher.stamper.stamp
    events = [stamp(ev.Classifications(batch="b", items=[]), host="edge-b"),
              stamp(ev.Command(name="x"))]
    asyncio.run(publisher.publish_many(events))
    assert producer.keys == [b"edge-b", b"worker-1"]
