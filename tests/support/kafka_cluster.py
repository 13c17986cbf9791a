"""pytest plugin: real multi-node and secured Kafka clusters, one per test module.

Only the modules that ask for one pay for it (a cold start of three nodes takes 10-30 s
here). Each node gets free loopback ports, a small heap and its data in a temporary
folder; everything is stopped by its own pids when the module ends. A cluster that cannot
start fails the tests that need it, with its log: a broken environment, not a skip.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from support.ports import free_ports
from support.tls import Certificates, make_certificates

from pipeline.kafka.broker import BrokerError, LocalBroker
from pipeline.settings import Settings, parse_settings

START_TIMEOUT_S = float(os.environ.get("CORELANE_TEST_BROKER_TIMEOUT", "180"))
# Small heaps: three JVMs share a 2-core machine with the tests.
HEAP_MB = 320
SCRAM_USER = "corelane-test"


@dataclass
class Cluster:
    """A started local cluster and how to connect to it."""

    broker: LocalBroker
    home: Path
    security: dict[str, object] = field(default_factory=dict)   # its clients' kafka.security
    broker_settings: dict[str, object] = field(default_factory=dict)   # its kafka.broker
    certificates: Certificates | None = None
    password: str | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def settings(self, home: Path, prefix: str, **security: object) -> Settings:
        """Settings of a client of this cluster (``security`` overrides keys of its
        kafka.security block, e.g. ``password="wrong"``), read as a file would be."""
        return _settings(home, self.bootstrap, {
            "topic_prefix": prefix, "broker": self.broker_settings,
            "security": {**self.security, **security}})


def _settings(home: Path, bootstrap: str, kafka: dict[str, object]) -> Settings:
    text = yaml.safe_dump({"home": str(home), "kafka": {"bootstrap": bootstrap, **kafka}})
    return parse_settings(text, "<test cluster>", env={})


def _start(home: Path, kafka: dict[str, object], nodes: int) -> LocalBroker:
    """Start ``nodes`` nodes on free ports with the settings' kafka block ``kafka``."""
    ports = free_ports(2 * nodes)
    bootstrap = ",".join(f"127.0.0.1:{port}" for port in ports[:nodes])
    settings = _settings(home, bootstrap, kafka)
    settings.kafka.broker.heap_mb = HEAP_MB
    broker = LocalBroker.from_settings(settings, nodes=nodes, controller_ports=ports[nodes:])
    try:
        broker.start(START_TIMEOUT_S)
    except BrokerError as exc:
        broker.stop(grace=10.0)
        pytest.fail(f"the test Kafka cluster did not start: {exc}", pytrace=False)
    return broker


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three combined broker+controller nodes on plaintext loopback."""
    home = tmp_path_factory.mktemp("kafka-cluster")
    broker = _start(home, {}, 3)
    try:
        yield Cluster(broker, home)
    finally:
        broker.stop(grace=20.0)


@pytest.fixture(scope="module")
def secured_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes whose only client listener is SASL_SSL with SCRAM-SHA-512, on
    certificates of a CA made for this module; the nodes replicate over it too."""
    home = tmp_path_factory.mktemp("kafka-secured")
    certificates = make_certificates(home / "tls")
    password = f"pw-{os.urandom(6).hex()}"
    security: dict[str, object] = {
        "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "username": SCRAM_USER,
        "password": password, "ca_file": str(certificates.ca_file)}
    broker_settings: dict[str, object] = {"cert_file": str(certificates.cert_file),
                                          "key_file": str(certificates.key_file)}
    broker = _start(home, {"broker": broker_settings, "security": security}, 3)
    try:
        yield Cluster(broker, home, security=security, broker_settings=broker_settings,
                      certificates=certificates, password=password)
    finally:
        broker.stop(grace=20.0)
