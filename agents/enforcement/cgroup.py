"""Tier groups and a process's membership in them, through the cgroup file systems.

corelane keeps one cgroup per tier under a root of its own (``/corelane/<tier>``) in each
hierarchy that holds a controller the tier's limits need: ``cpu`` for the weight and the
quota, ``memory`` for the memory limits. On a hybrid host these may be v1 hierarchies
beside a cgroup2 mount; each controller is written where ``pipeline.cgroups`` found it.

A process moves by writing its pid to the group's ``cgroup.procs``, which moves all its
threads. Its cgroup per controller as it was is journalled first and written back on a
restore, exactly like its other settings. A process in a cgroup someone else manages (a
container's, one with limits of its own, or one under ``applier.protected_cgroups``) is
never moved out of it. A child forked inside a tier group starts there; the reset of a new
child to neutral takes it back to its parent's original groups with ``apply_membership``.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.enforcement.journal import Identity, process_problem
from agents.enforcement.process import ALREADY, GONE, NOT_PERMITTED, ApplyResult
from pipeline import cgroups, procfs
from pipeline.cgroups import CPU, MEMORY, Layout, within
from pipeline.events import Decision
from pipeline.hostpaths import LIVE, HostPaths

NO_LIMITS = "no limits for this tier"
FIELD = "cgroups"                               # a membership's journal field: {controller: path}


@dataclass(frozen=True)
class GroupLimits:
    """What one tier's group is given; None leaves that limit off."""
    cpu_weight: int | None = None               # 1–10000, cgroup v2's scale (100 = default)
    cpu_quota_us: int | None = None             # per cpu_period_us; None: no quota
    cpu_period_us: int = cgroups.CFS_PERIOD_US
    memory_high: int | None = None              # bytes: reclaimed hard above (v1: soft limit)
    memory_max: int | None = None               # bytes: the hard limit
    swap: bool = True                           # False: no swap beyond memory_max

    @property
    def controllers(self) -> tuple[str, ...]:
        out = []
        if self.cpu_weight is not None or self.cpu_quota_us is not None:
            out.append(CPU)
        if self.memory_high is not None or self.memory_max is not None or not self.swap:
            out.append(MEMORY)
        return tuple(out)


def group_limits(d: Decision) -> GroupLimits:
    """A plan's ``cgroup`` decision as the limits to write."""
    return GroupLimits(cpu_weight=d.cpu_weight, cpu_quota_us=d.cpu_quota_us,
                       memory_high=d.memory_high, memory_max=d.memory_max,
                       swap=d.swap is not False)


def group_path(root: str, tier: str) -> str:
    """A tier group's path, as /proc/PID/cgroup would name it."""
    return f"/{root.strip('/')}/{tier}"


def _write(folder: str, name: str, value: str) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(value)


