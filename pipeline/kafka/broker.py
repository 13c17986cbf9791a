"""The local Kafka broker: jars from Maven, one combined KRaft node or a cluster of them on
loopback, each node with its own pid file.

No Kafka tarball can be downloaded everywhere corelane runs, but Maven Central can be
reached, so the broker runs straight from the jars that ``pom.xml`` (next to this file)
resolves into a cache folder. Each JVM is both broker and KRaft controller, bound to the
loopback interface only; the nodes of a cluster share one cluster id and a controller
quorum of all of them, so that a test can kill one and see the others carry on. Their
state (config, data, logs, pid files) lives in ``<home>/kafka/``; the jars live in
``$CORELANE_CACHE`` or ``~/.cache/corelane`` in a folder named after a hash of the pom, so a
version change in the pom resolves afresh.

A node is stopped by the pid recorded when it was started, never by searching for
processes by name: a machine may run other Kafka brokers that are none of our business.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol

from pipeline import procfs
from pipeline.hostpaths import LIVE
from pipeline.kafka.clients import client_options
from pipeline.settings import protocol_uses_sasl, protocol_uses_tls

if TYPE_CHECKING:
    from pipeline.settings import Settings

POM = Path(__file__).with_name("pom.xml")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.yaml")
# Written last into a resolved jar folder: a folder without it is an interrupted download.
_COMPLETE_MARKER = ".complete"
# The JVM's main classes; a pid whose command line lacks this is not our broker.
_BROKER_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
# How many of Maven's lines an error quotes.
_MAVEN_LINES = 20


class BrokerError(Exception):
    """The local broker cannot be fetched, started or stopped; the message is for a person."""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``LocalBroker.status()`` found.

    ``running`` is about the process this home's pid file names; ``answering`` is about the
    address, which may also be served by a broker corelane did not start.
    """

    bootstrap: str
    running: bool
    pid: int | None
    answering: bool
    state_dir: Path
    log_file: Path
    nodes: tuple[NodeStatus, ...] = ()     # each node: its address and pid (None: down)


@dataclass(frozen=True)
class MavenStep:
    """One artifact Maven reports while it resolves the broker's jars: a file it starts to
    download, one it has downloaded (with its size), or a jar it copied into place."""

    action: Literal["downloading", "downloaded", "copied"]
    artifact: str                 # the file's name, e.g. kafka_2.13-4.1.0.jar
    size_bytes: int | None = None


class StartProgress(Protocol):
    """Told how a fetch and a cold start go, to show them: each step Maven reports, the
    seconds waited so far for the broker to answer (about twice a second), and its answer."""

    def maven(self, step: MavenStep) -> None: ...

    def waiting(self, elapsed_s: float, timeout_s: float) -> None: ...

    def answered(self) -> None: ...


# --------------------------------------------------------------------------- pure helpers

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAVEN_TRANSFER = re.compile(r"^\[INFO\] (Downloading|Downloaded) from [^:]+: (\S+)"
                             r"(?: \((\d+(?:\.\d+)?) (B|kB|MB|GB)\b)?")
