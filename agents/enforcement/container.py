"""Reading and applying a container's cpuset and CPU weight through the Docker engine.

The engine writes the container's cgroup (``cpuset.cpus``, ``cpu.shares``), which moves every
process inside at once, so nothing here walks threads. The result is read back twice: from
the engine's inspect data and from a container process's ``Cpus_allowed_list``, which is
what the kernel actually enforces.

Docker treats an empty cpuset and a weight of 0 in an update as "leave it", so "every CPU"
is written as the host's online list and the default weight as 1024; reading them back
compares equal to the original ``""`` and ``0``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors

from agents.enforcement.process import ALREADY, GONE, ApplyResult
from agents.enforcement.safety import OUT_OF_SCOPE
from agents.enforcement.safety import DEFAULT_CPU_SHARES, detect_override, override_reason
from pipeline import procfs
from pipeline.hostpaths import LIVE, HostPaths
from pipeline.topology import TopologyError, cpulist_format, cpulist_parse, read_online_cpus

READ_BACK_WAIT_S = 2.0


def _normal_cpuset(cpuset: str, online: str) -> str:
    return cpulist_format(cpulist_parse(cpuset or online))


def read_container(client: docker.DockerClient, container_id: str,
                   paths: HostPaths = LIVE) -> dict[str, Any] | None:
    """The container's cpuset and weight as the engine reports them, plus its main process's
    ``Cpus_allowed_list`` when it runs; None when there is no such container."""
    try:
        attrs = client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    host_config = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    pid = int(state.get("Pid") or 0)
    cpus_allowed = None
    if state.get("Running") and pid > 0:
        status = procfs.read_status(paths.proc, pid)
        cpus_allowed = status.cpus_allowed_list if status else None
    return {
        "id": attrs["Id"],
        "name": (attrs.get("Name") or "").lstrip("/"),
        "cpuset": host_config.get("CpusetCpus") or "",
        "cpu_shares": int(host_config.get("CpuShares") or 0),
        "running": bool(state.get("Running")),
        "pid": pid or None,
        "cpus_allowed": cpus_allowed,
    }


def apply_container(client: docker.DockerClient, container_id: str, cpuset: str | None,
                    cpu_shares: int | None, *, last_applied: Mapping[str, Any] | None = None,
                    before_change: Callable[[dict[str, Any]], None] | None = None,
                    allowed: Callable[[str, str], bool] | None = None,
                    paths: HostPaths = LIVE) -> ApplyResult:
    """Set a container's cpuset (``""`` = every CPU) and CPU weight (``0`` = the default);
    None leaves a setting as it is.

    Skipped: a container that is gone, or one whose settings differ from ``last_applied``
    (someone else changed them). Applying what is already there writes nothing and reports
    ``applied`` with reason ``already in place``. ``before_change`` gets the settings as they
    were before the write (the journal records them there). ``allowed(id, name)`` says
    whether the container is in scope; one that is not is skipped before any write.
    """
    def result(outcome: str, reason: str = "", before: dict[str, Any] | None = None,
               after: dict[str, Any] | None = None, changes: int = 0,
               cid: str = container_id) -> ApplyResult:
        return ApplyResult("container", outcome, reason, before or {}, after or {},
                           container_id=cid, changes=changes)

    try:
        online = cpulist_format(read_online_cpus(paths.sys_root))
        if cpuset is not None:
            cpuset = _normal_cpuset(cpuset, online)
    except (TopologyError, ValueError) as exc:
        return result("failed", f"cpuset {cpuset!r}: {exc}")
    if cpu_shares is not None and cpu_shares < 0:
        return result("failed", f"cpu_shares must be 0 (the default) or more, not {cpu_shares}")

    try:
        before = read_container(client, container_id, paths)
    except docker.errors.DockerException as exc:
        return result("failed", f"the Docker engine did not answer: {exc}")
    if before is None:
        return result("skipped", GONE)
    cid = before["id"]
    if allowed is not None and not allowed(cid, before["name"]):
        return result("skipped", OUT_OF_SCOPE, cid=cid)

    if last_applied:
        changed = detect_override(last_applied, before)
        if changed:
            return result("skipped", override_reason(changed), before, before, cid=cid)

    update: dict[str, Any] = {}
    if cpuset is not None and _normal_cpuset(before["cpuset"], online) != cpuset:
        update["cpuset_cpus"] = cpuset
    if cpu_shares is not None and \
            (before["cpu_shares"] or DEFAULT_CPU_SHARES) != (cpu_shares or DEFAULT_CPU_SHARES):
        update["cpu_shares"] = cpu_shares or DEFAULT_CPU_SHARES
    if not update:
        return result("applied", ALREADY, before, before, cid=cid)

    if before_change is not None:
        try:
            before_change(before)
        except Exception as exc:                # whatever the recorder raised: write nothing
            return result("failed", "the original settings could not be recorded, so nothing "
                                    f"was changed: {exc}", before, before, cid=cid)
    try:
        client.api.update_container(cid, **update)
    except docker.errors.NotFound:
        return result("skipped", GONE, before, cid=cid)
    except docker.errors.APIError as exc:
        return result("failed", f"the engine refused {update}: {exc.explanation or exc}",
                      before, cid=cid)
    except docker.errors.DockerException as exc:
        return result("failed", f"the Docker engine did not answer: {exc}", before, cid=cid)

    # the engine has written the cgroup when it answers; a short wait covers a slow runtime
    deadline = time.monotonic() + READ_BACK_WAIT_S
    while True:
        after = read_container(client, cid, paths)
        if after is None:
            return result("skipped", GONE, before, changes=1, cid=cid)
        problems = []
        if cpuset is not None:
            if _normal_cpuset(after["cpuset"], online) != cpuset:
                problems.append(f"engine reports cpuset {after['cpuset']!r}, wanted {cpuset!r}")
            if after["running"] and after["cpus_allowed"] is not None \
                    and _normal_cpuset(after["cpus_allowed"], online) != cpuset:
                problems.append(f"process {after['pid']} may run on {after['cpus_allowed']!r}, "
                                f"wanted {cpuset!r}")
        if cpu_shares is not None and \
                (after["cpu_shares"] or DEFAULT_CPU_SHARES) != (cpu_shares or DEFAULT_CPU_SHARES):
            problems.append(f"engine reports cpu_shares {after['cpu_shares']}, "
                            f"wanted {cpu_shares}")
        if not problems:
            return result("applied", "", before, after, changes=1, cid=cid)
        if time.monotonic() > deadline:
            return result("failed", "read back differs: " + "; ".join(problems), before, after,
                          changes=1, cid=cid)
        time.sleep(0.05)
