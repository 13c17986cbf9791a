"""A child never keeps a demotion it inherited from its parent.

At fork a child takes its parent's policy, nice, I/O priority and affinity
(SCHED_RESET_ON_FORK resets only real-time policies and negative nice). So everything a
shell that corelane idled starts would begin life at SCHED_IDLE and nice 19 on the batch
cores. The child is put back at once to what it would have had without corelane: its
parent's original priorities, on the shared cores, and journalled with those as its
original, so a restore never demotes it again. Then it is judged like any new process.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agents.enforcement.cgroup import FIELD as CGROUPS
from agents.enforcement.cgroup import apply_membership
from agents.enforcement.journal import Identity, Journal, JournalEntry
from agents.enforcement.process import FIELDS, ApplyResult, ProcessSettings, apply_settings
from agents.enforcement.safety import Guard
from pipeline import procfs
from pipeline.cgroups import Layout
from pipeline.hostpaths import LIVE, HostPaths

_LOWER = {"batch", "idle"}


def demoted(entry: JournalEntry) -> bool:
    """Whether corelane left this process with less than it had: a higher nice, a batch or
    idle policy, or the idle I/O class."""
    if entry.identity.target != "process" or not entry.applied:
        return False
    applied, original = entry.applied, entry.original
    nice = applied.get("nice")
    if nice is not None and nice > (original.get("nice") or 0):
        return True
    policy = applied.get("policy")
    if policy in _LOWER and original.get("policy") != policy:
        return True
    return applied.get("ioclass") == "idle" and original.get("ioclass") != "idle"


def moved_into_group(entry: JournalEntry) -> bool:
    """Whether corelane moved this process into a tier group, whose limits its children
    would inherit at fork (a process given back its own groups is no longer journalled)."""
    return entry.identity.target == "cgroup" and bool((entry.applied or {}).get(CGROUPS))


def demoted_parents(entries: Iterable[JournalEntry]) -> dict[int, JournalEntry]:
    """By pid, each process whose children must not keep what they inherit at fork:
    demoted in priority, or moved into a limited tier group. A parent only moved is given
    by its process entry where it has one (the priorities a child gets back), else by its
    membership entry (a child then only leaves the group and goes to the shared cores)."""
    processes: dict[tuple[int, int], JournalEntry] = {}
    moved: list[JournalEntry] = []
    parents: dict[int, JournalEntry] = {}
    for entry in entries:
        identity = entry.identity
        if identity.target == "process":
            processes[(int(identity.pid or 0), int(identity.start_time or 0))] = entry
            if demoted(entry):
                parents[int(identity.pid or 0)] = entry
        elif moved_into_group(entry):
            moved.append(entry)
    for entry in moved:
        key = (int(entry.identity.pid or 0), int(entry.identity.start_time or 0))
        parents.setdefault(key[0], processes.get(key, entry))
    return parents


def neutral_for(parent: JournalEntry, shared_cpus: str | None) -> ProcessSettings:
    """What a child of ``parent`` would have without corelane: the parent's original
    settings for what corelane changed on it, on the shared cores."""
    fields = {name: parent.original.get(name) for name in FIELDS
              if name in (parent.applied or {}) and parent.original.get(name) is not None}
    if shared_cpus:
        fields["cpus"] = shared_cpus
    if fields.get("policy") not in ("fifo", "rr"):
        fields.pop("rt_priority", None)
    return ProcessSettings(**fields)


def reset_child(journal: Journal, pid: int, parent: JournalEntry, shared_cpus: str | None, *,
                guard: Guard | None = None, paths: HostPaths = LIVE,
                layout: Layout | None = None) -> ApplyResult | None:
    """Put a child of a demoted parent back to neutral, and out of the tier group its parent
    was moved into (with ``layout``); None when it is gone already."""
    stat = procfs.read_stat(paths.proc, pid)
    if stat is None:
        return None
    identity = Identity.process(pid, stat.start_time)
    wanted = neutral_for(parent, shared_cpus)
    asked = [name for name in FIELDS if getattr(wanted, name) is not None]

    def record(before: Mapping[str, Any]) -> None:
        # its original is what it would have had: its parent's, not the demotion
        theirs = {n: parent.original[n] for n in asked if parent.original.get(n) is not None}
        journal.record_original(identity, {**before, **theirs})

    result = apply_settings(pid, stat.start_time, wanted, guard=guard, paths=paths,
                            before_change=record)
    if result.applied and journal.get(identity) is not None:
        journal.mark_applied(identity, {name: result.after.get(name) for name in asked})
    groups = journal.get(Identity.membership(int(parent.identity.pid or 0),
                                             int(parent.identity.start_time or 0)))
    if result.applied and groups is not None and layout is not None:
        moved = apply_membership(pid, stat.start_time, groups.original.get(CGROUPS) or {},
                                 layout=layout, root=str(groups.original.get("root", "")),
                                 paths=paths)
        result.after[CGROUPS] = moved.after.get(CGROUPS, moved.before.get(CGROUPS))
        if not moved.applied:
            result.add_reason(f"cgroups: {moved.reason}")
    if result.applied:
        why = (f"child of {parent.identity.pid}, which corelane demoted: back to its "
               f"parent's own priorities" if demoted(parent) else
               f"child of {parent.identity.pid}, which corelane moved into a tier group: "
               f"back to its parent's own groups")
        result.add_reason(why, first=True)
    return result