_MAVEN_COPY = re.compile(r"^\[INFO\] Copying (\S+) to ")
_UNITS = {"B": 1, "kB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000}


def maven_step(line: str) -> MavenStep | None:
    """What one line of Maven's batch-mode output says about an artifact, if anything.

    Maven prints ``Downloading from central: URL``, then ``Downloaded from central: URL
    (3.9 kB at 12 kB/s)`` for every pom and jar it has no copy of, and the dependency
    plugin ``Copying NAME.jar to PATH`` for every jar it puts in the output folder.
    """
    line = _ANSI.sub("", line).rstrip()
    copied = _MAVEN_COPY.match(line)
    if copied:
        return MavenStep("copied", copied.group(1))
    transfer = _MAVEN_TRANSFER.match(line)
    if transfer is None:
        return None
    verb, url, amount, unit = transfer.groups()
    artifact = url.rsplit("/", 1)[-1]
    if verb == "Downloading":
        return MavenStep("downloading", artifact)
    size = round(float(amount) * _UNITS[unit]) if amount else None
    return MavenStep("downloaded", artifact, size)



def default_cache_dir() -> Path:
    """Where resolved jars are kept: ``$CORELANE_CACHE`` or ``~/.cache/corelane``."""
    configured = os.environ.get("CORELANE_CACHE")
    return Path(os.path.expanduser(configured)) if configured else Path.home() / ".cache" / "corelane"


def pom_digest(pom: Path = POM) -> str:
    """A short hash of the pom's bytes; it names the jar folder so a pom edit re-resolves."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:12]


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Split the first ``host:port`` of a bootstrap list.

    A local broker has exactly one address; settings allow a list because clients of a
    real cluster take several, so the first one is the address this broker listens on.
    """
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerError(f"kafka bootstrap address {bootstrap!r} is not host:port "
                          "(for example 127.0.0.1:9092)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs: the only addresses a local broker binds to."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    That is the form Kafka's ``Uuid`` prints. Generating it here saves starting a JVM just
    for ``StorageTool random-uuid``. Kafka refuses ids that begin with '-' (they read as
    command-line flags), so those are drawn again.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class ListenerSecurity:
    """How the nodes' client listener is secured: the protocol, and for TLS the PEM files,
    for SASL the SCRAM mechanism and the user created at format time (the nodes also log
    in to each other as that user)."""

    protocol: str = "PLAINTEXT"           # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    keystore: Path | None = None          # one PEM file: the node's key, then its certificate
    truststore: Path | None = None        # the CA bundle the nodes trust (PEM)
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)   # never printed

    @property
    def uses_sasl(self) -> bool:
        return protocol_uses_sasl(self.protocol)

    @property
    def uses_tls(self) -> bool:
        return protocol_uses_tls(self.protocol)


PLAINTEXT = ListenerSecurity()
# Characters that would have to be escaped in server.properties, a JAAS line and the
# format tool's SCRAM argument; a local test cluster's user does without them.
_UNQUOTABLE = set('"\\,[]=\n\r')


def _listener_security_lines(listener: ListenerSecurity) -> list[str]:
    lines = []
    if listener.uses_tls:
        if listener.keystore is None or listener.truststore is None:
            raise BrokerError(f"a {listener.protocol} listener needs a certificate and key "
                              "(kafka.broker.cert_file, kafka.broker.key_file) and a CA "
                              "(kafka.security.ca_file)")
        lines += [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={listener.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={listener.truststore}",
            # A client may present a certificate (then it must be one the CA signed).
            "ssl.client.auth=requested",
        ]
    if listener.uses_sasl:
        user, password = listener.username or "", listener.password or ""
        if not user or not password:
            raise BrokerError(f"a {listener.protocol} listener needs a SCRAM user: set "
                              "kafka.security.username and password")
        if (set(user) | set(password)) & _UNQUOTABLE:
            raise BrokerError("the local cluster's SCRAM username and password may not "
                              "contain quotes, backslashes, commas, brackets, '=' or line "
                              "breaks")
        mechanism = listener.mechanism
        lines += [
            f"sasl.enabled.mechanisms={mechanism}",
            f"sasl.mechanism.inter.broker.protocol={mechanism}",
            f"listener.name.{listener.protocol.lower()}.{mechanism.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";',
        ]
    return lines


def server_properties(*, host: str, port: int, controller_port: int, data_dir: Path | str,
                      node_id: int = 1, network_threads: int = 2, io_threads: int = 2,
                      offsets_partitions: int = 4,
                      voters: Sequence[tuple[int, int]] | None = None,
                      replication: tuple[int, int] = (1, 1),
                      listener: ListenerSecurity = PLAINTEXT) -> str:
    """The ``server.properties`` of one combined broker+controller KRaft node.

    Alone (``voters`` None), the node uses ``controller.quorum.bootstrap.servers``, which
    pairs with ``StorageTool format --standalone``. In a cluster every node names the same
    static quorum, ``voters`` as (node id, controller port), in
    ``controller.quorum.voters``, which pairs with a format without ``--standalone``; the
    two styles must never be mixed. ``replication`` is (factor, min in-sync replicas) for
    topics created without one and for the internal topics: the defaults (3) would leave a
    single node unable to start consumer groups and transactions. Few threads and few
    offsets partitions keep a 2-core machine responsive; the first consumer group creates
    every offsets partition, and 50 of them take seconds here.
    """
    if port == controller_port:
        raise BrokerError(f"the broker port and the controller port are both {port}; "
                          "they must differ")
    factor, least = replication
    name = listener.protocol
    if voters:
        quorum = "controller.quorum.voters=" + ",".join(
            f"{voter}@{host}:{voter_port}" for voter, voter_port in voters)
    else:
        quorum = f"controller.quorum.bootstrap.servers={host}:{controller_port}"
    lines = [
        "# Written by corelane on every start; edits here are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node_id}",
        quorum,
        f"listeners={name}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners={name}://{host}:{port}",
        f"listener.security.protocol.map={name}:{name},CONTROLLER:PLAINTEXT",
        f"inter.broker.listener.name={name}",
        "controller.listener.names=CONTROLLER",
        *_listener_security_lines(listener),
        f"log.dirs={data_dir}",
        f"num.network.threads={network_threads}",
        f"num.io.threads={io_threads}",
        "num.partitions=1",
        f"default.replication.factor={factor}",
        f"min.insync.replicas={least}",
        f"offsets.topic.num.partitions={offsets_partitions}",
        f"offsets.topic.replication.factor={factor}",
        f"transaction.state.log.replication.factor={factor}",
        f"transaction.state.log.min.isr={least}",
        f"share.coordinator.state.topic.replication.factor={factor}",
        f"share.coordinator.state.topic.min.isr={least}",
        # A lone consumer should not wait 3 s for companions that never come.
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
    ]
    if voters:
        lines += [
            # A node killed outright is fenced after this long and its partitions led
            # elsewhere; the default 9 s holds every write to them for that long.
            "broker.session.timeout.ms=6000",
            "broker.heartbeat.interval.ms=1000",
        ]
    return "\n".join(lines) + "\n"


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a text file, or '' when it does not exist (yet)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------- process checks

def _proc_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie still answers ``kill(pid, 0)``)."""
    stat = procfs.read_stat(LIVE.proc, pid)
    return stat is not None and stat.state not in ("Z", "X")


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- readiness

async def is_answering_async(bootstrap: str, timeout: float = 5.0, *,
                             client: Mapping[str, Any] | None = None, brokers: int = 1) -> bool:
    """True if a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout``
    that names at least ``brokers`` live brokers; of a list, any address will do (a
    cluster with one node down still answers).

    An open port is not readiness: a starting KRaft broker accepts connections before it
    can serve requests, and only a metadata answer that names the brokers shows that
    clients will work. A TCP connect comes first so that an address nobody listens on
    gives False at once instead of after aiokafka's retries. ``client`` is how to connect
    (``pipeline.kafka.clients.client_options``: TLS, SASL); plaintext without it.
    """
    return await why_not_answering(bootstrap, timeout, client=client, brokers=brokers) is None


async def why_not_answering(bootstrap: str, timeout: float = 5.0, *,
                            client: Mapping[str, Any] | None = None,
                            brokers: int = 1) -> str | None:
    """None when :func:`is_answering_async` would be True, else why not, for a person:
    per address, nothing listening, or what the connection said (a refused login, a
    certificate the CA did not sign), which a client's own "unable to bootstrap" hides."""
    try:
        addresses = [parse_bootstrap(part) for part in bootstrap.split(",")]
    except BrokerError as exc:
        return str(exc)
    deadline = time.monotonic() + timeout
    reasons: dict[str, list[str]] = {}
    for host, port in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reasons.setdefault(f"no answer within {timeout:.0f} s", []).append(f"{host}:{port}")
            continue
        reason = await _answers(host, port, remaining, client, brokers)
        if reason is None:
            return None
        reasons.setdefault(reason, []).append(f"{host}:{port}")
    return "; ".join(f"{', '.join(where)}: {reason}" for reason, where in reasons.items())


async def _answers(host: str, port: int, timeout: float, client: Mapping[str, Any] | None,
                   brokers: int) -> str | None:
    """None if the broker at host:port answers naming ``brokers`` brokers, else why not."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, _port_open, host, port, min(timeout, 1.0)):
        return "nothing listens there"
    remaining = max(0.1, deadline - time.monotonic())
    conn = None
    try:
        async with asyncio.timeout(remaining):
            conn = await create_conn(host, port, client_id="corelane-probe",
                                     request_timeout_ms=int(remaining * 1000), **(client or {}))
            response = await conn.send(MetadataRequest([]))
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except Exception as exc:  # any failure to answer means "not answering"; it says why
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        if conn is not None:
            conn.close()
    if len(response.brokers) < max(1, brokers):
        return f"names {len(response.brokers)} live brokers, not yet {brokers}"
    return None


def is_answering(bootstrap: str, timeout: float = 5.0, *,
                 client: Mapping[str, Any] | None = None, brokers: int = 1) -> bool:
    """Blocking form of :func:`is_answering_async`, callable from sync code and from a thread
    that already runs an event loop (it then probes from a short-lived worker thread)."""
    def probe() -> bool:
        # A private loop, never installed as the thread's current loop, so a caller's
        # loop (pytest-asyncio's session loop, for one) is left untouched.
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(
                is_answering_async(bootstrap, timeout, client=client, brokers=brokers))
        finally:
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return probe()
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(probe()), daemon=True)
    worker.start()
    worker.join(timeout + 5.0)
    return bool(result and result[0])


async def why_unreachable(settings: Settings, timeout: float = 5.0) -> str | None:
    """None when the configured brokers answer, connected as ``kafka.security`` says;
    else why not (nothing listening, a refused login, an unverified certificate)."""
    return await why_not_answering(settings.kafka.bootstrap, timeout,
                                   client=client_options(settings.kafka.security))


def answers(settings: Settings, timeout: float = 5.0) -> bool:
    """Whether the configured brokers answer a metadata request, connected as
    ``kafka.security`` says (callable from sync code and from inside an event loop)."""
    return is_answering(settings.kafka.bootstrap, timeout,
                        client=client_options(settings.kafka.security))


# ------------------------------------------------------------------------------ the nodes

def java_argfile(arguments: list[str]) -> str:
    """The text of a JVM argument file (``java @file``) holding ``arguments``: one per
    line, each quoted, with the quote and the backslash escaped."""
    return "".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"\n'
                   for a in arguments)


@dataclass(frozen=True)
class Node:
    """One combined broker+controller JVM of a home: its ports and its own folder
    (``server.properties``, ``data/``, ``broker.log``, ``broker.out``, ``broker.pid``)."""

    node_id: int
    host: str
    port: int
    controller_port: int
    dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "broker.log"

    @property
    def out_file(self) -> Path:
        return self.dir / "broker.out"

    @property
    def keystore(self) -> Path:
        return self.dir / "keystore.pem"


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    address: str
    pid: int | None
    log_file: Path


def node_dirs(state_dir: Path, nodes: int) -> list[Path]:
    """Where each node of a home keeps its state: a single node in ``<home>/kafka`` itself
    (as it always has), the nodes of a cluster in ``<home>/kafka/node-N``."""
    if nodes == 1:
        return [state_dir]
    return [state_dir / f"node-{i}" for i in range(1, nodes + 1)]


def node_ports(bootstrap: str, nodes: int, controller_port: int | None = None,
               controller_ports: Sequence[int] | None = None
               ) -> tuple[str, list[int], list[int]]:
    """(host, broker ports, controller ports) of a home's ``nodes`` nodes.

    The bootstrap list names each node's broker port, or names one and the nodes take the
    ports from it on. The controller ports are given, or follow from ``controller_port``
    (default: the port after the last broker port), one per node.
    """
    addresses = [parse_bootstrap(part) for part in bootstrap.split(",")]
    host = addresses[0][0]
    if len(addresses) == nodes:
        if any(h != host for h, _ in addresses):
            raise BrokerError(f"the kafka bootstrap addresses {bootstrap} are on different "
                              "hosts; a local cluster runs on one loopback address")
        ports = [p for _, p in addresses]
    elif len(addresses) == 1 or nodes == 1:
        first = addresses[0][1]
        ports = [first + i for i in range(nodes)]
    else:
        raise BrokerError(f"kafka.bootstrap lists {len(addresses)} addresses for a cluster "
                          f"of {nodes} nodes: list one (the nodes take the ports from it on) "
                          "or one per node")
    if controller_ports is not None:
        controllers = list(controller_ports)
        if len(controllers) != nodes:
            raise BrokerError(f"{len(controllers)} controller ports for {nodes} nodes")
    else:
        base = controller_port if controller_port else max(ports) + 1
        controllers = [base + i for i in range(nodes)]
    for port in (*ports, *controllers):
        if not 0 < port < 65536:
            raise BrokerError(f"port {port} of the local Kafka nodes is out of range; "
                              "set kafka.bootstrap and kafka.broker.controller_port")
    clash = sorted(set(ports) & set(controllers))
    if clash or len(set(ports)) != nodes or len(set(controllers)) != nodes:
        raise BrokerError(f"the local Kafka nodes' ports collide (broker ports {ports}, "
                          f"controller ports {controllers}); they must all differ")
    return host, ports, controllers


def keystore_pem(cert_file: Path | str, key_file: Path | str) -> str:
    """The one PEM file a node's ``ssl.keystore.type=PEM`` reads: its key, then its chain."""
    key = Path(key_file).read_text()
    if "ENCRYPTED" in key:
        raise BrokerError(f"kafka.broker.key_file {key_file} is encrypted; the local cluster "
                          "reads an unencrypted PKCS#8 key (BEGIN PRIVATE KEY)")
    if "BEGIN PRIVATE KEY" not in key:
        raise BrokerError(f"kafka.broker.key_file {key_file} is not a PKCS#8 PEM key "
                          "(BEGIN PRIVATE KEY); convert it with "
                          "`openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`")
    cert = Path(cert_file).read_text()
    if "BEGIN CERTIFICATE" not in cert:
        raise BrokerError(f"kafka.broker.cert_file {cert_file} holds no PEM certificate")
    return key.rstrip() + "\n" + cert.rstrip() + "\n"


_NODES_FILE = "nodes"


def recorded_nodes(state_dir: Path) -> int | None:
    """How many nodes this home's broker was last started with, if it says."""
    try:
        count = int((state_dir / _NODES_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return count if count >= 1 else None


# ---------------------------------------------------------------------------- the cluster

class LocalBroker:
    """The Kafka broker of one corelane home, run from Maven-resolved jars: one combined
    KRaft node, or a cluster of ``nodes`` of them on loopback sharing one cluster id and a
    controller quorum of all of them.

    Everything it writes is under ``<home>/kafka/``: one node's files there directly, a
    cluster's under ``node-N/`` each (see :class:`Node`), and ``cluster.id``. Each node is
    started, checked and stopped by its own pid file.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:9092", home: Path | str | None = None,
                 heap_mb: int = 768, controller_port: int | None = None,
                 cache_dir: Path | str | None = None, *, nodes: int = 1,
                 controller_ports: Sequence[int] | None = None,
                 replication: tuple[int, int] | None = None,
                 listener: ListenerSecurity = PLAINTEXT,
                 client: Mapping[str, Any] | None = None,
                 tls_files: tuple[Path | str, Path | str] | None = None) -> None:
        if nodes < 1:
            raise BrokerError(f"a local cluster needs at least one node, not {nodes}")
        self.host, ports, controllers = node_ports(bootstrap, nodes, controller_port,
                                                   controller_ports)
        home_path = Path(os.path.expanduser(str(home))) if home else \
            Path.home() / ".local" / "share" / "corelane"
        self.state_dir = home_path / "kafka"
        self.nodes = [Node(i + 1, self.host, port, ctl, folder) for i, (port, ctl, folder)
                      in enumerate(zip(ports, controllers, node_dirs(self.state_dir, nodes)))]
        # What clients give: one address alone, every node's address for a cluster.
        self.bootstrap = bootstrap if nodes == 1 else \
            ",".join(node.address for node in self.nodes)
        self.port = ports[0]
        self.controller_port = controllers[0]
        self.heap_mb = heap_mb
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # (factor, min in-sync replicas) for the internal topics and topics made without one.
        self.replication = replication or (min(3, nodes), 2 if nodes >= 3 else 1)
        self.listener = listener
        self.client = dict(client or {})     # how the readiness probe connects
        self.tls_files = tls_files           # (certificate, key) every node presents
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, cache_dir: Path | str | None = None,
                      nodes: int | None = None,
                      controller_ports: Sequence[int] | None = None) -> LocalBroker:
        """The broker (or, with ``nodes`` > 1, the cluster) that ``corelane kafka start``
        runs for these settings; ``nodes`` overrides ``kafka.broker.nodes``, and
        ``controller_ports`` the ports that follow from ``kafka.broker.controller_port``."""
        kafka = settings.kafka
        broker, security = kafka.broker, kafka.security
        count = nodes or broker.nodes
        if nodes is None and count == 1:
            # `stop` and `status` after `start --brokers N` mean that cluster.
            count = recorded_nodes(settings.home_path / "kafka") or count
        listener = PLAINTEXT
        tls_files = None
        if security.protocol != "PLAINTEXT":
            password = security.password.get_secret_value() if security.password else None
            listener = ListenerSecurity(
                protocol=security.protocol, mechanism=security.sasl_mechanism,
                username=security.username, password=password,
                truststore=Path(security.ca_file) if security.ca_file else None)
            if security.uses_tls:
                if not (broker.cert_file and broker.key_file and security.ca_file):
                    raise BrokerError(f"kafka.security.protocol is {security.protocol}, so the "
                                      "local nodes need kafka.broker.cert_file, "
                                      "kafka.broker.key_file and kafka.security.ca_file")
                tls_files = (broker.cert_file, broker.key_file)
        try:
            client = client_options(security)
        except ValueError as exc:
            raise BrokerError(str(exc)) from None
        return cls(bootstrap=kafka.bootstrap, home=settings.home_path, heap_mb=broker.heap_mb,
                   controller_port=broker.controller_port, cache_dir=cache_dir, nodes=count,
                   controller_ports=controller_ports,
                   replication=kafka.replication(count), listener=listener, client=client,
                   tls_files=tls_files)

    # paths of the first node (a single broker's, as they always were) ---------------------
    @property
    def pid_file(self) -> Path:
        return self.nodes[0].pid_file

    @property
    def log_file(self) -> Path:
        return self.nodes[0].log_file

    @property
    def cluster_id_file(self) -> Path:
        return self.state_dir / "cluster.id"

    @property
    def jar_dir(self) -> Path:
        return self.cache_dir / f"kafka-{pom_digest()}"

    # jars ----------------------------------------------------------------------------------
    def fetch(self, on_step: Callable[[MavenStep], None] | None = None) -> Path:
        """Resolve the broker's jars with Maven unless this pom's jars are already cached;
        ``on_step`` is told of each artifact Maven reports as it goes.

        Maven writes into a temporary folder that is renamed into place only on success, so
        an interrupted download never passes for a complete one. The pom is copied there
        too, so Maven writes nothing into the source tree.
        """
        target = self.jar_dir
        if (target / _COMPLETE_MARKER).exists():
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not installed, and it is what downloads the "
                              "Kafka broker's jars; install it (Debian: apt-get install "
                              "maven) and run `corelane kafka fetch`")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.cache_dir))
        try:
            shutil.copyfile(POM, work / "pom.xml")
            jars = work / "jars"
            # Not quiet: its lines say which artifact it is at, for ``on_step``.
            with subprocess.Popen(
                    [mvn, "-B", "-Dstyle.color=never", "-f", str(work / "pom.xml"),
                     "dependency:copy-dependencies", "-DincludeScope=runtime",
                     f"-DoutputDirectory={jars}"],
                    cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL) as maven:
                assert maven.stdout is not None
                last: deque[str] = deque(maxlen=_MAVEN_LINES)
                errors: deque[str] = deque(maxlen=_MAVEN_LINES)
                for raw in maven.stdout:
                    line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                    last.append(line)
                    if line.startswith("[ERROR]"):
                        errors.append(line)
                    step = maven_step(line) if on_step is not None else None
                    if step is not None:
                        on_step(step)
                returncode = maven.wait()
            if returncode != 0 or not any(jars.glob("kafka_*.jar")):
                output = "\n".join(errors or last)
                raise BrokerError(f"Maven could not resolve the Kafka broker's jars "
                                  f"(exit code {returncode}); its last lines:\n"
                                  f"{output or '(no output)'}")
            (jars / _COMPLETE_MARKER).write_text(POM.read_text())
            try:
                jars.rename(target)
            except OSError:
                # Another process finished the same download first; its copy is as good.
                if not (target / _COMPLETE_MARKER).exists():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target

    # pid files -----------------------------------------------------------------------------
    def read_pid(self) -> int | None:
        """The pid of this home's first running node, or None."""
        pids = self.read_pids()
        return next(iter(pids.values())) if pids else None

    def read_pids(self) -> dict[int, int]:
        """Node id -> pid of each node of this home that runs.

        A pid file whose process is gone, or whose pid now belongs to some other program
        (pids are reused after a reboot), is stale: it is removed so that nothing is ever
        signalled on its word.
        """
        return {node.node_id: pid for node in self.nodes
                if (pid := self._read_node_pid(node)) is not None}

    def _read_node_pid(self, node: Node) -> int | None:
        try:
            pid = int(node.pid_file.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            node.pid_file.unlink(missing_ok=True)
            return None
        if self._is_our_node(node, pid):
            return pid
        node.pid_file.unlink(missing_ok=True)
        return None

    def _is_our_node(self, node: Node, pid: int) -> bool:
        process = self._processes.get(node.node_id)
        if process is not None and process.pid == pid:
            return process.poll() is None
        if pid <= 0 or not _proc_alive(pid):
            return False
        cmdline = procfs.read_argv(LIVE.proc, pid)
        return _BROKER_MAIN in cmdline and str(node.config_file) in cmdline

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"this cluster has no node {node_id} (nodes 1-{len(self.nodes)})")

    # lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0,
              progress: StartProgress | None = None) -> BrokerStatus:
        """Start every node that is not running and return once each answers a metadata
        request that names all of them.

        Returns at once if this home's nodes already run and answer, or if some other
        broker already answers at the first address (then nothing is started: the address
        is served). Raises BrokerError with the log's last lines if a JVM dies or the nodes
        do not answer within ``timeout`` seconds; nodes that timed out are stopped, so they
        do not hold the ports against the next attempt. ``progress`` is told how the
        fetch of the jars (when they are missing) and the wait go.
        """
        if not is_loopback(self.host):
            raise BrokerError(f"the kafka bootstrap address {self.bootstrap} is not on this "
                              "machine's loopback interface; a local broker only listens on "
                              "127.0.0.1 (set kafka.bootstrap or CORELANE_KAFKA to "
                              "127.0.0.1:PORT, or point it at your running cluster and do "
                              "not start one)")
        running = self.read_pids()
        if not running and is_answering(self.nodes[0].address, 3.0, client=self.client):
            return self.status()
        down = [node for node in self.nodes if node.node_id not in running]
        for node in down:
            for port, what in ((node.port, "broker"), (node.controller_port, "controller")):
                if _port_open(self.host, port, 0.5):
                    raise BrokerError(f"port {port} on {self.host}, wanted for the Kafka "
                                      f"{what} of node {node.node_id}, is already taken by "
                                      "another program that is not one of this home's "
                                      "Kafka nodes; free it or choose another port")
        if down:
            self.fetch(progress.maven if progress is not None else None)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / _NODES_FILE).write_text(f"{len(self.nodes)}\n")
            self._prepare(down)
            # All launched before any is waited for: a quorum of several needs them together.
            for node in down:
                self._launch(node)
        self._wait_until_answering(timeout, progress)
        if progress is not None:
            progress.answered()
        return self.status()

    def start_node(self, node_id: int, timeout: float = 120.0) -> int:
        """Start one node of a running cluster again (after it was killed, say) and return
        its pid once the cluster's metadata names every node."""
        node = self.node(node_id)
        pid = self._read_node_pid(node)
        if pid is None:
            self._prepare([node])
            pid = self._launch(node)
        self._wait_until_answering(timeout)
        return pid

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java is not installed; the Kafka 4 broker needs Java 17 or "
                              "newer (Debian: apt-get install openjdk-17-jre-headless)")
        return java

    def _jvm_args(self, heap_mb: int, node: Node) -> list[str]:
        return [
            self._java(),
            f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 256)}m",
            # The JVM sizes GC and compiler threads by the cores it sees; on a small host
            # that would crowd out the work corelane exists to protect.
            "-XX:ActiveProcessorCount=2",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
            # A short-lived test cluster gains nothing from compiling hot code to the
            # last tier, and each of several nodes would spend a core on it while starting.
            *(["-XX:TieredStopAtLevel=1"] if len(self.nodes) > 1 else []),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dcorelane.broker.log={node.log_file}",
            f"-Dkafka.logs.dir={node.dir}",
            "-cp", f"{self.fetch()}/*",
        ]

    def _cluster_id(self) -> str:
        """The home's cluster id, made on the first format and shared by every node."""
        try:
            cluster_id = self.cluster_id_file.read_text().strip()
        except FileNotFoundError:
            cluster_id = ""
        if not cluster_id:
            cluster_id = new_cluster_id()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _prepare(self, nodes: Sequence[Node]) -> None:
        """Write each node's configuration, and format the data folders not yet formatted
        (``meta.properties`` there says one has been), all in parallel: each format is a
        JVM that takes seconds to start."""
        voters = [(n.node_id, n.controller_port) for n in self.nodes] \
            if len(self.nodes) > 1 else None
        for node in nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            if self.listener.uses_tls:
                assert self.tls_files is not None, "TLS needs the nodes' certificate and key"
                node.keystore.write_text(keystore_pem(*self.tls_files))
                node.keystore.chmod(0o600)
                listener = dataclasses.replace(self.listener, keystore=node.keystore)
            else:
                listener = self.listener
            node.config_file.write_text(server_properties(
                host=self.host, port=node.port, controller_port=node.controller_port,
                data_dir=node.data_dir, node_id=node.node_id, voters=voters,
                replication=self.replication, listener=listener))
            # It holds the SCRAM password the nodes log in to each other with.
            node.config_file.chmod(0o600)
        todo = [node for node in nodes if not (node.data_dir / "meta.properties").exists()]
        if not todo:
            return
        cluster_id = self._cluster_id()
        formats = []
        for node in todo:
            # The tool and its arguments in a file only root reads (the JVM expands
            # @file), so that the SCRAM password is never on a command line others can see.
            arguments = node.dir / "format.args"
            arguments.touch(mode=0o600)
            arguments.write_text(java_argfile([
                _STORAGE_TOOL, "format", *(["--standalone"] if voters is None else []),
                *self._scram_args(), "--ignore-formatted", "--cluster-id", cluster_id,
                "--config", str(node.config_file)]))
            formats.append((node, arguments, subprocess.Popen(
                [*self._jvm_args(256, node), f"@{arguments}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
        failures = []
        for node, arguments, process in formats:
            output, _ = process.communicate()
            arguments.unlink(missing_ok=True)
            if process.returncode != 0:
                lines = "\n".join(output.decode("utf-8", "replace").splitlines()[-20:])
                failures.append(f"formatting the Kafka data folder {node.data_dir} failed "
                                f"(exit code {process.returncode}):\n{lines}")
        if failures:
            raise BrokerError("\n".join(failures))

    def _scram_args(self) -> list[str]:
        """The SCRAM user of a SASL listener, created in the metadata at format time."""
        if not self.listener.uses_sasl:
            return []
        return ["--add-scram", f"{self.listener.mechanism}=[name={self.listener.username},"
                               f'password="{self.listener.password}"]']

    def _launch(self, node: Node) -> int:
        args = [*self._jvm_args(self.heap_mb, node), _BROKER_MAIN, str(node.config_file)]
        # Truncated per launch: its tail must be about this start, not an old crash.
        with node.out_file.open("wb") as out:
            # A process group of its own: the broker outlives the command that started it
            # and does not receive the terminal's Ctrl-C. Not a session of its own: that
            # makes it a scheduler autogroup of its own, and on a core shared with CPU
            # hogs such a group was seen starved for a minute (its threads runnable, no
            # CPU time), which stalls every producer; in corelane's group it shares fairly.
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, cwd=node.dir,
                                       process_group=0)
        self._processes[node.node_id] = process
        node.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def _log_tail(self, node: Node, lines: int = 30) -> str:
        parts = []
        for path in (node.out_file, node.log_file):
            text = tail(path, lines)
            if text.strip():
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or f"(the broker wrote nothing to {node.log_file})"

    def _wait_until_answering(self, timeout: float,
                              progress: StartProgress | None = None) -> None:
        started = time.monotonic()
        deadline = started + timeout
        count = len(self.nodes)
        pending = list(self.nodes)
        while True:
            if progress is not None:
                progress.waiting(time.monotonic() - started, timeout)
            for node in self.nodes:
                if self._read_node_pid(node) is None:
                    raise BrokerError(f"the Kafka broker of node {node.node_id} at "
                                      f"{node.address} exited while starting\n"
                                      f"{self._log_tail(node)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pending = [node for node in pending
                       if not is_answering(node.address, timeout=min(3.0, remaining),
                                           client=self.client, brokers=count)]
            if not pending:
                return
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        node = pending[0] if pending else self.nodes[0]
        log = self._log_tail(node)
        self.stop()
        what = "the Kafka broker" if count == 1 else f"the {count} Kafka nodes"
        raise BrokerError(f"{what} did not answer at {node.address} within {timeout:.0f} s, "
                          "so it was stopped (a slow machine may need a larger "
                          f"kafka.broker.start_timeout_s)\n{log}")

    def stop(self, grace: float = 30.0) -> bool:
        """Stop this home's nodes by the pids in their pid files: SIGTERM, then SIGKILL.

        A clean shutdown lets a node close its logs without recovery on the next start;
        SIGKILL after ``grace`` seconds bounds a hung shutdown. The nodes are told together
        (a controller quorum left with one member waits for the others). Returns False if
        no node of this home was running.
        """
        running = self.read_pids()
        for pid in running.values():
            self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node_id, pid in running.items():
            if not self._wait_gone(node_id, pid, max(0.0, deadline - time.monotonic())):
                self._signal(pid, signal.SIGKILL)
                if not self._wait_gone(node_id, pid, 10.0):
                    raise BrokerError(f"the Kafka broker (pid {pid}) did not exit even after "
                                      "SIGKILL")
            self.node(node_id).pid_file.unlink(missing_ok=True)
            self._processes.pop(node_id, None)
        return bool(running)

    def kill_node(self, node_id: int) -> int:
        """SIGKILL one node by its own pid (no clean shutdown: as a crash would), and return
        the pid it had. Its pid file goes, its data stays for :meth:`start_node`."""
        node = self.node(node_id)
        pid = self._read_node_pid(node)
        if pid is None:
            raise BrokerError(f"node {node_id} of this home is not running")
        self._signal(pid, signal.SIGKILL)
        if not self._wait_gone(node_id, pid, 10.0):
            raise BrokerError(f"node {node_id} (pid {pid}) did not exit after SIGKILL")
        node.pid_file.unlink(missing_ok=True)
        self._processes.pop(node_id, None)
        return pid

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise BrokerError(f"not permitted to stop the Kafka broker (pid {pid}); it was "
                              "started by another user") from None

    def _wait_gone(self, node_id: int, pid: int, seconds: float) -> bool:
        process = self._processes.get(node_id)
        if process is not None and process.pid == pid:
            try:
                process.wait(seconds)  # also reaps it, so no zombie is left behind
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not _proc_alive(pid):
                return True
            time.sleep(0.1)
        return not _proc_alive(pid)

    def status(self, timeout: float = 2.0) -> BrokerStatus:
        """Whether this home's nodes run (by their pid files) and whether they answer."""
        pids = self.read_pids()
        nodes = tuple(NodeStatus(n.node_id, n.address, pids.get(n.node_id), n.log_file)
                      for n in self.nodes)
        answering = any(is_answering(n.address, timeout, client=self.client)
                        for n in self.nodes)
        first = next(iter(pids.values())) if pids else None
        return BrokerStatus(bootstrap=self.bootstrap, running=bool(pids), pid=first,
                            answering=answering, state_dir=self.state_dir,
                            log_file=self.log_file, nodes=nodes)
