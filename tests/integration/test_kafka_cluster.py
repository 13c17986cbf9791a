"""A real 3-node KRaft cluster on loopback: topics get three copies and two in sync, and
when the node leading the samples is killed outright (SIGKILL) and started again while
samples are published, the recorder's history holds every sample exactly once."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from agents.recorder import Recorder
from pipeline import events as ev
from pipeline.bus import Publisher, cluster_replication, ensure_topics
from pipeline.kafka.broker import is_answering
from storage.history import HistoryStore
from support.history_check import topic_ids
from support.kafka_cluster import Cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def sample(n: int) -> ev.HostSample:
    return ev.HostSample(cpu_percent=[float(n % 100)], cpu_freq_khz=[None], load=(0.0, 0.0, 0.0),
                         mem_total_bytes=1 << 30, mem_available_bytes=n)


async def describe(bootstrap: str, topics: list[str]) -> tuple[list[dict], dict[str, str]]:
    """The topics' partitions (once the answering node knows every one with a leader:
    a node learns of a topic created through another a moment later), and each topic's
    min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                described = await admin.describe_topics(topics)
                answers = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None})
                     for t in topics])
            except KafkaError as exc:  # a random node was asked: the dead one, not yet fenced
                assert exc.retriable and time.monotonic() < deadline, exc
                await asyncio.sleep(0.2)
                continue
            if all(d["error_code"] == 0 and d["partitions"]
                   and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
                break
            assert time.monotonic() < deadline, f"topics without leaders: {described}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    least = {name: value for answer in answers for _, _, _, name, entries in answer.resources
             for key, value, *_ in entries if key == "min.insync.replicas"}
    return described, least


async def test_topics_get_three_copies_and_two_in_sync(kafka_cluster: Cluster,
                                                      tmp_path: Path) -> None:
    cfg = kafka_cluster.settings(tmp_path, "e2e-rf.")
    cfg.kafka.partitions = 2
    assert await cluster_replication(cfg) == (3, 2)
    created = await ensure_topics(cfg)
    assert sorted(created) == sorted(cfg.topic(t) for t in ev.EVENT_TYPES)
    described, least = await describe(kafka_cluster.bootstrap, created)
    for topic in described:
        assert len(topic["partitions"]) == 2, topic["topic"]
        for partition in topic["partitions"]:
            assert sorted(partition["replicas"]) == [1, 2, 3], topic["topic"]
            assert sorted(partition["isr"]) == [1, 2, 3], topic["topic"]
    assert least == {t: "2" for t in created}


def test_kafka_status_shows_every_node_of_the_home(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster.broker
    done = subprocess.run(
        [sys.executable, "-m", "corelane", "kafka", "status"], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
        env={**os.environ, "CORELANE_HOME": str(kafka_cluster.home), "COLUMNS": "200",
             "CORELANE_KAFKA": cluster.bootstrap, "CORELANE_CONFIG": str(ROOT / "config" /
                                                                      "default.yml")})
    assert done.returncode == 0, done.stderr
    assert "3 of 3 nodes running" in done.stdout
    pids = cluster.read_pids()
    for node in cluster.nodes:
        assert f"node {node.node_id}" in done.stdout
        assert f"{node.address}  pid {pids[node.node_id]}" in done.stdout


async def test_a_killed_leader_loses_and_duplicates_no_sample(kafka_cluster: Cluster,
                                                             tmp_path: Path) -> None:
    cluster = kafka_cluster.broker
    cfg = kafka_cluster.settings(tmp_path, f"e2e-kill-{os.getpid()}.")
    cfg.storage.flush_interval_s = 0.3
    await ensure_topics(cfg)
    topic = cfg.topic("host_sample")
    described, _ = await describe(kafka_cluster.bootstrap, [topic])
    leader = described[0]["partitions"][0]["leader"]

    published: list[str] = []
    failures: list[BaseException] = []
    stop_publishing = asyncio.Event()
    stop_recording = asyncio.Event()

    async def publish(publisher: Publisher) -> None:
        n = 0
        while not stop_publishing.is_set():
            # Several in flight at once, as a collector's sweep sends them: retries of a
            # batch to a new leader must neither drop nor repeat any of them.
            events = [publisher.stamper.stamp(sample(n + i)) for i in range(5)]
            n += len(events)
            try:
                await publisher.publish_many(events)
            except Exception as exc:  # noqa: BLE001 - counted, and the test fails on it
                failures.append(exc)
                return
            published.extend(e.id for e in events)
            await asyncio.sleep(0.02)

    store = HistoryStore(tmp_path / "history.duckdb", cfg.storage)
    async with Publisher(cfg) as publisher:
        recorder = Recorder(cfg, store, publisher)
        await recorder.start()
        recording = asyncio.create_task(recorder.run(stop_recording))
        publishing = asyncio.create_task(publish(publisher))
        try:
            await asyncio.sleep(2.0)
            before_kill = len(published)
            killed_pid = await asyncio.to_thread(cluster.kill_node, leader)
            assert not is_answering(cluster.node(leader).address, 2.0)
            # Publishing goes on through the failover: the controller fences the dead node
            # (kafka.broker's session timeout, 6 s; longer when it was the active
            # controller too) and another in-sync node leads the partition.
            deadline = time.monotonic() + 60
            while True:
                described, _ = await describe(kafka_cluster.bootstrap, [topic])
                if described[0]["partitions"][0]["leader"] != leader:
                    break
                assert time.monotonic() < deadline, "no other node took the lead"
                await asyncio.sleep(0.5)
            led_over = len(published)
            await asyncio.sleep(2.0)
            assert len(published) > led_over, "nothing was taken after the new leader"
            restarted_pid = await asyncio.to_thread(cluster.start_node, leader, 120.0)
            assert restarted_pid != killed_pid
            await asyncio.sleep(2.0)
        finally:
            stop_publishing.set()
            await asyncio.wait_for(publishing, 90)
            assert not failures, f"a publish failed: {failures[0]!r}"
        assert len(published) > before_kill + 50, "publishing stalled after the kill"
        # The recorder reads up to the ends as they are now, then stops.
        deadline = time.monotonic() + 60
        while recorder.stats.messages < len(published) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop_recording.set()
        await asyncio.wait_for(recording, 60)
        await recorder.stop()
    store.close()

    on_topic = await topic_ids(kafka_cluster.bootstrap, topic)
    assert sorted(on_topic) == sorted(published), "the log lost or repeated a sample"
    con = duckdb.connect(str(tmp_path / "history.duckdb"), read_only=True)
    try:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM host_samples").fetchone()
        recorded = {r[0] for r in con.execute("SELECT event_id FROM host_samples").fetchall()}
    finally:
        con.close()
    assert total == distinct == len(published), (total, distinct, len(published))
    assert recorded == set(published)

