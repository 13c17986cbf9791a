"""A real Docker engine for tests, with a tiny local image.

An engine that already answers (DOCKER_HOST, then the default socket) is used as it is.
Otherwise this session starts its own: a containerd and a Debian ``dockerd`` with their own
sockets, data, state and pid files under one temporary folder, so an engine or containerd a
user runs is never touched. They are stopped by their own pids at the end of the session.

The image is ``docker import`` of a busybox-static root file system: no registry is needed.
Every container started through ``run_container`` runs with ``network_mode="none"``, carries
the label ``corelane.test=<session id>`` and is removed by its id.
"""
from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

TEST_IMAGE = "corelane-test/busybox:latest"
TEST_LABEL = "corelane.test"
DEFAULT_SOCKET = "/var/run/docker.sock"
START_TIMEOUT_S = 60.0
DOCKERD_FLAGS = ("--storage-driver=vfs", "--iptables=false", "--bridge=none",
                 "--ip-forward=false", "--ip-masq=false")


@dataclass
class DockerEngine:
    client: docker.DockerClient
    host: str                          # the DOCKER_HOST url of this engine
    image: str                         # tag of the test image
    session_id: str                    # value of the corelane.test label on our containers
    owned: bool                        # True when this session started the engine
    log_path: Path | None = None       # dockerd's log, when owned
    started: list[str] = field(default_factory=list)   # ids of containers we created


def run_container(engine: DockerEngine, command: str | list[str], **kw: Any) -> Container:
    """Create and start a container of the test image, with no network, labelled as ours."""
    if kw.get("network_mode", "none") != "none":
        raise ValueError("test containers run with network_mode='none' only")
    kw["network_mode"] = "none"
    kw["labels"] = {**(kw.get("labels") or {}), TEST_LABEL: engine.session_id}
    kw.pop("detach", None)
    image = kw.pop("image", engine.image)
    # create, then start: the id is recorded even if the start fails
    container = engine.client.containers.create(image, command, **kw)
    engine.started.append(container.id)
    container.start()
    container.reload()
    return container


def remove_containers(engine: DockerEngine, ids: list[str]) -> list[str]:
    """Force-remove the given containers by id; returns problems, one line each."""
    problems = []
    for cid in ids:
        try:
            engine.client.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            problems.append(f"container {cid[:12]}: {exc}")
        if cid in engine.started:
            engine.started.remove(cid)
    return problems


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A reachable Docker engine with the test image; started for this session if needed."""
    session_id = uuid.uuid4().hex[:12]
    existing = _reachable_engine()
    own: _OwnDockerd | None = None
    saved_docker_host = os.environ.get("DOCKER_HOST")
    if existing is not None:
        client, host = existing
    else:
        own = _OwnDockerd()
        failure = None
        try:
            client, host = own.start()
        except _EngineStartError as exc:
            failure = str(exc)
        if failure is not None:
            own.stop()
            pytest.fail(f"cannot start a Docker engine for the tests: {failure}", pytrace=False)
        # code under test that reads DOCKER_HOST finds this session's engine
        os.environ["DOCKER_HOST"] = host
    engine = DockerEngine(client=client, host=host, image=TEST_IMAGE, session_id=session_id,
                          owned=own is not None, log_path=own.log_path if own else None)
    try:
        failure = None
        try:
            _ensure_test_image(client, TEST_IMAGE, reuse=own is None)
        except (docker.errors.DockerException, _EngineStartError, OSError,
                subprocess.CalledProcessError) as exc:
            failure = str(exc)
        if failure is not None:
            pytest.fail(f"cannot build the test image {TEST_IMAGE}: {failure}", pytrace=False)
        yield engine
    finally:
        problems = remove_containers(engine, list(engine.started))
        client.close()
        if own is not None:
            if saved_docker_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved_docker_host
            problems += own.stop()
        if problems:
            # teardown must not fail the run, but leftovers must be visible
            print("\ndocker_engine teardown: " + "; ".join(problems))


@pytest.fixture
def docker_containers(docker_engine: DockerEngine) -> Iterator[Callable[..., Container]]:
    """``start(command, **kw)`` for one test; that test's containers are removed after it."""
    mine: list[str] = []

    def start(command: str | list[str], **kw: Any) -> Container:
        container = run_container(docker_engine, command, **kw)
        mine.append(container.id)
        return container

    yield start
    remove_containers(docker_engine, mine)


