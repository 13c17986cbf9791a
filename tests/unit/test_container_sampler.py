"""ContainerSampler's handling of a missing, failing and returning engine, with fakes."""
from __future__ import annotations

import logging

import docker.errors
import pytest
import requests
import urllib3.exceptions

from pipeline.collectors.containers import (
    ContainerSampler, cgroup_dir, describe_engine_error, parse_cgroup_mounts)

LOGGER = "pipeline.collectors.containers"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _engine_down(kind: type[OSError] = FileNotFoundError) -> docker.errors.DockerException:
    # the shape docker-py gives: DockerException <- requests ConnectionError <- ... <- OSError
    errors = {FileNotFoundError: (2, "No such file or directory"),
              PermissionError: (13, "Permission denied"),
              ConnectionRefusedError: (111, "Connection refused")}
    cause = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", kind(*errors[kind])))
    try:
        raise docker.errors.DockerException(
            f"Error while fetching server API version: {cause}") from cause
    except docker.errors.DockerException as exc:
        return exc


class FakeAPI:
    def __init__(self, containers: list[dict], vanished: set[str] = frozenset()) -> None:
        self.listed = containers
        self.vanished = set(vanished)
        self.fail_listing: Exception | None = None

    def containers(self) -> list[dict]:
        if self.fail_listing is not None:
            raise self.fail_listing
        return [{"Id": c["Id"]} for c in self.listed]

    def inspect_container(self, cid: str) -> dict:
        if cid in self.vanished:
            raise docker.errors.NotFound(f"No such container: {cid}")
        return next(c for c in self.listed if c["Id"] == cid)

    def top(self, cid: str) -> dict:
        return {"Titles": ["UID", "PID", "CMD"], "Processes": []}


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.closed = False

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class Factory:
    """Fails while ``down`` is set; counts every attempt."""

    def __init__(self, api: FakeAPI | None = None) -> None:
        self.down: Exception | None = _engine_down()
        self.api = api or FakeAPI([])
        self.calls = 0

    def __call__(self, host: str | None) -> FakeClient:
        self.calls += 1
        if self.down is not None:
            raise self.down
        return FakeClient(self.api)


def _container(cid: str, name: str) -> dict:
    return {"Id": cid, "Name": f"/{name}",
            "Config": {"Image": "busybox", "Labels": {"app": name}},
            "State": {"Status": "running", "Running": True, "Pid": 0},
            "HostConfig": {"CpusetCpus": "1", "CpuShares": 256}}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_missing_engine_warns_once_and_retries_every_60_s(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock, factory = FakeClock(), Factory()
    sampler = ContainerSampler("unix:///nowhere/docker.sock", client_factory=factory, clock=clock)

    assert sampler.sweep() == []
    assert sampler.available is False
    assert sampler.unavailable_reason == "no Docker engine socket at /nowhere/docker.sock"
    assert factory.calls == 1

    for step in range(59):
        clock.now += 1
        assert sampler.sweep() == []
    assert factory.calls == 1, "must not retry before 60 s have passed"

    clock.now += 1
    assert sampler.sweep() == []
    assert factory.calls == 2
    assert len(_warnings(caplog)) == 1
    assert "no Docker engine socket at /nowhere/docker.sock" in _warnings(caplog)[0]


def test_engine_coming_back_is_logged_once_and_sampled(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    factory = Factory(FakeAPI([_container("a" * 64, "web")]))
    sampler = ContainerSampler(client_factory=factory, clock=clock)
    assert sampler.sweep() == []

    factory.down = None
    clock.now += 60
    samples = sampler.sweep()
    assert sampler.available and sampler.unavailable_reason is None
    assert [(s.id, s.name, s.labels, s.cpuset, s.cpu_shares) for s in samples] == \
        [("a" * 64, "web", {"app": "web"}, "1", 256)]
    back = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(back) == 1 and "reachable again" in back[0].getMessage()

    clock.now += 1
    assert len(sampler.sweep()) == 1
    assert factory.calls == 2, "a working client is kept, not rebuilt per sweep"
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1


def test_engine_lost_mid_sweep_warns_once_and_never_raises(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    factory = Factory(FakeAPI([_container("b" * 64, "db")]))
    factory.down = None
    sampler = ContainerSampler(client_factory=factory, clock=clock)
    assert len(sampler.sweep()) == 1

    factory.api.fail_listing = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.",
                                         ConnectionRefusedError(111, "Connection refused")))
    factory.down = _engine_down(ConnectionRefusedError)
    assert sampler.sweep() == []
    assert not sampler.available
    assert "refuses connections" in (sampler.unavailable_reason or "")
    for _ in range(10):
        clock.now += 10
        assert sampler.sweep() == []
    assert len(_warnings(caplog)) == 1


def test_second_outage_is_reported_again(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock, factory = FakeClock(), Factory()
    sampler = ContainerSampler(client_factory=factory, clock=clock)
    sampler.sweep()
    factory.down = None
    clock.now += 60
    sampler.sweep()
    factory.api.fail_listing = requests.exceptions.ConnectionError("engine went away")
    sampler.sweep()
    assert len(_warnings(caplog)) == 2
    assert sampler.available is False


def test_container_that_vanishes_mid_sweep_is_skipped() -> None:
    keep, gone = _container("c" * 64, "keep"), _container("d" * 64, "gone")
    factory = Factory(FakeAPI([gone, keep], vanished={gone["Id"]}))
    factory.down = None
    sampler = ContainerSampler(client_factory=factory, clock=FakeClock())
    assert [s.id for s in sampler.sweep()] == [keep["Id"]]
    assert sampler.available


def test_permission_denied_reason_says_what_to_do() -> None:
    reason = describe_engine_error(_engine_down(PermissionError), "unix:///var/run/docker.sock")
    assert reason.startswith("permission denied on the Docker engine at /var/run/docker.sock")
    assert "docker group" in reason


def test_cgroup_paths_from_mountinfo_v1_and_v2() -> None:
    mountinfo = (
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    proc_cgroup = ("4:memory:/docker/abc\n"
                   "1:cpu,cpuacct:/docker/abc\n"
                   "0::/system.slice/docker-abc.scope\n")
    mounts = parse_cgroup_mounts(mountinfo)
    assert cgroup_dir(proc_cgroup, mounts, "cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/docker/abc"
    assert cgroup_dir(proc_cgroup, mounts, "memory") == "/sys/fs/cgroup/memory/docker/abc"
    assert cgroup_dir(proc_cgroup, mounts, "") == \
        "/sys/fs/cgroup/unified/system.slice/docker-abc.scope"
    assert cgroup_dir(proc_cgroup, mounts, "pids") is None


def test_cgroup_path_below_a_mount_that_shows_a_subtree() -> None:
    mounts = parse_cgroup_mounts(
        "50 40 0:30 /docker /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup_dir("0::/docker/abc\n", mounts, "") == "/sys/fs/cgroup/abc"
