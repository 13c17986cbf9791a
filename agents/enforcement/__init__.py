"""Enforcement primitives: apply settings to processes and containers, journal the originals,
and put them back.

- ``process``: ``ProcessSettings``, ``read_settings``, ``apply_settings`` (every thread,
  identity-checked, read back).
- ``container``: ``read_container``, ``apply_container`` (cpuset and CPU weight via Docker).
- ``cpu``: ``read_limit``, ``apply_limit`` (a CPU's idle-state limit, through sysfs).
- ``safety``: protection, scope, and detection of changes someone else made.
- ``journal``: the crash-safe record of originals, ``restore_all`` and ``reconcile``.

``enforce_process``, ``enforce_container`` and ``enforce_cpu_idle`` tie them together the way the applier uses
them: the original goes into the journal before the first write, and what corelane left is
noted after it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import docker

from pipeline.cgroups import CPU, MEMORY, Layout, read_layout
from pipeline.hostpaths import LIVE, HostPaths
from agents.enforcement.cgroup import FIELD as CGROUPS
from agents.enforcement.cgroup import apply_membership, read_membership
from agents.enforcement.container import apply_container, read_container
from agents.enforcement.cpu import FIELD, apply_limit, limit_text, read_limit
from agents.enforcement.journal import Identity, Journal, JournalEntry, JournalError, RestoreFn
from agents.enforcement.process import (FIELDS, ApplyResult, ProcessSettings, apply_settings,
                                        read_settings, read_thread_settings, read_threads)
from agents.enforcement.safety import Guard, Scope, detect_override, is_protected, protection

__all__ = [
    "ApplyResult", "Guard", "Identity", "Journal", "JournalEntry", "JournalError",
    "ProcessSettings", "Scope", "apply_container", "apply_settings", "detect_override",
    "enforce_container", "enforce_cpu_idle", "enforce_membership", "enforce_process", "is_protected", "protection",
    "read_container", "read_limit", "read_settings", "read_thread_settings", "read_threads", "restorer",
]

CONTAINER_FIELDS = ("cpuset", "cpu_shares")


def enforce_process(journal: Journal, pid: int, start_time: int, wanted: ProcessSettings, *,
                    guard: Guard | None = None, respect_override: bool = True,
                    paths: HostPaths = LIVE) -> ApplyResult:
    """``apply_settings`` with the journal: the original is recorded before the first write,
    and the settings corelane left are noted after. A setting corelane changed earlier and
    no longer asks for goes back to its original (a demoted process that fell asleep gets
    its nice and policy back). With ``respect_override`` a target whose settings someone
    else changed since corelane's last apply is left alone."""
    identity = Identity.process(pid, start_time)
    entry = journal.get(identity)
    asked = [name for name in FIELDS if getattr(wanted, name) is not None]
    given_back: dict[str, Any] = {}
    if entry is not None and entry.applied:
        given_back = {name: entry.original[name] for name in entry.applied
                      if name in FIELDS and name not in asked
                      and entry.original.get(name) is not None}
        wanted = replace(wanted, **given_back)
    result = apply_settings(
        pid, start_time, wanted, paths=paths, guard=guard,
        last_applied=entry.applied if entry and respect_override else None,
        before_change=lambda before: journal.record_original(identity, before))
    if result.applied and journal.get(identity) is not None:
        # what is really there now, for the fields corelane still manages
        journal.mark_applied(identity, {name: result.after.get(name) for name in asked})
        if given_back:
            back = ", ".join(f"{k} {v}" for k, v in sorted(given_back.items()))
            result.add_reason(f"given back: {back}")
    return result


def enforce_container(journal: Journal, client: docker.DockerClient, container_id: str,
                      cpuset: str | None, cpu_shares: int | None, *,
                      respect_override: bool = True, scope: Scope | None = None,
                      paths: HostPaths = LIVE) -> ApplyResult:
    """``apply_container`` with the journal (see ``enforce_process``)."""
    entry = journal.get(Identity.container(container_id))
    recorded: list[Identity] = []

    def record(before: dict[str, Any]) -> None:
        identity = Identity.container(before["id"])
        journal.record_original(identity, {name: before[name] for name in CONTAINER_FIELDS})
        recorded.append(identity)

    result = apply_container(client, container_id, cpuset, cpu_shares,
                             last_applied=entry.applied if entry and respect_override else None,
                             before_change=record,
                             allowed=scope.allows_container if scope is not None else None,
                             paths=paths)
    identity = Identity.container(result.container_id or container_id)
    if result.applied and journal.get(identity) is not None:
        asked = {"cpuset": cpuset, "cpu_shares": cpu_shares}
        journal.mark_applied(identity, {name: result.after.get(name)
                                        for name, value in asked.items() if value is not None})
    return result