# --- finding or starting an engine ---------------------------------------------------------

class _EngineStartError(Exception):
    """Why no engine could be started; meant to be read by a person."""


def _reachable_engine() -> tuple[docker.DockerClient, str] | None:
    candidates: list[tuple[str, Callable[[], docker.DockerClient]]] = []
    if os.environ.get("DOCKER_HOST"):
        candidates.append((os.environ["DOCKER_HOST"], lambda: docker.from_env(timeout=10)))
    if os.path.exists(DEFAULT_SOCKET):
        url = f"unix://{DEFAULT_SOCKET}"
        candidates.append((url, lambda: docker.DockerClient(base_url=url, timeout=10)))
    for host, connect in candidates:
        try:
            client = connect()
            client.ping()
            return client, host
        except docker.errors.DockerException:
            continue
        except OSError:
            continue
    return None


def _die_with_parent() -> None:
    # dockerd stops its containers on SIGTERM; this keeps them from outliving a killed pytest
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _OwnDockerd:
    """containerd + dockerd under one temporary folder, owned by this process."""

    def __init__(self) -> None:
        # short path: unix socket paths are limited to 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="corelane-dockerd-"))
        self.log_path = self.root / "dockerd.log"
        self.containerd_log = self.root / "containerd.log"
        self.containerd_sock = self.root / "containerd.sock"
        self.docker_sock = self.root / "docker.sock"
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []

    def start(self) -> tuple[docker.DockerClient, str]:
        if os.geteuid() != 0:
            raise _EngineStartError(
                "no engine answers at DOCKER_HOST or /var/run/docker.sock, and starting "
                "dockerd needs root (run the tests as root or start a Docker engine)")
        tools = {name: shutil.which(name) for name in ("dockerd", "containerd", "runc")}
        missing = [name for name, path in tools.items() if path is None]
        if missing:
            raise _EngineStartError(
                f"{', '.join(missing)} not found on PATH: install Debian's docker.io "
                "(scripts/install-system-deps.sh)")
        self._start_containerd(tools["containerd"])
        return self._start_dockerd(tools["dockerd"])

    def _start_containerd(self, binary: str) -> None:
        # Our own containerd: without --containerd, dockerd would attach to a system
        # containerd at /run/containerd/containerd.sock when one runs, and share its state.
        config = self.root / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root}/containerd/root"\n'
            f'state = "{self.root}/containerd/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.containerd_sock}"\n'
            "[ttrpc]\n"
            f'  address = "{self.containerd_sock}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.root}/containerd/opt"\n')
        log = open(self.containerd_log, "ab")
        self._logs.append(log)
        self.containerd = subprocess.Popen(
            [binary, "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + 20
        while not self.containerd_sock.exists():
            if self.containerd.poll() is not None:
                raise _EngineStartError(
                    f"containerd exited with status {self.containerd.returncode}:\n"
                    + _tail(self.containerd_log))
            if time.monotonic() > deadline:
                raise _EngineStartError("containerd did not open its socket within 20 s:\n"
                                        + _tail(self.containerd_log))
            time.sleep(0.05)

    def _start_dockerd(self, binary: str) -> tuple[docker.DockerClient, str]:
        host = f"unix://{self.docker_sock}"
        command = [binary, *DOCKERD_FLAGS,
                   "--host", host,
                   "--data-root", str(self.root / "data"),
                   "--exec-root", str(self.root / "exec"),
                   "--pidfile", str(self.root / "docker.pid"),
                   "--containerd", str(self.containerd_sock)]
        log = open(self.log_path, "ab")
        self._logs.append(log)
        self.dockerd = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.root, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while True:
            if self.dockerd.poll() is not None:
                raise _EngineStartError(
                    f"dockerd exited with status {self.dockerd.returncode} "
                    f"({' '.join(command)}):\n" + _tail(self.log_path))
            if self.docker_sock.exists():
                try:
                    client = docker.DockerClient(base_url=host, timeout=30)
                    client.ping()
                    return client, host
                except docker.errors.DockerException as exc:
                    last_error = exc
            if time.monotonic() > deadline:
                raise _EngineStartError(
                    f"dockerd did not answer a ping within {START_TIMEOUT_S:.0f} s "
                    f"(last error: {last_error}):\n" + _tail(self.log_path))
            time.sleep(0.1)

    def stop(self) -> list[str]:
        """Stop dockerd, then containerd, by their pids; remove the folder. Returns problems."""
        problems: list[str] = []
        # dockerd first: on SIGTERM it stops its containers through containerd
        for name, process, grace in (("dockerd", self.dockerd, 30.0),
                                     ("containerd", self.containerd, 10.0)):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {process.pid}) ignored SIGTERM for {grace:.0f} s;"
                                " killed")
                process.kill()
                process.wait(10)
        for log in self._logs:
            log.close()
        problems += self._kill_own_shims()
        mounted = self._unmount_below_root()
        if mounted:
            problems += mounted + [f"left {self.root} in place: it still holds mounts"]
        else:
            # vfs layers hold read-only directories; root removes them, others need chmod
            shutil.rmtree(self.root, onerror=_make_writable_and_retry)
        return problems

    def _kill_own_shims(self) -> list[str]:
        # Shims outlive containerd when a container was still running; ours name our socket.
        problems = []
        marker = f"-address\0{self.containerd_sock}\0".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline + b"\0":
                shim = int(entry)
                # a container's init is the shim's child; killing it ends its pid namespace
                for child in _children(shim):
                    _kill(child)
                _kill(shim)
                problems.append(f"killed leftover containerd-shim pid {shim} and its container")
        return problems

    def _unmount_below_root(self) -> list[str]:
        # rmtree would descend into a mount left behind (netns, shm, the data-root bind)
        problems = []
        prefix = str(self.root) + "/"
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == str(self.root) or point.startswith(prefix):
                    points.append(point)
        for point in sorted(points, key=len, reverse=True):
            result = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"cannot unmount {point}: {result.stderr.strip()}")
        return problems


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _make_writable_and_retry(function: Callable[[str], Any], path: str, _exc: Any) -> None:
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
    function(path)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text[-lines:]) or "(empty log)"


