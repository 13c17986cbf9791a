"""The container sampler against a real Docker engine and real containers."""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import pytest

from pipeline.collectors.containers import ContainerSampler
from pipeline.events import ContainerSample
from support.docker_engine import TEST_LABEL, DockerEngine

pytestmark = pytest.mark.integration

LOGGER = "pipeline.collectors.containers"


def _by_id(samples: list[ContainerSample]) -> dict[str, ContainerSample]:
    return {sample.id: sample for sample in samples}


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"/proc/{pid}/status has no {name}")


def test_sampler_reports_real_containers(docker_engine: DockerEngine, docker_containers) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    tag = docker_engine.session_id
    quiet = docker_containers(["sleep", "300"], name=f"corelane-quiet-{tag}",
                              labels={"corelane.role": "quiet"}, cpuset_cpus="0",
                              cpu_shares=512)
    busy = docker_containers(["sh", "-c", "while :; do :; done"], name=f"corelane-busy-{tag}",
                             labels={"corelane.role": "busy"})
    sampler = ContainerSampler(docker_host=docker_engine.host)

    first = _by_id(sampler.sweep())
    assert sampler.available and sampler.unavailable_reason is None
    assert {quiet.id, busy.id} <= set(first), f"sampled: {sorted(first)}"

    q = first[quiet.id]
    assert len(q.id) == 64
    assert q.name == f"corelane-quiet-{tag}"
    assert q.image == docker_engine.image
    assert q.status == "running"
    assert q.labels == {"corelane.role": "quiet", TEST_LABEL: tag}
    assert q.cpuset == "0"
    assert q.cpu_shares == 512
    assert q.memory_bytes > 0
    assert q.pids == [quiet.attrs["State"]["Pid"]]       # sleep is the only process
    for sample in (q, first[busy.id]):
        assert sample.pids, f"{sample.name} has no pids"
        for pid in sample.pids:
            assert sample.id in Path(f"/proc/{pid}/cgroup").read_text(), \
                f"pid {pid} of {sample.name} is not in the container's cgroup"

    b = first[busy.id]
    assert b.labels[TEST_LABEL] == tag and b.labels["corelane.role"] == "busy"
    assert b.cpuset == "" and b.cpu_shares == 0
    assert b.cpu_share == 0.0                             # nothing to compare with yet

    time.sleep(1.0)
    second = _by_id(sampler.sweep())
    assert second[busy.id].cpu_share > 0.3, second[busy.id]
    assert second[busy.id].cpu_share < 1.5                # one shell loop: about one core
    assert second[quiet.id].cpu_share < 0.1, second[quiet.id]

    if len(cpus) < 2:
        pytest.skip("moving a cpuset needs at least two CPUs")
    target = str(cpus[-1])
    quiet.update(cpuset_cpus=target)
    third = _by_id(sampler.sweep())
    assert third[quiet.id].cpuset == target
    assert _status_field(quiet.attrs["State"]["Pid"], "Cpus_allowed_list") == target


def test_sampler_skips_a_container_that_stopped(docker_engine: DockerEngine,
                                                docker_containers) -> None:
    keep = docker_containers(["sleep", "300"])
    gone = docker_containers(["sleep", "300"])
    sampler = ContainerSampler(docker_host=docker_engine.host)
    assert {keep.id, gone.id} <= set(_by_id(sampler.sweep()))
    gone.kill()
    gone.wait(timeout=30)
    after = _by_id(sampler.sweep())
    assert keep.id in after and gone.id not in after
    assert sampler.available


@pytest.mark.parametrize("kind", ["no socket file", "socket nobody accepts on"])
def test_unreachable_engine_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             kind: str) -> None:
    path = tmp_path / "docker.sock"
    listener = None
    if kind == "socket nobody accepts on":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))          # bound, never listening: connections are refused
    try:
        caplog.set_level(logging.DEBUG, logger=LOGGER)
        sampler = ContainerSampler(docker_host=f"unix://{path}")
        assert sampler.sweep() == []
        assert sampler.available is False
        assert str(path) in (sampler.unavailable_reason or "")
        started = time.monotonic()
        for _ in range(20):
            assert sampler.sweep() == []
        assert time.monotonic() - started < 0.5, "sweeps while unavailable must not wait"
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert str(path) in warnings[0].getMessage()
        expected = "no Docker engine socket" if listener is None else "refuses connections"
        assert expected in warnings[0].getMessage()
    finally:
        if listener is not None:
            listener.close()
