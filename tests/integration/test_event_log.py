"""The event log end to end on the real broker: collect publishes, plain clients read back,
unreadable messages are dead-lettered and the reader goes on."""
from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline import events as ev
from agents.contract import create_app, install
from corelane.runtime import run_agents
from pipeline.bus import Publisher, ensure_topics, read_tail, replay_topic, topic_types
from support.broker_settings import settings_for
from support.label_sink import LabelSink, wait_given

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def read_all(bootstrap: str, topics: list[str], want: int, timeout_s: float = 30.0
                   ) -> list:
    """A plain aiokafka consumer, as any other client would read the topics."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def test_collect_publishes_host_process_and_container_batches(
        kafka_bootstrap: str, docker_engine, docker_containers, tmp_path: Path) -> None:
    container = docker_containers(["sleep", "300"], labels={"app": "e2e"})
    prefix = "e2e-collect."
    env = {**os.environ, "CORELANE_KAFKA": kafka_bootstrap, "CORELANE_HOME": str(tmp_path),
           "DOCKER_HOST": docker_engine.host}
    config = tmp_path / "corelane.yml"
    config.write_text(f"kafka: {{topic_prefix: '{prefix}', partitions: 2, chunk_rows: 50}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "corelane", "--config", str(config), "collect",
         "--count", "2", "--interval", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    records = await read_all(kafka_bootstrap, [prefix + "samples.host", prefix + "samples.process",
                                               prefix + "samples.container"], want=6)
    events = [ev.decode(r.value) for r in records]  # every message validates
    by_type: dict[str, list[ev.Envelope]] = {}
    for record, event in zip(records, events):
        assert record.topic == prefix + event.topic_suffix
        assert record.key == event.host.encode()
        by_type.setdefault(event.type, []).append(event)

    assert len(by_type["host_sample"]) == 2
    assert by_type["host_sample"][0].data.cpu_percent and by_type["host_sample"][0].data.mem_total_bytes > 0

    process_chunks = by_type["process_samples"]
    sweeps = {e.data.batch for e in process_chunks}
    assert len(sweeps) == 2
    for sweep in sweeps:
        parts = [e.data for e in process_chunks if e.data.batch == sweep]
        assert sorted(p.chunk for p in parts) == list(range(parts[0].chunks))
        assert all(len(p.samples) <= 50 for p in parts)
    pids = {s.pid for e in process_chunks for s in e.data.samples}
    assert os.getpid() in pids and 1 in pids

    container_events = by_type["container_samples"]
    seen = {c.id: c for e in container_events for c in e.data.samples}
    assert container.id in seen
    assert seen[container.id].labels.get("app") == "e2e"
    assert seen[container.id].pids


async def test_an_agent_dead_letters_what_it_cannot_read_and_goes_on(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = settings_for(kafka_bootstrap, tmp_path, f"e2e-dlq-{os.getpid()}.")
    await ensure_topics(cfg)
    labels = cfg.topic("label")
    boom = ev.envelope(ev.Label(cls="idle", pid=1, start_time=1, author="boom"), host="h", seq=1)
    good = ev.envelope(ev.Label(cls="latency_critical", pid=1, start_time=2), host="h", seq=2)
    wrong_topic = ev.envelope(ev.Alert(id="x-1", rule="x", opened_at=1.0, message="y"),
                              host="h", seq=1)
    sink = LabelSink(fail_on="boom")
    app = create_app(cfg, app_id=f"{cfg.kafka.topic_prefix}agents")
    stop = asyncio.Event()
    async with Publisher(cfg) as publisher:
        install(app, sink, cfg, publisher)
        running = asyncio.create_task(run_agents(app, stop))
        try:
            deadline = time.monotonic() + 60
            await wait_given(app, labels, running, 60)
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for value in (b"{not json", ev.encode(wrong_topic), None, ev.encode(boom),
                              ev.encode(good)):
                    await producer.send_and_wait(labels, value, key=b"h")
            finally:
                await producer.stop()
            while not sink.seen:
                assert time.monotonic() < deadline + 30, "the good label never arrived"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)
        assert publisher.stats.dead_lettered == {labels: 3}
    assert sink.seen == [good]
    assert sink.stats.failures == 1 and "a handler failed" in (sink.stats.last_failure or "")
    assert sink.stats.events == 2

    letters = [ev.decode(r.value) for r in
               await read_all(kafka_bootstrap, [cfg.topic("deadletter")], want=3)]
    reasons = [letter.data.reason for letter in letters]
    assert any("not a corelane envelope" in r for r in reasons)
    assert any(f"does not belong on {labels}" in r for r in reasons)
    assert any("empty message" in r for r in reasons)
    assert {letter.data.topic for letter in letters} == {labels}
    assert len({letter.data.offset for letter in letters}) == 3
    assert {base64.b64decode(letter.data.payload_b64) for letter in letters} == {
        b"{not json", ev.encode(wrong_topic), b""}
    assert {letter.data.reader for letter in letters} == {"label-sink"}


async def test_topics_are_created_with_the_configured_partitions(kafka_bootstrap: str,
                                                                 tmp_path: Path) -> None:
    cfg = settings_for(kafka_bootstrap, tmp_path, "e2e-topics.")
    cfg.kafka.partitions = 3
    created = await ensure_topics(cfg)
    assert sorted(created) == sorted(ev.topic_name(t, "e2e-topics.") for t in ev.EVENT_TYPES)
    assert await ensure_topics(cfg) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(created)
    finally:
        await admin.close()
    assert {d["topic"]: len(d["partitions"]) for d in described} == {t: 3 for t in created}


async def test_replay_reads_a_topic_from_its_beginning_or_a_span_to_its_end(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = settings_for(kafka_bootstrap, tmp_path, f"e2e-replay-{os.getpid()}.")
    await ensure_topics(cfg)
    types = topic_types(cfg, ["command"])
    async with Publisher(cfg) as publisher:
        for mode in ("emergency", "balanced"):
            await publisher.publish(ev.Command(name="mode", args={"mode": mode}))
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(cfg.topic("command"), b"not an event")
        finally:
            await producer.stop()
        await asyncio.sleep(1.5)
        await publisher.publish(ev.Command(name="mode", args={"mode": "power_save"}))
    everything = [e.data.args["mode"] async for e in replay_topic(cfg, "command", types)]
    assert everything == ["emergency", "balanced", "power_save"]   # the unreadable one skipped
    recent = [e.data.args["mode"] async for e in replay_topic(cfg, "command", types, since_s=1.0)]
    assert recent == ["power_save"]
    # The tail is counted back from the newest message, not from now: after a quiet spell
    # it still gives the last events.
    await asyncio.sleep(2.0)
    assert [e.data.args["mode"] async for e in replay_topic(cfg, "command", types,
                                                            since_s=1.0)] == []
    tail = [e.data.args["mode"] async for e in read_tail(cfg, "command", types, span_s=1.0)]
    assert tail == ["power_save"]
    longer = [e.data.args["mode"] async for e in read_tail(cfg, "command", types, span_s=60)]
    assert longer == everything
    empty = cfg.model_copy(deep=True)
    empty.kafka.topic_prefix = f"e2e-empty-{os.getpid()}."
    await ensure_topics(empty)
    assert [e async for e in read_tail(empty, "command", topic_types(empty, ["command"]),
                                       span_s=60)] == []