# --- the test image ------------------------------------------------------------------------

def _ensure_test_image(client: docker.DockerClient, tag: str, reuse: bool) -> None:
    if reuse:
        # a user's engine: import once and leave it, instead of piling up dangling images
        try:
            client.images.get(tag)
            return
        except docker.errors.ImageNotFound:
            pass
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(busybox_rootfs_tar(), repository=repository, tag=version)
    client.images.get(tag)   # raises ImageNotFound with the engine's words if it did not work


def busybox_rootfs_tar() -> bytes:
    """A root file system with a static busybox and one symlink per applet, as a tar."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise _EngineStartError("busybox not found: install Debian's busybox-static")
    if _is_dynamic_elf(busybox):
        raise _EngineStartError(
            f"{busybox} is dynamically linked and cannot run in an empty image: "
            "install Debian's busybox-static")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755),
                                ("proc", 0o555), ("sys", 0o555), ("root", 0o700),
                                ("tmp", 0o1777)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            if applet == "busybox" or "/" in applet:
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def _is_dynamic_elf(path: str) -> bool:
    """True when the ELF file asks for an interpreter (PT_INTERP), i.e. needs ld.so."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF":
            return False
        is64, little = header[4] == 2, header[5] == 1
        order = "<" if little else ">"
        if is64:
            phoff, = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            phoff, = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(struct.unpack_from(order + "I", table, i * phentsize)[0] == 3   # PT_INTERP
               for i in range(phnum))
