"""Reading and applying a process's CPU affinity, nice, I/O class and scheduling policy.

Every setting here is per thread in Linux: ``sched_setaffinity``, ``setpriority``,
``sched_setscheduler`` and ``ioprio_set`` given a thread id change that one thread. A policy
set on the leader alone leaves its workers behind, so ``apply_settings`` walks
``/proc/PID/task`` round after round (at most ``MAX_ROUNDS``) until a round finds no thread
that still needs a write: a thread started by one already set inherits its settings, and
one started by a thread not yet set is caught by the next round.

A process is ``(pid, start_time)``: the identity is checked before the first change, before
each round and after the last one, so a reused pid is never touched.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from agents.enforcement.safety import Guard, detect_override, override_reason
from pipeline import procfs
from pipeline.hostpaths import LIVE, HostPaths
from pipeline.events import Decision, Enforcement
from pipeline.topology import cpulist_format, cpulist_parse

# sched(7) policy numbers, as /proc/PID/stat field 41 shows them
POLICIES: dict[str, int] = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR,
                            "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE,
                            "deadline": 6}   # read only: it needs sched_setattr to set
POLICY_NAMES: dict[int, str] = {number: name for name, number in POLICIES.items()}
REALTIME = ("fifo", "rr")

# ioprio_set(2) classes; "none" means "derived from nice" (best effort at (nice + 20) / 5)
IOCLASSES: dict[str, int] = {"none": 0, "rt": 1, "be": 2, "idle": 3}
IOCLASS_NAMES: dict[int, str] = {number: name for name, number in IOCLASSES.items()}
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1

# (ioprio_set, ioprio_get) per architecture; psutil is the fallback elsewhere
_IOPRIO_SYSCALLS: dict[str, tuple[int, int]] = {
    "x86_64": (251, 252), "i386": (289, 290), "i686": (289, 290),
    "aarch64": (30, 31), "riscv64": (30, 31), "armv7l": (314, 315),
    "ppc64le": (273, 274), "s390x": (282, 283),
}

FIELDS = ("cpus", "nice", "ioclass", "iolevel", "policy", "rt_priority")
MAX_ROUNDS = 20

# reasons, as they appear in Enforcement.reason
GONE = "gone"
PID_REUSED = "pid reused"
NOT_PERMITTED = "not permitted"
ALREADY = "already in place"


@dataclass(frozen=True)
class ProcessSettings:
    """What corelane sets on a process. A None field is left as it is when applying; the
    readers fill every field (ioclass and iolevel stay None when /proc is not the live one,
    since the I/O priority has no /proc file)."""
    cpus: str | None = None             # cpu list, e.g. "0-3,8"
    nice: int | None = None             # -20..19
    ioclass: str | None = None          # "rt" | "be" | "idle" | "none"
    iolevel: int | None = None          # 0..7 (rt and be only)
    policy: str | None = None           # "other" | "batch" | "idle" | "fifo" | "rr"
    rt_priority: int | None = None      # 1..99 for fifo and rr, else 0

    def __post_init__(self) -> None:
        if self.cpus is not None:
            try:
                cpus = cpulist_parse(self.cpus)
            except ValueError as exc:
                raise ValueError(f"cpus: {exc}") from None
            if not cpus:
                raise ValueError("cpus: an empty cpu list would leave the process nowhere to run")
            object.__setattr__(self, "cpus", cpulist_format(cpus))
        if self.nice is not None and not -20 <= self.nice <= 19:
            raise ValueError(f"nice must be between -20 and 19, not {self.nice}")
        if self.ioclass is not None and self.ioclass not in IOCLASSES:
            raise ValueError(f"ioclass must be one of {', '.join(IOCLASSES)}, not {self.ioclass!r}")
        if self.iolevel is not None and not 0 <= self.iolevel <= 7:
            raise ValueError(f"iolevel must be between 0 and 7, not {self.iolevel}")
        if self.policy is not None and self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.rt_priority is not None:
            if self.policy in REALTIME and not 1 <= self.rt_priority <= 99:
                raise ValueError(f"rt_priority for {self.policy} must be 1..99, "
                                 f"not {self.rt_priority}")
            if self.policy is not None and self.policy not in REALTIME and self.rt_priority:
                raise ValueError(f"rt_priority must be 0 under policy {self.policy}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessSettings:
        """From ``to_dict`` output or an Enforcement's before/after (extra keys are ignored)."""
        return cls(**{name: data.get(name) for name in FIELDS})

    @classmethod
    def from_decision(cls, decision: Decision) -> ProcessSettings:
        return cls(cpus=decision.cpus or None, nice=decision.nice, ioclass=decision.ioclass,
                   iolevel=decision.iolevel, policy=decision.policy,
                   rt_priority=1 if decision.policy in REALTIME else None)

    def only(self, *names: str) -> ProcessSettings:
        """A copy with every field but ``names`` set to None (left as it is)."""
        return ProcessSettings(**{name: getattr(self, name) for name in names})

    def merged(self, other: Mapping[str, Any] | None) -> ProcessSettings:
        """These settings with the not-None fields of ``other`` on top."""
        if not other:
            return self
        return replace(self, **{k: v for k, v in other.items() if k in FIELDS and v is not None})

    def differences(self, current: ProcessSettings) -> list[str]:
        """Fields set here whose value ``current`` does not have."""
        out = []
        for name in FIELDS:
            wanted = getattr(self, name)
            if wanted is None:
                continue
            if name == "iolevel" and (self.ioclass or current.ioclass) in ("idle", "none"):
                continue                     # the level means nothing under these classes
            if name == "rt_priority" and (self.policy or current.policy) not in REALTIME:
                continue
            if getattr(current, name) != wanted:
                out.append(name)
        return out


