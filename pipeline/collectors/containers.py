"""Container samples: every running container of the local Docker engine, once per sweep.

What is read where, and why:

* The engine API gives what only the engine knows: the list of running containers and, per
  container, one inspect (about 1 ms) for name, image, labels, status, the main pid and the
  ``HostConfig`` cpuset and CPU shares that corelane itself may change.
* The kernel gives everything that is counted: PIDs, CPU time and memory come from the
  container's own cgroup, found once per container through ``/proc/<main pid>/cgroup`` and
  the cgroup mounts, so the engine's cgroup parent and driver (``/docker/<id>``,
  ``docker-<id>.scope``, cgroup v1 or v2) do not matter.

  - PIDs: ``cgroup.procs`` costs about 20 µs; the top API costs about 16 ms per container
    because the engine runs ``ps`` and filters its output. The top API stays as a fallback
    where the cgroup cannot be read (e.g. the engine runs on another host).
  - CPU: cgroup v1 ``cpuacct.usage`` (ns) or v2 ``cpu.stat`` ``usage_usec``. The stats API
    takes about 1 s per container even with ``one_shot`` on Docker 20.10, far too slow for
    a 1 s sweep. Where no cgroup can be read, the CPU time of the container's processes in
    ``/proc/PID/stat`` is summed (it misses children that already exited: good enough).
  - Memory: usage minus inactive file cache, as ``docker stats`` shows it.

A host without a usable engine is not an error: it is reported once, sweeps return [] and a
reconnect is tried at most once per ``retry_interval_s``.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from pipeline.events import ContainerSample

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Failures that mean "the engine is not usable", as opposed to one container's trouble.
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)

ClientFactory = Callable[[str | None], Any]


def default_client_factory(docker_host: str | None) -> docker.DockerClient:
    """A client for ``docker_host``, or for DOCKER_HOST / the default socket when None."""
    if docker_host:
        return docker.DockerClient(base_url=docker_host, timeout=10)
    return docker.from_env(timeout=10)


_engines: dict[str | None, Any] = {}


def engine_client(docker_host: str | None) -> docker.DockerClient | None:
    """One client per engine address for enforcing through it, or None where no engine
    answers (asked once: a host without Docker is not asked again every plan)."""
    if docker_host not in _engines:
        try:
            client = default_client_factory(docker_host)
            client.ping()
            _engines[docker_host] = client
        except Exception:  # noqa: BLE001 - any failure means: no engine to enforce through
            _engines[docker_host] = None
    return _engines[docker_host]


# --- cgroups -------------------------------------------------------------------------------

def parse_cgroup_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Map each cgroup controller to (root inside the hierarchy, mount point).

    v1 hierarchies are keyed by each controller they carry ("cpu", "cpuacct", "name=systemd");
    the v2 hierarchy is keyed by "". The first mount of a hierarchy wins.
    """
    mounts: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, super_options = fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2":
            mounts.setdefault("", (root, mount_point))
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option not in ("rw", "ro"):
                    mounts.setdefault(option, (root, mount_point))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return (path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def cgroup_dir(proc_cgroup: str, mounts: dict[str, tuple[str, str]], controller: str) -> str | None:
    """The directory of ``controller``'s cgroup (``""`` for v2) from a /proc/PID/cgroup text."""
    if controller not in mounts:
        return None
    root, mount_point = mounts[controller]
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if controller == "":
            if hierarchy != "0" or controllers:
                continue
        elif controller not in controllers.split(","):
            continue
        # the mount may show only a subtree of the hierarchy (e.g. inside a container)
        if root != "/" and (path == root or path.startswith(root + "/")):
            path = path[len(root):] or "/"
        return os.path.join(mount_point, path.lstrip("/"))
    return None


@dataclass
class _Cgroups:
    pid: int                       # the main pid these paths were found through
    cpuacct: str | None = None     # v1: holds cpuacct.usage
    memory: str | None = None      # v1: holds memory.usage_in_bytes
    unified: str | None = None     # v2: cpu.stat, memory.current
    procs: str | None = None       # some directory whose cgroup.procs lists the container

    @classmethod
    def find(cls, pid: int, mounts: dict[str, tuple[str, str]]) -> _Cgroups:
        found = cls(pid=pid)
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                text = f.read()
        except OSError:
            return found
        found.cpuacct = _existing(cgroup_dir(text, mounts, "cpuacct"), "cpuacct.usage")
        found.memory = _existing(cgroup_dir(text, mounts, "memory"), "memory.usage_in_bytes")
        found.unified = _existing(cgroup_dir(text, mounts, ""), "cgroup.procs")
        for candidate in (found.cpuacct, found.memory, found.unified,
                          cgroup_dir(text, mounts, "pids"), cgroup_dir(text, mounts, "cpu")):
            if _existing(candidate, "cgroup.procs"):
                found.procs = candidate
                break
        return found


def _existing(directory: str | None, name: str) -> str | None:
    if directory and os.path.exists(os.path.join(directory, name)):
        return directory
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _stat_value(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


class _Vanished(Exception):
    """The container stopped while it was being read."""


# --- sampler -------------------------------------------------------------------------------

class ContainerSampler:
    """Samples the running containers of one Docker engine.

    ``sweep()`` never raises for engine trouble: while the engine cannot be reached it
    returns [] at once, ``available`` is False and ``unavailable_reason`` says why.
    """

    def __init__(self, docker_host: str | None = None,
                 client_factory: ClientFactory = default_client_factory,
                 clock: Callable[[], float] = time.monotonic,
                 retry_interval_s: float = 60.0) -> None:
        self.docker_host = docker_host
        self._factory = client_factory
        self._clock = clock
        self._retry_interval_s = retry_interval_s
        self._client: Any = None
        self._available = True
        self._reason: str | None = None
        self._next_attempt = float("-inf")
        self._mounts: dict[str, tuple[str, str]] | None = None
        self._cgroups: dict[str, _Cgroups] = {}
        self._last_cpu: dict[str, tuple[float, float]] = {}   # id -> (cpu seconds, clock)

    @property
    def available(self) -> bool:
        return self._available

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    @property
    def target(self) -> str:
        """The engine address as a person would look for it."""
        return self.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken client must not hide the real problem
                pass
            self._client = None

    def sweep(self) -> list[ContainerSample]:
        if self._client is None and not self._connect():
            return []
        try:
            return self._sweep()
        except _ENGINE_ERRORS as exc:
            self._lost(exc)
            return []

    # --- engine state ---

    def _connect(self) -> bool:
        now = self._clock()
        if now < self._next_attempt:
            return False
        client = None
        try:
            client = self._factory(self.docker_host)
            client.ping()
        except _ENGINE_ERRORS as exc:
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass
            self._lost(exc)
            return False
        self._client = client
        if not self._available:
            log.info("Docker engine at %s is reachable again; container samples resume",
                     self.target)
        self._available, self._reason = True, None
        return True

    def _lost(self, exc: BaseException) -> None:
        self.close()
        self._next_attempt = self._clock() + self._retry_interval_s
        reason = describe_engine_error(exc, self.target)
        if self._available:
            log.warning("No container samples: %s. Retrying at most every %.0f s.",
                        reason, self._retry_interval_s)
        else:
            log.debug("Docker engine still unavailable: %s", reason)
        self._available, self._reason = False, reason
        self._last_cpu.clear()
        self._cgroups.clear()

    # --- one sweep ---

    def _sweep(self) -> list[ContainerSample]:
        api = self._client.api
        listed = api.containers()       # running ones only
        now = self._clock()
        samples: list[ContainerSample] = []
        seen: set[str] = set()
        for entry in listed:
            cid = entry.get("Id", "")
            try:
                info = api.inspect_container(cid)
                if not (info.get("State") or {}).get("Running", False):
                    continue
                samples.append(self._sample(info, now))
                seen.add(cid)
            except (docker.errors.APIError, _Vanished) as exc:
                # gone since the listing (404/409) or one container's trouble: skip it
                log.debug("skipping container %s this sweep: %s", cid[:12], exc or "vanished")
                continue
            except (requests.exceptions.RequestException, docker.errors.DockerException):
                raise                   # the engine itself: handled by sweep()
            except OSError as exc:
                # a cgroup or /proc file that cannot be read is this container's problem
                log.debug("skipping container %s this sweep: %s", cid[:12], exc)
                continue
        for gone in set(self._last_cpu) - seen:
            self._last_cpu.pop(gone, None)
            self._cgroups.pop(gone, None)
        return samples

    def _sample(self, info: dict[str, Any], now: float) -> ContainerSample:
        cid = info["Id"]
        config = info.get("Config") or {}
        host_config = info.get("HostConfig") or {}
        state = info.get("State") or {}
        groups = self._cgroups_of(cid, int(state.get("Pid") or 0))

        pids = self._pids(cid, groups)
        cpu_s = self._cpu_seconds(groups, pids)
        share = 0.0
        previous = self._last_cpu.get(cid)
        if cpu_s is not None:
            if previous is not None and now > previous[1]:
                # a restart resets the counter: never report a negative share
                share = max(0.0, (cpu_s - previous[0]) / (now - previous[1]))
            self._last_cpu[cid] = (cpu_s, now)

        return ContainerSample(
            id=cid,
            name=(info.get("Name") or "").lstrip("/"),
            image=config.get("Image") or info.get("Image", ""),
            status=state.get("Status", ""),
            labels=dict(config.get("Labels") or {}),
            pids=pids,
            cpuset=host_config.get("CpusetCpus") or "",
            cpu_shares=int(host_config.get("CpuShares") or 0),
            cpu_share=share,
            memory_bytes=self._memory_bytes(groups, pids),
        )

    def _cgroups_of(self, cid: str, pid: int) -> _Cgroups | None:
        if pid <= 0:
            return None
        cached = self._cgroups.get(cid)
        if cached is not None and cached.pid == pid:
            return cached
        if self._mounts is None:
            try:
                self._mounts = parse_cgroup_mounts(_read("/proc/self/mountinfo"))
            except OSError:
                self._mounts = {}
        found = _Cgroups.find(pid, self._mounts)
        self._cgroups[cid] = found
        return found

    def _pids(self, cid: str, groups: _Cgroups | None) -> list[int]:
        if groups is not None and groups.procs is not None:
            try:
                return sorted(int(p) for p in _read(os.path.join(groups.procs, "cgroup.procs")).split())
            except FileNotFoundError:
                raise _Vanished(cid) from None
        top = self._client.api.top(cid)
        titles = top.get("Titles") or []
        column = titles.index("PID") if "PID" in titles else 1
        return sorted(int(row[column]) for row in top.get("Processes") or [])

    def _cpu_seconds(self, groups: _Cgroups | None, pids: list[int]) -> float | None:
        try:
            if groups is not None and groups.cpuacct is not None:
                return int(_read(os.path.join(groups.cpuacct, "cpuacct.usage"))) / 1e9
            if groups is not None and groups.unified is not None:
                usec = _stat_value(_read(os.path.join(groups.unified, "cpu.stat")), "usage_usec")
                if usec is not None:
                    return usec / 1e6
        except FileNotFoundError:
            raise _Vanished() from None
        ticks = 0
        found = False
        for pid in pids:
            try:
                stat = _read(f"/proc/{pid}/stat")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])        # utime, stime
            found = True
        return ticks / _CLK_TCK if found else None

    def _memory_bytes(self, groups: _Cgroups | None, pids: list[int]) -> int:
        try:
            if groups is not None and groups.memory is not None:
                usage = int(_read(os.path.join(groups.memory, "memory.usage_in_bytes")))
                stat = _read(os.path.join(groups.memory, "memory.stat"))
                return max(0, usage - (_stat_value(stat, "total_inactive_file") or 0))
            if groups is not None and groups.unified is not None:
                current = os.path.join(groups.unified, "memory.current")
                if os.path.exists(current):
                    usage = int(_read(current))
                    stat = _read(os.path.join(groups.unified, "memory.stat"))
                    return max(0, usage - (_stat_value(stat, "inactive_file") or 0))
        except FileNotFoundError:
            raise _Vanished() from None
        rss = 0
        for pid in pids:
            try:
                rss += int(_read(f"/proc/{pid}/statm").split()[1]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                continue
        return rss


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest the OS error in args)."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for arg in getattr(current, "args", ()):
            for item in arg if isinstance(arg, tuple) else (arg,):
                if isinstance(item, BaseException):
                    stack.append(item)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def describe_engine_error(exc: BaseException, target: str) -> str:
    """One sentence a person can act on, naming the engine address."""
    place = target[len("unix://"):] if target.startswith("unix://") else target
    for cause in _causes(exc):
        if isinstance(cause, FileNotFoundError):
            return f"no Docker engine socket at {place}"
        if isinstance(cause, PermissionError):
            return (f"permission denied on the Docker engine at {place} "
                    "(run as root or as a member of the docker group)")
        if isinstance(cause, ConnectionRefusedError):
            return f"the Docker engine at {place} refuses connections (is dockerd running?)"
        if isinstance(cause, (TimeoutError, requests.exceptions.Timeout)):
            return f"the Docker engine at {place} does not answer in time"
    text = str(exc).strip() or type(exc).__name__
    return f"the Docker engine at {place} cannot be used: {text}"
