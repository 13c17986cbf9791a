"""The local single-node Kafka broker: jars from Maven, one combined KRaft node, one pid file.

No Kafka tarball can be downloaded everywhere corelane runs, but Maven Central can be
reached, so the broker runs straight from the jars that ``pom.xml`` (next to this file)
resolves into a cache folder. One JVM is both broker and KRaft controller, bound to the
loopback interface only. Its state (config, data, logs, pid file) lives in
``<home>/kafka/``; the jars live in ``$CORELANE_CACHE`` or ``~/.cache/corelane`` in a folder
named after a hash of the pom, so a version change in the pom resolves afresh.

The broker is stopped by the pid recorded when it was started, never by searching for
processes by name: a machine may run other Kafka brokers that are none of our business.
"""
from __future__ import annotations

import asyncio
import base64
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pipeline import procfs
from pipeline.hostpaths import LIVE

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


def server_properties(*, host: str, port: int, controller_port: int, data_dir: Path | str,
                      node_id: int = 1, network_threads: int = 2, io_threads: int = 2,
                      offsets_partitions: int = 4) -> str:
    """The ``server.properties`` of one combined broker+controller KRaft node.

    Every internal topic gets replication factor 1 and min ISR 1 because there is one node:
    the defaults (3) would leave consumer groups and transactions unable to start.
    ``controller.quorum.bootstrap.servers`` (not the older ``controller.quorum.voters``)
    pairs with ``StorageTool format --standalone``; the two styles must never be mixed.
    Few threads and few offsets partitions keep a 2-core machine responsive; the first
    consumer group creates every offsets partition, and 50 of them take seconds here.
    """
    if port == controller_port:
        raise BrokerError(f"the broker port and the controller port are both {port}; "
                          "they must differ")
    lines = [
        "# Written by corelane on every start; edits here are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.bootstrap.servers={host}:{controller_port}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"log.dirs={data_dir}",
        f"num.network.threads={network_threads}",
        f"num.io.threads={io_threads}",
        "num.partitions=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        f"offsets.topic.num.partitions={offsets_partitions}",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # A lone consumer should not wait 3 s for companions that never come.
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
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

async def is_answering_async(bootstrap: str, timeout: float = 5.0) -> bool:
    """True if a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout``.

    An open port is not readiness: a starting KRaft broker accepts connections before it
    can serve requests, and only a metadata answer that names at least one broker shows
    that clients will work. A TCP connect comes first so that an address nobody listens on
    gives False at once instead of after aiokafka's retries.
    """
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        host, port = parse_bootstrap(bootstrap)
    except BrokerError:
        return False
    deadline = time.monotonic() + timeout
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, _port_open, host, port, min(timeout, 1.0)):
        return False
    remaining = max(0.1, deadline - time.monotonic())
    conn = None
    try:
        async with asyncio.timeout(remaining):
            conn = await create_conn(host, port, client_id="corelane-probe",
                                     request_timeout_ms=int(remaining * 1000))
            response = await conn.send(MetadataRequest([]))
        return len(response.brokers) > 0
    except Exception:  # any failure to answer means "not answering"; the caller decides
        return False
    finally:
        if conn is not None:
            conn.close()


def is_answering(bootstrap: str, timeout: float = 5.0) -> bool:
    """Blocking form of :func:`is_answering_async`, callable from sync code and from a thread
    that already runs an event loop (it then probes from a short-lived worker thread)."""
    def probe() -> bool:
        # A private loop, never installed as the thread's current loop, so a caller's
        # loop (pytest-asyncio's session loop, for one) is left untouched.
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(is_answering_async(bootstrap, timeout))
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


# ----------------------------------------------------------------------------- the broker

