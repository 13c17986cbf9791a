"""The local broker's configuration and bookkeeping, without starting a JVM."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kafka import broker as broker_mod
from pipeline.kafka.broker import (BrokerError, LocalBroker, MavenStep, is_answering,
                                   maven_step, new_cluster_id, parse_bootstrap, pom_digest,
                                   server_properties)
from pipeline.settings import load_settings


def props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    return props(server_properties(host="127.0.0.1", port=19092, controller_port=19093,
                                   data_dir=tmp_path / "data"))


def test_one_combined_kraft_node(config: dict[str, str]) -> None:
    assert config["process.roles"] == "broker,controller"
    assert config["node.id"] == "1"
    assert config["controller.listener.names"] == "CONTROLLER"
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    # The two quorum styles must never be mixed (format --standalone needs this one alone).
    assert "controller.quorum.voters" not in config


def test_listeners_only_on_loopback(config: dict[str, str]) -> None:
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert "0.0.0.0" not in "".join(config.values())
    assert config["listener.security.protocol.map"] == \
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"


def test_single_node_replication(config: dict[str, str]) -> None:
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr", "default.replication.factor",
                "min.insync.replicas"):
        assert config[key] == "1", key
    assert config["group.initial.rebalance.delay.ms"] == "0"


def test_small_machine_threads_and_data_dir(tmp_path: Path, config: dict[str, str]) -> None:
    assert config["num.network.threads"] == "2"
    assert config["num.io.threads"] == "2"
    assert config["log.dirs"] == str(tmp_path / "data")


def test_same_port_for_broker_and_controller_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="must differ"):
        server_properties(host="127.0.0.1", port=9092, controller_port=9092, data_dir=tmp_path)


def test_controller_port_defaults_to_broker_port_plus_one(tmp_path: Path) -> None:
    assert LocalBroker("127.0.0.1:29092", home=tmp_path).controller_port == 29093
    assert LocalBroker("127.0.0.1:29092", home=tmp_path, controller_port=30000) \
        .controller_port == 30000


def test_from_settings_uses_home_heap_and_address(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path),
                                  "CORELANE_KAFKA": "127.0.0.1:39092"})
    broker = LocalBroker.from_settings(settings, cache_dir=tmp_path / "cache")
    assert broker.state_dir == tmp_path / "kafka"
    assert (broker.host, broker.port) == ("127.0.0.1", 39092)
    assert broker.heap_mb == settings.kafka.broker.heap_mb
    assert broker.jar_dir == tmp_path / "cache" / f"kafka-{pom_digest()}"


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_bootstrap("localhost:9094, other:9092") == ("localhost", 9094)
    for bad in ("9092", "host:", "host:notaport", "host:70000"):
        with pytest.raises(BrokerError, match="host:port"):
            parse_bootstrap(bad)


def test_cluster_id_has_kafkas_uuid_form() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_")


def test_a_remote_address_is_never_started(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="loopback"):
        LocalBroker("10.20.30.40:9092", home=tmp_path).start(timeout=1)


# ---------------------------------------------------------------------------- pid files

def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_pid_file_of_a_gone_process_is_removed(tmp_path: Path) -> None:
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path)
    broker.state_dir.mkdir(parents=True)
    broker.pid_file.write_text(f"{dead_pid()}\n")
    assert broker.read_pid() is None
    assert not broker.pid_file.exists()
    assert broker.stop() is False


def test_pid_file_naming_an_unrelated_process_is_stale_and_never_signalled(
        tmp_path: Path) -> None:
    # A reused pid: alive, but not this home's broker. Stopping must not touch it.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        broker = LocalBroker("127.0.0.1:29092", home=tmp_path)
        broker.state_dir.mkdir(parents=True)
        broker.pid_file.write_text(f"{sleeper.pid}\n")
        assert broker.stop() is False
        assert sleeper.poll() is None
        assert not broker.pid_file.exists()
        status = broker.status(timeout=0.5)
        assert (status.running, status.pid) == (False, None)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_garbage_pid_file_is_removed(tmp_path: Path) -> None:
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path)
    broker.state_dir.mkdir(parents=True)
    broker.pid_file.write_text("not a pid\n")
    assert broker.read_pid() is None
    assert not broker.pid_file.exists()


# --------------------------------------------------------------------------------- jars

def test_cached_jars_are_not_resolved_again(tmp_path: Path, monkeypatch) -> None:
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path, cache_dir=tmp_path / "cache")
    broker.jar_dir.mkdir(parents=True)
    (broker.jar_dir / ".complete").write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn: must not be needed
    assert broker.fetch() == broker.jar_dir


def test_missing_maven_is_explained(tmp_path: Path, monkeypatch) -> None:
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match=r"Maven \(mvn\) is not installed"):
        broker.fetch()


def test_failing_maven_shows_its_last_lines_and_caches_nothing(tmp_path: Path,
                                                               monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mvn"
    fake.write_text("#!/bin/sh\necho 'resolving...'\n"
                    "echo '[ERROR] Could not transfer artifact kafka_2.13'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path, cache_dir=cache)
    with pytest.raises(BrokerError) as caught:
        broker.fetch()
    assert "exit code 1" in str(caught.value)
    assert "Could not transfer artifact kafka_2.13" in str(caught.value)
    assert not broker.jar_dir.exists()
    assert [p.name for p in cache.iterdir()] == []  # the temporary folder is gone too


# Lines of `mvn -B dependency:copy-dependencies` on pipeline/kafka/pom.xml with an empty
# local repository, as Maven 3.8 printed them (the first one with its colour resets).
MAVEN_LINES = [
    "\x1b[0m\x1b[0m[INFO] Scanning for projects...",
    "[INFO] Downloading from central: https://repo.maven.apache.org/maven2/org/apache/maven/"
    "plugins/maven-clean-plugin/2.5/maven-clean-plugin-2.5.pom",
    "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/maven/"
    "plugins/maven-clean-plugin/2.5/maven-clean-plugin-2.5.pom (3.9 kB at 12 kB/s)",
    "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/maven/"
    "plugins/maven-site-plugin/3.3/maven-site-plugin-3.3.jar (124 kB at 4.1 MB/s)",
    "[INFO] --- maven-dependency-plugin:2.8:copy-dependencies (default-cli) @ "
    "corelane-local-kafka ---",
    "[INFO] Copying kafka-server-common-4.4.0.jar to /home/me/.cache/corelane/"
    ".kafka-c5919b36a4b5-k2x9/jars/kafka-server-common-4.4.0.jar",
    "[INFO] Copying kafka_2.13-4.4.0.jar to /home/me/.cache/corelane/"
    ".kafka-c5919b36a4b5-k2x9/jars/kafka_2.13-4.4.0.jar",
    "[INFO] BUILD SUCCESS",
    "[INFO] Total time:  7.743 s",
]
MAVEN_STEPS = [
    None,
    MavenStep("downloading", "maven-clean-plugin-2.5.pom"),
    MavenStep("downloaded", "maven-clean-plugin-2.5.pom", 3_900),
    MavenStep("downloaded", "maven-site-plugin-3.3.jar", 124_000),
    None,
    MavenStep("copied", "kafka-server-common-4.4.0.jar"),
    MavenStep("copied", "kafka_2.13-4.4.0.jar"),
    None,
    None,
]


def test_mavens_lines_are_the_artifacts_it_fetches_and_copies() -> None:
    assert [maven_step(line) for line in MAVEN_LINES] == MAVEN_STEPS


def test_fetch_tells_each_artifact_as_maven_reports_it(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "out.txt").write_text("\n".join(MAVEN_LINES) + "\n")
    fake = bin_dir / "mvn"
    # prints what Maven printed and leaves a broker jar where it was asked to
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path / 'out.txt'}'\n"
                    "for a; do case $a in -DoutputDirectory=*) out=${a#*=};; esac; done\n"
                    "mkdir -p \"$out\" && touch \"$out/kafka_2.13-4.4.0.jar\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path, cache_dir=tmp_path / "cache")
    told: list[MavenStep] = []
    assert broker.fetch(told.append) == broker.jar_dir
    assert told == [step for step in MAVEN_STEPS if step is not None]
    assert (broker.jar_dir / "kafka_2.13-4.4.0.jar").exists()


def test_pom_digest_follows_the_pom(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text(broker_mod.POM.read_text())
    same = pom_digest(pom)
    pom.write_text(broker_mod.POM.read_text().replace("4.", "5.", 1))
    assert pom_digest(pom) != same
    assert same == pom_digest()


def test_is_answering_is_false_quickly_for_a_bad_address() -> None:
    assert is_answering("not-an-address", timeout=1.0) is False


# ----------------------------------------------------------------------------- clusters

def test_cluster_nodes_share_one_static_quorum(tmp_path: Path) -> None:
    voters = [(1, 29101), (2, 29102), (3, 29103)]
    config = props(server_properties(host="127.0.0.1", port=29002, controller_port=29102,
                                     data_dir=tmp_path / "d2", node_id=2, voters=voters,
                                     replication=(3, 2)))
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == \
        "1@127.0.0.1:29101,2@127.0.0.1:29102,3@127.0.0.1:29103"
    assert "controller.quorum.bootstrap.servers" not in config   # never both styles
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:29002,CONTROLLER://127.0.0.1:29102"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor"):
        assert config[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr",
                "share.coordinator.state.topic.min.isr"):
        assert config[key] == "2", key


def test_a_cluster_takes_consecutive_ports_or_the_listed_ones(tmp_path: Path) -> None:
    cluster = LocalBroker("127.0.0.1:29092", home=tmp_path, nodes=3)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 29092, 29095), (2, 29093, 29096), (3, 29094, 29097)]
    assert cluster.bootstrap == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
    assert [n.dir for n in cluster.nodes] == [tmp_path / "kafka" / f"node-{i}" for i in (1, 2, 3)]
    assert len({n.pid_file for n in cluster.nodes}) == 3
    assert cluster.replication == (3, 2)
    listed = LocalBroker("127.0.0.1:31000,127.0.0.1:31007,127.0.0.1:31003", home=tmp_path,
                         nodes=3, controller_ports=[32000, 32001, 32002])
    assert [(n.port, n.controller_port) for n in listed.nodes] == [
        (31000, 32000), (31007, 32001), (31003, 32002)]
    # One node keeps the layout and ports it always had.
    single = LocalBroker("127.0.0.1:29092", home=tmp_path)
    assert single.nodes[0].dir == tmp_path / "kafka" and single.controller_port == 29093
    assert single.replication == (1, 1)


@pytest.mark.parametrize("bootstrap, kwargs, expected", [
    ("127.0.0.1:29092,127.0.0.1:29093", {"nodes": 3}, "lists 2 addresses for a cluster of 3"),
    ("127.0.0.1:29092", {"nodes": 3, "controller_port": 29093}, "collide"),
    ("127.0.0.1:29092", {"nodes": 2, "controller_ports": [1, 2, 3]}, "3 controller ports"),
    ("127.0.0.1:65534", {"nodes": 3}, "out of range"),
    ("127.0.0.1:29092,localhost:29093", {"nodes": 2}, "different hosts"),
])
def test_bad_cluster_ports_are_explained(tmp_path: Path, bootstrap: str, kwargs: dict,
                                         expected: str) -> None:
    with pytest.raises(BrokerError, match=expected):
        LocalBroker(bootstrap, home=tmp_path, **kwargs)


def test_stop_and_status_find_the_cluster_this_home_last_started(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path),
                                  "CORELANE_KAFKA": "127.0.0.1:39092"})
    assert len(LocalBroker.from_settings(settings).nodes) == 1
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "nodes").write_text("3\n")
    assert len(LocalBroker.from_settings(settings).nodes) == 3
    assert len(LocalBroker.from_settings(settings, nodes=1).nodes) == 1
    assert LocalBroker.from_settings(settings).replication == (3, 2)


def test_a_secured_listener(tmp_path: Path) -> None:
    listener = broker_mod.ListenerSecurity(
        protocol="SASL_SSL", keystore=tmp_path / "ks.pem", truststore=tmp_path / "ca.pem",
        mechanism="SCRAM-SHA-256", username="fleet", password="pw-1")
    config = props(server_properties(host="127.0.0.1", port=29092, controller_port=29093,
                                     data_dir=tmp_path, listener=listener))
    assert config["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert config["advertised.listeners"] == "SASL_SSL://127.0.0.1:29092"
    assert config["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert config["inter.broker.listener.name"] == "SASL_SSL"
    assert (config["ssl.keystore.type"], config["ssl.truststore.type"]) == ("PEM", "PEM")
    assert config["ssl.keystore.location"] == str(tmp_path / "ks.pem")
    assert config["ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert config["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert config["listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required '
        'username="fleet" password="pw-1";')
    assert "pw-1" not in repr(listener)
    broker = LocalBroker("127.0.0.1:29092", home=tmp_path, listener=listener)
    assert broker._scram_args() == ["--add-scram", 'SCRAM-SHA-256=[name=fleet,password="pw-1"]']


def test_a_jvm_argument_file_quotes_each_argument() -> None:
    """The storage tool's arguments go in a file (the password is then on no command
    line); the JVM reads a quote or a backslash in it only escaped."""
    text = broker_mod.java_argfile(["format", 'S=[name=u,password="a\\b c"]'])
    assert text == '"format"\n"S=[name=u,password=\\"a\\\\b c\\"]"\n'


@pytest.mark.parametrize("listener, expected", [
    (broker_mod.ListenerSecurity(protocol="SSL"), "needs a certificate and key"),
    (broker_mod.ListenerSecurity(protocol="SASL_PLAINTEXT", username="u"), "SCRAM user"),
    (broker_mod.ListenerSecurity(protocol="SASL_PLAINTEXT", username="u", password='a"b'),
     "may not contain quotes"),
])
def test_an_incomplete_secured_listener_is_refused(tmp_path: Path, listener, expected) -> None:
    with pytest.raises(BrokerError, match=expected):
        server_properties(host="127.0.0.1", port=29092, controller_port=29093,
                          data_dir=tmp_path, listener=listener)


def test_a_node_keystore_is_its_key_then_its_certificate(tmp_path: Path) -> None:
    from support.tls import make_certificates

    certs = make_certificates(tmp_path)
    pem = broker_mod.keystore_pem(certs.cert_file, certs.key_file)
    assert pem.index("BEGIN PRIVATE KEY") < pem.index("BEGIN CERTIFICATE")
    with pytest.raises(BrokerError, match="not a PKCS#8 PEM key"):
        broker_mod.keystore_pem(certs.cert_file, certs.cert_file)
    with pytest.raises(BrokerError, match="holds no PEM certificate"):
        broker_mod.keystore_pem(certs.key_file, certs.key_file)


def test_a_secured_home_needs_the_nodes_certificate(tmp_path: Path) -> None:
    from support.tls import make_certificates

    certs = make_certificates(tmp_path / "tls")
    base = (f"home: {tmp_path}\nkafka:\n  security: {{protocol: SASL_SSL, username: u, "
            f"password: p, ca_file: '{certs.ca_file}'}}\n")
    from pipeline.settings import parse_settings
    with pytest.raises(BrokerError, match="kafka.broker.cert_file, kafka.broker.key_file"):
        LocalBroker.from_settings(parse_settings(base, "x.yml", env={}))
    cfg = parse_settings(base + f"  broker: {{cert_file: '{certs.cert_file}', "
                                f"key_file: '{certs.key_file}'}}\n", "x.yml", env={})
    broker = LocalBroker.from_settings(cfg)
    assert broker.listener.protocol == "SASL_SSL" and broker.listener.username == "u"
    assert broker.listener.truststore == certs.ca_file
    assert broker.client["security_protocol"] == "SASL_SSL"     # the readiness probe logs in
    assert broker.tls_files == (str(certs.cert_file), str(certs.key_file))


async def test_why_no_broker_answers_names_each_address() -> None:
    from support.ports import free_ports

    first, second = free_ports(2)
    why = await broker_mod.why_not_answering(f"127.0.0.1:{first},127.0.0.1:{second}", 3.0)
    assert why == f"127.0.0.1:{first}, 127.0.0.1:{second}: nothing listens there"
    assert "host:port" in (await broker_mod.why_not_answering("nohostport", 1.0) or "")