@dataclass
class ApplyResult:
    """One target's outcome: ``applied``, ``skipped`` or ``failed``, with the reason and the
    settings before and after as plain dicts. ``changes`` counts the settings written."""
    target: str                                   # "process" | "container"
    outcome: str
    reason: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    changes: int = 0

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    @property
    def changed(self) -> bool:
        return self.changes > 0

    @property
    def subject(self) -> str:
        """What it is about, for a person: "process 42", "container 1a2b3c4d5e6f", "cpu 1"."""
        if self.target == "process":
            return f"process {self.pid}"
        if self.target == "cpu":
            return f"cpu {self.before.get('cpu', self.after.get('cpu', '?'))}"
        if self.target == "cgroup":
            return f"group {self.after.get('path', self.before.get('path', '?'))}"
        return f"container {(self.container_id or '?')[:12]}"

    def add_reason(self, why: str, *, first: bool = False) -> None:
        """One more clause of the reason, after the others (or before, ``first``)."""
        parts = (why, self.reason) if first else (self.reason, why)
        self.reason = "; ".join(r for r in parts if r)

    def with_membership(self, moved: "ApplyResult") -> None:
        """Fold this process's cgroup move in: one decided target is one result (and one
        history row). A failed move fails the whole, so it is tried again; a skipped one
        keeps this outcome and says why in the reason."""
        self.before = {**self.before, **moved.before}
        self.after = {**self.after, **moved.after}
        self.changes += moved.changes
        if moved.outcome == "failed":
            self.outcome = "failed"
        if not moved.applied and moved.reason and moved.reason != self.reason:
            self.add_reason(f"cgroups: {moved.reason}")

    def to_enforcement(self) -> Enforcement:
        return Enforcement(target=self.target, outcome=self.outcome, pid=self.pid,
                           start_time=self.start_time, container_id=self.container_id,
                           reason=self.reason, before=self.before, after=self.after)


# --- I/O priority ----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_IOPRIO_NR = _IOPRIO_SYSCALLS.get(platform.machine())