def enforce_cpu_idle(journal: Journal, cpu: int, latency_us: int, *,
                     respect_override: bool = True, paths: HostPaths = LIVE) -> ApplyResult:
    """``apply_limit`` with the journal (see ``enforce_process``)."""
    identity = Identity.of_cpu(cpu)
    entry = journal.get(identity)
    text = limit_text(latency_us)
    result = apply_limit(cpu, text, last_applied=entry.applied if entry and respect_override
                         else None,
                         before_change=lambda before: journal.record_original(identity, before),
                         paths=paths)
    if result.applied and journal.get(identity) is not None:
        journal.mark_applied(identity, {FIELD: result.after.get(FIELD)})
    return result


def restorer(docker_client: docker.DockerClient | None = None, *, guard: Guard | None = None,
             paths: HostPaths = LIVE) -> RestoreFn:
    """The function ``Journal.restore_all`` and ``reconcile`` call for each entry: a process
    gets its original settings back on every thread (threads that had their own settings get
    theirs), a container its cpuset and weight, a CPU its idle-state limit. A target someone else changed since corelane
    applied is left as they set it."""
    layouts: list[Layout] = []                  # read at the first cgroup entry, once

    def restore(entry: JournalEntry) -> ApplyResult:
        identity, original = entry.identity, entry.original
        if identity.target == "cpu":
            return apply_limit(int(identity.cpu or 0), str(original.get(FIELD)),
                               last_applied=entry.applied, paths=paths)
        if identity.target == "cgroup":
            layouts[:] = layouts or [read_layout(paths)]
            return apply_membership(int(identity.pid or 0), int(identity.start_time or 0),
                                    original.get(CGROUPS) or {}, layout=layouts[0],
                                    root=str(original.get("root", "")), paths=paths,
                                    last_applied=(entry.applied or {}).get(CGROUPS))
        if identity.target == "process":
            return apply_settings(int(identity.pid or 0), int(identity.start_time or 0),
                                  ProcessSettings.from_dict(original), paths=paths,
                                  guard=guard, last_applied=entry.applied,
                                  thread_overrides=original.get("thread_overrides"))
        if docker_client is None:
            return ApplyResult("container", "failed",
                               "no Docker engine was given to restore this container",
                               container_id=identity.container_id)
        return apply_container(docker_client, str(identity.container_id),
                               original.get("cpuset"), original.get("cpu_shares"),
                               last_applied=entry.applied, paths=paths)
    return restore


def enforce_membership(journal: Journal, pid: int, start_time: int,
                       wanted: Mapping[str, str] | None, *, layout: Layout, root: str,
                       protected: Iterable[str] = (), respect_override: bool = True,
                       paths: HostPaths = LIVE) -> ApplyResult | None:
    """``apply_membership`` with the journal: the process's own cgroups are recorded before
    it is first moved into a tier group. With no ``wanted`` groups (its tier has no limits
    any more, it fell asleep) a process corelane moved goes back to its own; None when
    there is nothing to do."""
    identity = Identity.membership(pid, start_time)
    entry = journal.get(identity)
    last = (entry.applied or {}).get(CGROUPS) if entry and respect_override else None
    if not wanted:
        if entry is None:
            return None
        result = apply_membership(pid, start_time, entry.original.get(CGROUPS) or {},
                                  layout=layout, root=root, paths=paths, last_applied=last)
        if result.outcome != "failed":
            journal.forget(identity)
        if result.applied:
            result.add_reason("given back: its own cgroups")
        return result
    result = apply_membership(
        pid, start_time, wanted, layout=layout, root=root, protected=protected, paths=paths,
        last_applied=last,
        # every controller corelane may ever move it in, so a limit added later is undone too
        before_change=lambda before: journal.record_original(identity, {
            CGROUPS: {**(read_membership(layout, pid, (CPU, MEMORY), paths) or {}),
                      **before[CGROUPS]}, "root": root}))
    if result.applied and journal.get(identity) is not None:
        journal.mark_applied(identity, {CGROUPS: result.after.get(CGROUPS)})
    return result
