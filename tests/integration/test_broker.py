"""The session's real broker: it answers, carries messages, and reports its own status."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.kafka.broker import BrokerError, LocalBroker, is_answering, is_answering_async
from support.ports import free_ports

pytestmark = pytest.mark.integration


async def test_produce_and_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"test.broker.{uuid.uuid4().hex[:8]}"
    sent = [(f"host-{i % 2}".encode(), f"message {i}".encode()) for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                compression_type="zstd")
    await producer.start()
    try:
        for key, value in sent:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                group_id=f"test-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    received: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    received.extend((r.key, r.value) for r in records)
        # A consumer group needs the offsets topic: this proves its single-node settings.
        await consumer.commit()
        committed = await consumer.committed(next(iter(consumer.assignment())))
    finally:
        await consumer.stop()
    assert received == sent  # one partition: same order, nothing lost, nothing doubled
    assert committed == len(sent)


def test_is_answering_tells_a_broker_from_an_empty_port(kafka_bootstrap: str) -> None:
    assert is_answering(kafka_bootstrap, timeout=5.0) is True
    (nobody,) = free_ports(1)
    started = time.monotonic()
    assert is_answering(f"127.0.0.1:{nobody}", timeout=5.0) is False
    assert time.monotonic() - started < 2.0  # nothing listens: no waiting out the timeout


async def test_is_answering_works_inside_a_running_loop(kafka_bootstrap: str) -> None:
    assert await is_answering_async(kafka_bootstrap, timeout=5.0) is True
    assert is_answering(kafka_bootstrap, timeout=5.0) is True  # sync form from a loop


def test_status_of_the_running_broker(kafka_broker: LocalBroker) -> None:
    status = kafka_broker.status()
    assert status.running and status.answering
    assert status.pid is not None and status.pid == int(kafka_broker.pid_file.read_text())
    assert status.bootstrap.startswith("127.0.0.1:")
    assert "Kafka Server started" in kafka_broker.log_file.read_text()


def test_a_second_handle_on_the_same_home_sees_it_and_start_is_a_no_op(
        kafka_broker: LocalBroker) -> None:
    # What `corelane kafka status/start` does from another process: only the files to go on.
    other = LocalBroker(kafka_broker.bootstrap, home=kafka_broker.state_dir.parent,
                        controller_port=kafka_broker.controller_port)
    pid = kafka_broker.status().pid
    assert other.status().pid == pid
    assert other.start(timeout=10).pid == pid


def test_status_where_nothing_runs(tmp_path) -> None:
    (port,) = free_ports(1)
    status = LocalBroker(f"127.0.0.1:{port}", home=tmp_path).status(timeout=1.0)
    assert (status.running, status.pid, status.answering) == (False, None, False)


def test_a_broker_that_dies_while_starting_reports_why(tmp_path) -> None:
    # A 1 MB heap makes the JVM refuse to start: the error must carry its words.
    port, controller_port = free_ports(2)
    broker = LocalBroker(f"127.0.0.1:{port}", home=tmp_path, heap_mb=1,
                         controller_port=controller_port)
    with pytest.raises(BrokerError) as caught:
        broker.start(timeout=60)
    message = str(caught.value)
    assert "exited while starting" in message
    assert "Too small maximum heap" in message
    assert not broker.pid_file.exists()
    assert broker.status(timeout=1.0).running is False