def _ioprio_get(tid: int) -> tuple[str, int]:
    if _IOPRIO_NR is None:
        import psutil
        klass, level = psutil.Process(tid).ionice()
        return IOCLASS_NAMES.get(int(klass), "none"), int(level)
    value = _syscall(_IOPRIO_NR[1], _IOPRIO_WHO_PROCESS, tid)
    if value < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return IOCLASS_NAMES.get(value >> _IOPRIO_CLASS_SHIFT, "none"), value & 0xFF


def _ioprio_set(tid: int, ioclass: str, level: int) -> None:
    if ioclass in ("idle", "none"):
        level = 0                            # the kernel rejects a level for these classes
    if _IOPRIO_NR is None:
        import psutil
        psutil.Process(tid).ionice(IOCLASSES[ioclass], level if ioclass in ("rt", "be") else None)
        return
    value = (IOCLASSES[ioclass] << _IOPRIO_CLASS_SHIFT) | level
    if _syscall(_IOPRIO_NR[0], _IOPRIO_WHO_PROCESS, tid, value) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# --- reading -------------------------------------------------------------------------------

def read_thread_settings(pid: int, tid: int, paths: HostPaths = LIVE) -> ProcessSettings | None:
    """One thread's settings, or None when it is gone."""
    proc = paths.proc
    stat = procfs.read_stat(proc, pid, tid)
    status = procfs.read_status(proc, pid, tid)
    if stat is None or status is None:
        return None
    ioclass: str | None = None
    iolevel: int | None = None
    if paths.is_live:
        try:
            ioclass, iolevel = _ioprio_get(tid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return None                    # the thread ended after its stat was read
    return ProcessSettings(cpus=status.cpus_allowed_list or None, nice=stat.nice,
                           ioclass=ioclass, iolevel=iolevel,
                           policy=POLICY_NAMES.get(stat.policy, "other"),
                           rt_priority=stat.rt_priority)


def read_threads(pid: int, paths: HostPaths = LIVE) -> dict[int, ProcessSettings]:
    """Every thread's settings by thread id; empty when the process is gone."""
    proc = paths.proc
    out = {}
    for tid in sorted(procfs.list_tids(proc, pid)):
        settings = read_thread_settings(pid, tid, paths)
        if settings is not None:
            out[tid] = settings
    return out


def read_settings(pid: int, paths: HostPaths = LIVE) -> ProcessSettings | None:
    """The process's settings as its leader thread has them; None when it is gone."""
    return read_thread_settings(pid, pid, paths)


def summarize(pid: int, threads: Mapping[int, ProcessSettings]) -> dict[str, Any]:
    """Plain-dict view of a process: the leader's settings, the thread count, and
    ``thread_overrides`` ({tid: {field: value}}) for threads that differ from the leader."""
    if not threads:
        return {}
    leader = threads.get(pid) or threads[min(threads)]
    out: dict[str, Any] = {**leader.to_dict(), "threads": len(threads)}
    overrides = {}
    for tid, settings in threads.items():
        diff = {name: getattr(settings, name) for name in FIELDS
                if getattr(settings, name) != getattr(leader, name)}
        if diff:
            overrides[str(tid)] = diff
    if overrides:
        out["thread_overrides"] = overrides
    return out


def identity_of(pid: int, paths: HostPaths = LIVE) -> tuple[int, int] | None:
    """(pid, start_time) of a live process, or None."""
    stat = procfs.read_stat(paths.proc, pid)
    return (pid, stat.start_time) if stat else None


# --- applying ------------------------------------------------------------------------------

class _JournalRefused(Exception):
    """``before_change`` failed: nothing may be written without the original on record."""


class _Outcome:
    """What happened to the individual writes of one apply."""

    def __init__(self, before_first_write: Callable[[], None] | None) -> None:
        self._before_first_write = before_first_write
        self.writes = 0
        self.not_permitted: list[str] = []
        self.failures: list[str] = []

    def about_to_write(self) -> None:
        if self._before_first_write is not None:
            call, self._before_first_write = self._before_first_write, None
            try:
                call()
            except Exception as exc:            # whatever the recorder raised: write nothing
                raise _JournalRefused(str(exc) or type(exc).__name__) from exc


def _write(tid: int, name: str, target: ProcessSettings, current: ProcessSettings) -> None:
    if name == "cpus":
        os.sched_setaffinity(tid, cpulist_parse(target.cpus or ""))
    elif name == "nice":
        os.setpriority(os.PRIO_PROCESS, tid, int(target.nice or 0))
    elif name in ("policy", "rt_priority"):
        policy = target.policy or current.policy or "other"
        priority = (target.rt_priority or current.rt_priority or 1) if policy in REALTIME else 0
        os.sched_setscheduler(tid, POLICIES[policy], os.sched_param(priority))
    elif name in ("ioclass", "iolevel"):
        ioclass = target.ioclass or current.ioclass or "none"
        level = target.iolevel if target.iolevel is not None else (current.iolevel or 0)
        _ioprio_set(tid, ioclass, level)


def _apply_thread(pid: int, tid: int, target: ProcessSettings, paths: HostPaths,
                  result: _Outcome) -> bool:
    """Bring one thread to ``target``; True when it needed a write."""
    current = read_thread_settings(pid, tid, paths)
    if current is None:
        return False                            # the thread ended: nothing to do
    names = target.differences(current)
    # policy before nice: leaving SCHED_IDLE must not depend on the nice order; one write
    # covers policy with its rt priority, and one covers the I/O class with its level
    order = ["cpus", "policy", "rt_priority", "nice", "ioclass", "iolevel"]
    done: set[str] = set()
    for name in sorted(names, key=order.index):
        group = {"rt_priority": "policy", "iolevel": "ioclass"}.get(name, name)
        if group in done:
            continue
        done.add(group)
        result.about_to_write()
        try:
            _write(tid, group, target, current)
            result.writes += 1
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return True                     # the thread ended between read and write
            value = getattr(target, group)
            if exc.errno in (errno.EPERM, errno.EACCES):
                result.not_permitted.append(f"{group} {value} on thread {tid}")
            else:
                result.failures.append(f"{group} {value} on thread {tid}: "
                                       f"{exc.strerror or exc}")
    return bool(names)


def apply_settings(pid: int, start_time: int, wanted: ProcessSettings, *,
                   paths: HostPaths = LIVE, guard: Guard | None = None,
                   last_applied: Mapping[str, Any] | None = None,
                   thread_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                   before_change: Callable[[dict[str, Any]], None] | None = None,
                   max_rounds: int = MAX_ROUNDS) -> ApplyResult:
    """Apply ``wanted`` to every thread of the process ``(pid, start_time)``.

    Refused (skipped) without a single write: a gone process, a reused pid, a protected or
    out-of-scope one (corelane's own get the affinity only), and one whose settings differ
    from ``last_applied`` (what corelane set last time: someone else changed them since).
    ``thread_overrides`` ({tid: {field: value}}, as ``summarize`` gives them) put individual
    threads back to their own settings on a restore. ``before_change`` gets the settings as
    they were, once, before the first write (the journal records them there); it is not
    called when nothing needs to change. Applying the same settings again writes nothing and
    reports ``applied`` with reason ``already in place``.
    """
    guard = guard or Guard()
    proc = paths.proc

    def result(outcome: str, reason: str = "", before: dict[str, Any] | None = None,
               after: dict[str, Any] | None = None, changes: int = 0) -> ApplyResult:
        return ApplyResult("process", outcome, reason, before or {}, after or {}, pid=pid,
                           start_time=start_time, changes=changes)

    def identity_problem() -> str | None:
        stat = procfs.read_stat(proc, pid)
        if stat is None:
            return GONE
        if stat.start_time != start_time:
            return f"{PID_REUSED} (started at tick {stat.start_time}, not {start_time})"
        return None

    stat = procfs.read_stat(proc, pid)
    if stat is None:
        return result("skipped", GONE)
    if stat.start_time != start_time:
        return result("skipped", f"{PID_REUSED} (started at tick {stat.start_time}, "
                                 f"not {start_time})")
    # protection comes before anything else: a protected process gets no write at all
    note = ""
    protected = guard.check(pid, stat, proc)
    if protected is not None:
        if not protected.affinity_allowed:
            return result("skipped", protected.reason)
        if wanted.cpus is None:
            return result("skipped", protected.reason)
        dropped = [name for name in FIELDS if name != "cpus" and getattr(wanted, name) is not None]
        wanted = wanted.only("cpus")
        if dropped:
            note = f"{protected.reason}: {', '.join(dropped)} left as they were"

    before_threads = read_threads(pid, paths)
    if not before_threads:
        return result("skipped", GONE)
    before = summarize(pid, before_threads)

    if last_applied:
        changed = detect_override(last_applied, before)
        if changed:
            return result("skipped", override_reason(changed), before, before)

    overrides = {int(tid): values for tid, values in (thread_overrides or {}).items()}

    def target_for(tid: int) -> ProcessSettings:
        return wanted.merged(overrides.get(tid))

    def problem_result(problem: str) -> ApplyResult:
        # a pid reused after a write is a failure to report loudly; an exit is not
        if outcome.writes and problem != GONE:
            return result("failed", f"{problem} during the apply", before,
                          changes=outcome.writes)
        return result("skipped", problem, before, changes=outcome.writes)

    outcome = _Outcome((lambda: before_change(before)) if before_change is not None else None)
    seen: set[int] = set()
    settled = False
    try:
        for _ in range(max_rounds):
            problem = identity_problem()
            if problem is not None:
                return problem_result(problem)
            new = [tid for tid in sorted(procfs.list_tids(proc, pid)) if tid not in seen]
            needed = False
            for tid in new:
                needed |= _apply_thread(pid, tid, target_for(tid), paths, outcome)
                seen.add(tid)
            # A round in which no thread needed a write is enough: every thread alive at
            # its listing is set, and a thread they start later inherits their settings.
            if not needed:
                settled = True
                break
    except _JournalRefused as exc:
        return result("failed", f"the original settings could not be recorded, so nothing "
                                f"was changed: {exc}", before, before)

    problem = identity_problem()
    if problem is not None:
        return problem_result(problem)

    after_threads = read_threads(pid, paths)
    after = summarize(pid, after_threads)
    if not after_threads:
        return result("skipped", GONE, before, changes=outcome.writes)
    if not settled:
        return result("failed", f"threads kept appearing: {max_rounds} rounds did not reach a "
                                "stable thread set", before, after, outcome.writes)
    if outcome.failures:
        return result("failed", "; ".join(outcome.failures), before, after, outcome.writes)
    if outcome.not_permitted:
        return result("skipped", f"{NOT_PERMITTED}: " + "; ".join(outcome.not_permitted),
                      before, after, outcome.writes)
    mismatches = []
    for tid, settings in after_threads.items():
        for name in target_for(tid).differences(settings):
            mismatches.append(f"thread {tid} {name} is {getattr(settings, name)!r}, "
                              f"wanted {getattr(target_for(tid), name)!r}")
    if mismatches:
        return result("failed", "read back differs: " + "; ".join(mismatches[:5])
                      + (f" (and {len(mismatches) - 5} more)" if len(mismatches) > 5 else ""),
                      before, after, outcome.writes)
    if outcome.writes == 0:
        return result("applied", f"{ALREADY}; {note}" if note else ALREADY, before, after)
    return result("applied", note, before, after, outcome.writes)
