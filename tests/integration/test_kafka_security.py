"""A secured 3-node cluster: its only client listener is SASL_SSL with SCRAM-SHA-512 on a
CA made for the test. Every kind of client corelane has gets through with the configured
user and certificates, and a wrong password or an untrusted CA is a clear error soon,
never a hang."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import duckdb
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agents.contract import create_app, install
from agents.recorder import Recorder
from corelane.runtime import run_agents
from pipeline import events as ev
from pipeline.bus import BrokerUnreachable, Publisher, ensure_topics, replay_topic, topic_types
from pipeline.kafka.broker import answers, is_answering
from pipeline.kafka.clients import client_options
from support.label_sink import LabelSink, wait_given
from storage.history import HistoryStore
from support.kafka_cluster import Cluster

pytestmark = pytest.mark.integration


def test_only_a_client_with_the_user_and_the_ca_gets_an_answer(secured_cluster: Cluster,
                                                               tmp_path: Path) -> None:
    cfg = secured_cluster.settings(tmp_path, "e2e-sec-probe.")
    assert answers(cfg, 10.0)
    assert not is_answering(secured_cluster.bootstrap, 5.0)            # plaintext
    assert not answers(secured_cluster.settings(tmp_path, "x.", password="wrong"), 10.0)
    # A client certificate the CA signed is taken too (mutual TLS, as the nodes ask for one).
    certs = secured_cluster.certificates
    assert certs is not None
    assert answers(secured_cluster.settings(tmp_path, "x.", cert_file=str(certs.cert_file),
                                            key_file=str(certs.key_file)), 10.0)


async def test_publisher_to_topic_to_reader_and_recorder(secured_cluster: Cluster,
                                                         tmp_path: Path) -> None:
    cfg = secured_cluster.settings(tmp_path, "e2e-sec-bus.")
    cfg.storage.flush_interval_s = 0.2
    assert await ensure_topics(cfg)
    async with Publisher(cfg) as publisher:
        sent = [await publisher.publish(ev.Label(cls="idle", pid=100 + i, start_time=i))
                for i in range(5)]
        read = [e async for e in replay_topic(cfg, "label", topic_types(cfg, ["label"]))]
        assert [e.id for e in read] == [e.id for e in sent]

        store = HistoryStore(tmp_path / "h.duckdb", cfg.storage)
        recorder = Recorder(cfg, store, publisher)
        await recorder.start()
        stop = asyncio.Event()
        running = asyncio.create_task(recorder.run(stop))
        deadline = time.monotonic() + 30
        while recorder.stats.rows < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(running, 30)
        await recorder.stop()
    store.close()
    con = duckdb.connect(str(tmp_path / "h.duckdb"), read_only=True)
    try:
        recorded = con.execute("SELECT event_id FROM labels ORDER BY pid").fetchall()
    finally:
        con.close()
    assert [r[0] for r in recorded] == [e.id for e in sent]


async def test_a_faust_agent_round_trip(secured_cluster: Cluster, tmp_path: Path) -> None:
    cfg = secured_cluster.settings(tmp_path, "e2e-sec-faust.")
    await ensure_topics(cfg)
    app_id = f"{cfg.kafka.topic_prefix}agents"
    app = create_app(cfg, app_id=app_id)
    sink = LabelSink()
    stop = asyncio.Event()
    async with Publisher(cfg) as publisher:
        install(app, sink, cfg, publisher)
        running = asyncio.create_task(run_agents(app, stop))
        try:
            deadline = time.monotonic() + 90
            await wait_given(app, cfg.topic("label"), running, 90)
            label = await publisher.publish(ev.Label(cls="interactive", pid=7, start_time=7))
            while not sink.seen:
                assert time.monotonic() < deadline, "the label never reached the agent"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)
    assert [e.id for e in sink.seen] == [label.id]
    # faust's own topic got the cluster's replication, not the single-node 1.
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap,
                                **client_options(cfg.kafka.security))
    await admin.start()
    try:
        leader_topic = f"{app_id}-__assignor-__leader"
        described = await admin.describe_topics([leader_topic])
    finally:
        await admin.close()
    assert described[0]["error_code"] == 0, described
    assert [len(p["replicas"]) for p in described[0]["partitions"]] == [3]


async def test_a_wrong_password_is_a_clear_error_soon(secured_cluster: Cluster,
                                                     tmp_path: Path) -> None:
    cfg = secured_cluster.settings(tmp_path, "e2e-sec-wrong.", password="not-the-password")
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as caught:
        await asyncio.wait_for(Publisher(cfg).start(), 60)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert secured_cluster.bootstrap in message
    assert "SASL_SSL as 'corelane-test' (SCRAM-SHA-512)" in message
    assert "invalid credentials" in message
    assert "check kafka.security.username, password (CORELANE_KAFKA_PASSWORD)" in message
    assert "ca_file" not in message
    assert "not-the-password" not in message and secured_cluster.password not in message


async def test_an_untrusted_ca_is_a_clear_error_soon(secured_cluster: Cluster,
                                                    tmp_path: Path) -> None:
    assert secured_cluster.certificates is not None
    cfg = secured_cluster.settings(tmp_path, "e2e-sec-ca.",
                                   ca_file=str(secured_cluster.certificates.other_ca_file))
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as caught:
        await asyncio.wait_for(Publisher(cfg).start(), 60)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "check kafka.security.ca_file" in message and "password" not in message
