"""pytest plugin: one real Kafka broker per test session.

The broker listens on free loopback ports with its data in a temporary folder, so a test
run never collides with a broker a user already runs on 9092. It is stopped by its own pid
when the session ends. If it cannot start, the tests that need it fail with the broker's
log: a missing broker is a broken environment, not a reason to skip quietly.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.ports import free_ports

from pipeline.kafka.broker import BrokerError, LocalBroker

# A cold start measures 5-45 s on a 2-core machine; leave room for a busy one.
START_TIMEOUT_S = float(os.environ.get("CORELANE_TEST_BROKER_TIMEOUT", "180"))
HEAP_MB = 512


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's started LocalBroker (for tests that look at the broker itself)."""
    port, controller_port = free_ports(2)
    broker = LocalBroker(bootstrap=f"127.0.0.1:{port}",
                         home=tmp_path_factory.mktemp("kafka-home"),
                         heap_mb=HEAP_MB, controller_port=controller_port)
    try:
        broker.start(START_TIMEOUT_S)
    except BrokerError as exc:
        pytest.fail(f"the test Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop(grace=20.0)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker) -> str:
    """``"127.0.0.1:PORT"`` of the session's real broker."""
    return kafka_broker.bootstrap