class LocalBroker:
    """One single-node Kafka broker of one corelane home, run from Maven-resolved jars.

    Everything it writes is under ``<home>/kafka/``: ``server.properties``, ``data/``,
    ``broker.log`` (the broker's own log), ``broker.out`` (the JVM's stdout and stderr, where
    a crash before logging starts ends up) and ``broker.pid``.
    """

    def __init__(self, bootstrap: str = "127.0.0.1:9092", home: Path | str | None = None,
                 heap_mb: int = 768, controller_port: int | None = None,
                 cache_dir: Path | str | None = None) -> None:
        self.bootstrap = bootstrap
        self.host, self.port = parse_bootstrap(bootstrap)
        # The default sits next to the broker port so two homes with different broker
        # ports do not collide on the controller port.
        self.controller_port = controller_port if controller_port else self.port + 1
        if not 0 < self.controller_port < 65536:
            raise BrokerError(f"controller port {self.controller_port} is out of range; "
                              "set kafka.broker.controller_port")
        home_path = Path(os.path.expanduser(str(home))) if home else \
            Path.home() / ".local" / "share" / "corelane"
        self.state_dir = home_path / "kafka"
        self.heap_mb = heap_mb
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, cache_dir: Path | str | None = None) -> LocalBroker:
        """The broker that ``corelane kafka start`` runs for these settings."""
        broker = settings.kafka.broker
        return cls(bootstrap=settings.kafka.bootstrap, home=settings.home_path,
                   heap_mb=broker.heap_mb, controller_port=broker.controller_port,
                   cache_dir=cache_dir)

    # paths ---------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def out_file(self) -> Path:
        return self.state_dir / "broker.out"

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

    # pid file ------------------------------------------------------------------------------
    def read_pid(self) -> int | None:
        """The pid of this home's running broker, or None.

        A pid file whose process is gone, or whose pid now belongs to some other program
        (pids are reused after a reboot), is stale: it is removed so that nothing is ever
        signalled on its word.
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if self._is_our_broker(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _is_our_broker(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        if pid <= 0 or not _proc_alive(pid):
            return False
        cmdline = procfs.read_argv(LIVE.proc, pid)
        return _BROKER_MAIN in cmdline and str(self.config_file) in cmdline

    # lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0,
              progress: StartProgress | None = None) -> BrokerStatus:
        """Start the broker if needed and return once it answers a metadata request.

        Returns at once if this home's broker already runs and answers, or if some other
        broker already answers at the address (then nothing is started: the address is
        served). Raises BrokerError with the broker log's last lines if the JVM dies or
        does not answer within ``timeout`` seconds; a broker that timed out is stopped, so
        it does not hold the ports against the next attempt. ``progress`` is told how the
        fetch of the jars (when they are missing) and the wait go.
        """
        if not is_loopback(self.host):
            raise BrokerError(f"the kafka bootstrap address {self.bootstrap} is not on this "
                              "machine's loopback interface; a local broker only listens on "
                              "127.0.0.1 (set kafka.bootstrap or CORELANE_KAFKA to "
                              "127.0.0.1:PORT, or point it at your running cluster and do "
                              "not start one)")
        pid = self.read_pid()
        if pid is None:
            if is_answering(self.bootstrap, timeout=3.0):
                return self.status()
            for port, what in ((self.port, "broker"), (self.controller_port, "controller")):
                if _port_open(self.host, port, 0.5):
                    raise BrokerError(f"port {port} on {self.host}, wanted for the Kafka "
                                      f"{what}, is already taken by another program that is "
                                      "not a Kafka broker; free it or choose another port")
            self.fetch(progress.maven if progress is not None else None)
            pid = self._launch()
        self._wait_until_answering(pid, timeout, progress)
        if progress is not None:
            progress.answered()
        return self.status()

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java is not installed; the Kafka 4 broker needs Java 17 or "
                              "newer (Debian: apt-get install openjdk-17-jre-headless)")
        return java

    def _jvm_args(self, heap_mb: int) -> list[str]:
        return [
            self._java(),
            f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 256)}m",
            # The JVM sizes GC and compiler threads by the cores it sees; on a small host
            # that would crowd out the work corelane exists to protect.
            "-XX:ActiveProcessorCount=2",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dcorelane.broker.log={self.log_file}",
            f"-Dkafka.logs.dir={self.state_dir}",
            "-cp", f"{self.fetch()}/*",
        ]

    def _format_storage(self) -> None:
        """Format the data folder once; ``meta.properties`` there says it has been."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            [*self._jvm_args(256), _STORAGE_TOOL, "format", "--standalone",
             "--ignore-formatted", "--cluster-id", cluster_id, "--config", str(self.config_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            check=False)
        if result.returncode != 0:
            output = "\n".join(result.stdout.decode("utf-8", "replace").splitlines()[-20:])
            raise BrokerError(f"formatting the Kafka data folder {self.data_dir} failed "
                              f"(exit code {result.returncode}):\n{output}")
        (self.state_dir / "cluster.id").write_text(cluster_id + "\n")

    def _launch(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(server_properties(
            host=self.host, port=self.port, controller_port=self.controller_port,
            data_dir=self.data_dir))
        self._format_storage()
        args = [*self._jvm_args(self.heap_mb), _BROKER_MAIN, str(self.config_file)]
        # Truncated per launch: its tail must be about this start, not an old crash.
        with self.out_file.open("wb") as out:
            # A process group of its own: the broker outlives the command that started it
            # and does not receive the terminal's Ctrl-C. Not a session of its own: that
            # makes it a scheduler autogroup of its own, and on a core shared with CPU
            # hogs such a group was seen starved for a minute (its threads runnable, no
            # CPU time), which stalls every producer; in corelane's group it shares fairly.
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, cwd=self.state_dir,
                                             process_group=0)
        self.pid_file.write_text(f"{self._process.pid}\n")
        return self._process.pid

    def _log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self.out_file, self.log_file):
            text = tail(path, lines)
            if text.strip():
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or f"(the broker wrote nothing to {self.log_file})"

    def _wait_until_answering(self, pid: int, timeout: float,
                              progress: StartProgress | None = None) -> None:
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if progress is not None:
                progress.waiting(time.monotonic() - started, timeout)
            if not self._is_our_broker(pid):
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the Kafka broker (pid {pid}) exited while starting\n"
                                  f"{self._log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if is_answering(self.bootstrap, timeout=min(3.0, remaining)):
                return
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        log = self._log_tail()
        self.stop()
        raise BrokerError(f"the Kafka broker (pid {pid}) did not answer at {self.bootstrap} "
                          f"within {timeout:.0f} s, so it was stopped (a slow machine may "
                          f"need a larger kafka.broker.start_timeout_s)\n{log}")

    def stop(self, grace: float = 30.0) -> bool:
        """Stop this home's broker by the pid in its pid file: SIGTERM, then SIGKILL.

        A clean shutdown lets the broker close its logs without recovery on the next start;
        SIGKILL after ``grace`` seconds bounds a hung shutdown. Returns False if no broker
        of this home was running.
        """
        pid = self.read_pid()
        if pid is None:
            return False
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, grace):
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise BrokerError(f"the Kafka broker (pid {pid}) did not exit even after "
                                  "SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._process = None
        return True

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise BrokerError(f"not permitted to stop the Kafka broker (pid {pid}); it was "
                              "started by another user") from None

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(seconds)  # also reaps it, so no zombie is left behind
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
        """Whether this home's broker runs (by its pid file) and whether the address answers."""
        pid = self.read_pid()
        return BrokerStatus(bootstrap=self.bootstrap, running=pid is not None, pid=pid,
                            answering=is_answering(self.bootstrap, timeout),
                            state_dir=self.state_dir, log_file=self.log_file)