def _limit_files(version: int, controller: str, limits: GroupLimits,
                 have: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(file, text) in the order they must be written."""
    if controller == CPU:
        weight = limits.cpu_weight or cgroups.V2_WEIGHT_DEFAULT
        if version == 1:
            quota = str(limits.cpu_quota_us) if limits.cpu_quota_us is not None else "-1"
            return [("cpu.shares", str(cgroups.shares_for_weight(weight))),
                    ("cpu.cfs_period_us", str(limits.cpu_period_us)),
                    ("cpu.cfs_quota_us", quota)]
        quota = str(limits.cpu_quota_us) if limits.cpu_quota_us is not None else "max"
        return [("cpu.weight", str(weight)), ("cpu.max", f"{quota} {limits.cpu_period_us}")]
    if version == 1:
        hard = str(limits.memory_max) if limits.memory_max is not None else "-1"
        out = [("memory.soft_limit_in_bytes",
                str(limits.memory_high) if limits.memory_high is not None else "-1")]
        if have("memory.memsw.limit_in_bytes"):
            # memsw may never be below the plain limit: lift it, set the limit, then cap it
            out += [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", hard)]
            if not limits.swap and limits.memory_max is not None:
                out.append(("memory.memsw.limit_in_bytes", hard))
        else:
            out.append(("memory.limit_in_bytes", hard))
        return out
    out = [("memory.high", str(limits.memory_high) if limits.memory_high is not None else "max"),
           ("memory.max", str(limits.memory_max) if limits.memory_max is not None else "max")]
    if have("memory.swap.max"):
        out.append(("memory.swap.max", "max" if limits.swap else "0"))
    return out


def _enable_v2(layout: Layout, path: str, controller: str) -> None:
    """On cgroup v2 a controller's files exist in a group only when every parent enables
    it for its children (``cgroup.subtree_control``)."""
    h = layout.hierarchy(controller)
    assert h is not None and h.version == 2
    parts = [p for p in path.strip("/").split("/") if p]
    for depth in range(len(parts)):
        folder = h.folder("/" + "/".join(parts[:depth]))
        enabled = (cgroups.read_text(os.path.join(folder, "cgroup.subtree_control")) or "").split()
        if controller not in enabled:
            _write(folder, "cgroup.subtree_control", f"+{controller}")


def write_tier_group(layout: Layout, root: str, tier: str, limits: GroupLimits) -> ApplyResult:
    """Make the tier's group where needed and write its limits; read them back."""
    path = group_path(root, tier)
    after: dict[str, Any] = {"tier": tier, "path": path}

    def result(outcome: str, reason: str = "", changes: int = 0) -> ApplyResult:
        return ApplyResult("cgroup", outcome, reason, {}, after, changes=changes)

    wanted = limits.controllers
    if not wanted:
        return result("skipped", NO_LIMITS)
    missing = [c for c in wanted if layout.hierarchy(c) is None]
    if missing:
        return result("skipped", f"no {' or '.join(missing)} controller mounted on this host "
                                 f"({layout.description})")
    changes = 0
    for controller in wanted:
        h = layout.hierarchy(controller)
        assert h is not None
        folder = h.folder(path)
        try:
            os.makedirs(folder, exist_ok=True)
            if h.version == 2:
                _enable_v2(layout, path, controller)
            for name, text in _limit_files(h.version, controller, limits,
                                           lambda n: os.path.exists(os.path.join(folder, n))):
                current = cgroups.read_text(os.path.join(folder, name))
                if current is not None and current.strip() == text:
                    continue
                _write(folder, name, text)
                changes += 1
                after[name] = text
        except PermissionError:
            return result("skipped", f"{NOT_PERMITTED} to write {folder}", changes)
        except OSError as exc:
            return result("failed", f"writing the {controller} limits of {path} was refused: "
                                    f"{exc.strerror or exc}", changes)
        after[f"{controller}_version"] = h.version
    return result("applied", "" if changes else ALREADY, changes)


def remove_tier_groups(layout: Layout, root: str) -> list[str]:
    """Remove corelane's empty groups (after every member went back); the paths removed."""
    removed = []
    seen: set[str] = set()
    for h in layout.hierarchies:
        base = h.folder("/" + root.strip("/"))
        if base in seen or not os.path.isdir(base):
            continue
        seen.add(base)
        for name in sorted(os.listdir(base)):
            folder = os.path.join(base, name)
            if os.path.isdir(folder):
                try:
                    os.rmdir(folder)
                    removed.append(folder)
                except OSError:
                    pass                          # still has members: left as it is
        try:
            os.rmdir(base)
            removed.append(base)
        except OSError:
            pass
    return removed


def read_membership(layout: Layout, pid: int, controllers: Iterable[str],
                    paths: HostPaths = LIVE) -> dict[str, str] | None:
    """The process's cgroup for each controller, or None when it is gone."""
    groups = cgroups.process_cgroups(paths, pid)
    if groups is None:
        return None
    out = {}
    for controller in controllers:
        path = cgroups.cgroup_of(layout, groups, controller)
        if path is not None:
            out[controller] = path
    return out


def foreign_reason(layout: Layout, controller: str, path: str, root: str,
                   protected: Iterable[str] = ()) -> str | None:
    """Why a process in cgroup ``path`` must stay there, or None when it may be moved."""
    if within(path, root):
        return None
    container = procfs.container_id(path)
    if container:
        return f"in container {container[:12]}'s cgroup"
    if any(within(path, prefix) for prefix in protected):
        return f"in protected cgroup {path} (applier.protected_cgroups)"
    h = layout.hierarchy(controller)
    if h is not None and path != "/":
        limits = cgroups.own_limits(h, path, controller)
        if limits:
            return f"in cgroup {path}, which has limits of its own ({limits})"
    return None


def apply_membership(pid: int, start_time: int, wanted: Mapping[str, str], *, layout: Layout,
                     root: str, protected: Iterable[str] = (), paths: HostPaths = LIVE,
                     last_applied: Mapping[str, str] | None = None,
                     before_change: Callable[[dict[str, Any]], None] | None = None
                     ) -> ApplyResult:
    """Move process ``(pid, start_time)`` into ``wanted`` ({controller: cgroup path}).

    Skipped without a write: a gone process or reused pid, one in a cgroup it must stay in
    (``foreign_reason``), and one someone moved elsewhere since corelane's last move
    (``last_applied``). ``before_change`` gets {"cgroups": as they were} before the first
    write."""
    protected = tuple(protected)

    def result(outcome: str, reason: str = "", before: Mapping[str, str] | None = None,
               after: Mapping[str, str] | None = None, changes: int = 0) -> ApplyResult:
        return ApplyResult("process", outcome, reason,
                           {FIELD: dict(before)} if before is not None else {},
                           {FIELD: dict(after)} if after is not None else {},
                           pid=pid, start_time=start_time, changes=changes)

    problem = process_problem(Identity.process(pid, start_time), paths)
    if problem:
        return result("skipped", problem)
    before = read_membership(layout, pid, wanted, paths)
    if before is None:
        return result("skipped", GONE)
    if last_applied:
        moved = {c: (last_applied[c], before.get(c)) for c in wanted
                 if c in last_applied and before.get(c) not in (last_applied[c], wanted[c])}
        if moved:
            parts = ", ".join(f"{c} {a} -> {b}" for c, (a, b) in sorted(moved.items()))
            return result("skipped", f"changed by someone else: {parts}", before, before)
    to_move = {c: p for c, p in wanted.items() if c in before and before[c] != p}
    if not to_move:
        return result("applied", ALREADY, before, before)
    for controller in to_move:
        why = foreign_reason(layout, controller, before[controller], root, protected)
        if why:
            return result("skipped", why, before, before)
    if before_change is not None:
        try:
            before_change({FIELD: dict(before)})
        except Exception as exc:                # whatever the recorder raised: write nothing
            return result("failed", "the original cgroups could not be recorded, so nothing "
                                    f"was moved: {exc}", before, before)
    written: set[str] = set()
    changes = 0
    for controller, path in to_move.items():
        h = layout.hierarchy(controller)
        if h is None:
            continue
        folder = h.folder(path)
        if folder in written:                   # co-mounted controllers (cpu,cpuacct)
            continue
        try:
            _write(folder, "cgroup.procs", str(pid))
        except PermissionError:
            return result("skipped", f"{NOT_PERMITTED} to move it into {path}", before, before,
                          changes)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return result("skipped", GONE, before, before, changes)
            return result("failed", f"moving it into {path} ({controller}) was refused: "
                                    f"{exc.strerror or exc}", before, before, changes)
        written.add(folder)
        changes += 1
    after = read_membership(layout, pid, wanted, paths) or {}
    wrong = {c: after.get(c) for c in to_move if after.get(c) != wanted[c]}
    if wrong:
        return result("failed", f"read back {wrong}, wanted {dict(to_move)}", before, after,
                      changes)
    return result("applied", "", before, after, changes)


__all__ = ["FIELD", "GroupLimits", "apply_membership", "foreign_reason", "group_limits", "group_path",
           "read_membership", "remove_tier_groups", "write_tier_group"]
