"""What corelane may change, and what it must leave alone.

Three separate questions, asked before any setting is written:

- **protection** (``is_protected`` / ``protection``): PID 1 and kernel threads are never
  touched at all; processes matching a configured pattern are never touched either.
  corelane's own processes and its broker are never niced, idled or stopped, but they may be
  given an affinity, whatever the scope: they belong on the non-critical cores like any
  housekeeping work.
- **scope** (``Scope``): which processes corelane may change at all (everything by default;
  tests narrow it to what they started).
- **operator override** (``detect_override``): the settings corelane last applied differ from
  the ones read now, so someone else changed them and corelane should back off.

Nothing here makes a system call that changes anything; the checks read ``/proc`` only.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline import procfs
from pipeline.cgroups import within
from pipeline.procfs import Stat
from pipeline.topology import cpulist_parse

KTHREADD_PID = 2
OUT_OF_SCOPE = "out of scope"
# Docker's default weight: a container whose cpu_shares reads 0 gets this.
DEFAULT_CPU_SHARES = 1024


class Protection(NamedTuple):
    """Why a process is protected, and whether it may still be placed on cores."""
    reason: str
    affinity_allowed: bool


def _compile(patterns: Iterable[str | re.Pattern[str]]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append(pattern)
            continue
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"protected pattern {pattern!r} is not a regular expression: "
                             f"{exc}") from None
    return tuple(compiled)


def protection(pid: int, stat: Stat | None, protected_patterns: Iterable[str | re.Pattern[str]] = (),
               own_pids: Iterable[int] = (), cmdline: str | None = None) -> Protection | None:
    """The protection that applies to a process, or None when it may be changed freely.

    ``stat`` is the process's parsed ``/proc/PID/stat`` (None when unknown: then only the
    pid-based rules apply). ``cmdline`` is matched with the name; leave it None when no
    pattern is configured or the caller has not read it.
    """
    if pid == 1:
        return Protection("protected: PID 1 (init)", False)
    if pid == KTHREADD_PID:
        return Protection("protected: kernel thread (kthreadd)", False)
    if stat is not None:
        if stat.kernel_thread or stat.ppid == KTHREADD_PID:
            return Protection(f"protected: kernel thread ({stat.comm})", False)
    name = stat.comm if stat is not None else ""
    for pattern in _compile(protected_patterns):
        if (name and pattern.search(name)) or (cmdline and pattern.search(cmdline)):
            return Protection(f"protected: matches {pattern.pattern!r}", False)
    if pid in set(own_pids):
        return Protection("protected: corelane's own process (affinity only)", True)
    return None


def is_protected(pid: int, stat: Stat | None, protected_patterns: Iterable[str | re.Pattern[str]],
                 own_pids: Iterable[int], cmdline: str | None = None) -> str | None:
    """The reason a process must not be niced, idled or stopped, or None."""
    found = protection(pid, stat, protected_patterns, own_pids, cmdline)
    return found.reason if found else None


# --- scope ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """Which processes and containers corelane may change. A process is in scope when
    ``everything`` is set or it matches any one of the pid set, the patterns (over name and
    command line) or the cgroup prefixes; a container when ``everything`` is set or its name
    or id matches one of ``containers``. An empty scope lets nothing be changed."""
    everything: bool = False
    pids: frozenset[int] = frozenset()
    patterns: tuple[str, ...] = ()
    cgroup_prefixes: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False,
                                                   compare=False)
    _containers: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False,
                                                     compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pids", frozenset(self.pids))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "cgroup_prefixes", tuple(self.cgroup_prefixes))
        object.__setattr__(self, "containers", tuple(self.containers))
        object.__setattr__(self, "_compiled", _compile(self.patterns))
        object.__setattr__(self, "_containers", _compile(self.containers))

    @classmethod
    def all(cls) -> Scope:
        return cls(everything=True)

    @classmethod
    def from_config(cls, value: Any) -> Scope:
        """``"all"`` (or None), or a mapping with ``pids``, ``patterns``, ``cgroups``,
        ``containers``."""
        if value is None or value == "all":
            return cls.all()
        if not isinstance(value, Mapping):
            raise ValueError(f"scope must be 'all' or a mapping with pids, patterns, cgroups, "
                             f"containers; got {value!r}")
        unknown = set(value) - {"pids", "patterns", "cgroups", "containers"}
        if unknown:
            raise ValueError(f"unknown scope keys {sorted(unknown)}: "
                             "expected pids, patterns, cgroups, containers")
        return cls(pids=frozenset(int(p) for p in value.get("pids") or ()),
                   patterns=tuple(value.get("patterns") or ()),
                   cgroup_prefixes=tuple(value.get("cgroups") or ()),
                   containers=tuple(value.get("containers") or ()))

    @property
    def needs_details(self) -> bool:
        """Whether ``allows`` needs the name, command line or cgroup (not just the pid)."""
        return not self.everything and bool(self._compiled or self.cgroup_prefixes)

    def allows(self, pid: int, name: str = "", cmdline: str = "", cgroup: str = "") -> bool:
        if self.everything or pid in self.pids:
            return True
        for pattern in self._compiled:
            if (name and pattern.search(name)) or (cmdline and pattern.search(cmdline)):
                return True
        return bool(cgroup) and any(within(cgroup, prefix) for prefix in self.cgroup_prefixes)


    def allows_container(self, container_id: str, name: str = "") -> bool:
        if self.everything:
            return True
        return any(p.search(name) or p.search(container_id) for p in self._containers)


# --- the guard the process primitives ask ----------------------------------------------------

@dataclass(frozen=True)
class Guard:
    """Protection and scope together, as the applier configures them."""
    protected_patterns: tuple[str, ...] = ()
    own_pids: frozenset[int] = frozenset()
    scope: Scope = field(default_factory=Scope.all)

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected_patterns", tuple(self.protected_patterns))
        # corelane's own interpreter is always its own process, whoever builds the guard
        object.__setattr__(self, "own_pids", frozenset(self.own_pids) | {os.getpid()})
        _compile(self.protected_patterns)          # a bad pattern fails here, not mid-apply

    def check(self, pid: int, stat: Stat, proc: str) -> Protection | None:
        """A Protection for a process that is protected or out of scope, else None."""
        needs_cmdline = bool(self.protected_patterns) or self.scope.needs_details
        cmdline = (procfs.read_cmdline(proc, pid) or "") if needs_cmdline else ""
        found = protection(pid, stat, self.protected_patterns, self.own_pids, cmdline)
        if found is not None:
            # corelane's own processes are placed whatever the scope: the scope guards other
            # people's work, and corelane running on a critical core defeats the point.
            return found
        cgroup = ""
        if self.scope.cgroup_prefixes and not self.scope.everything:
            cgroup = (procfs.read_cgroup(proc, pid) or ("", None))[0]
        if not self.scope.allows(pid, stat.comm, cmdline, cgroup):
            return Protection(OUT_OF_SCOPE, False)
        return found


# --- operator override ---------------------------------------------------------------------

def _same(field_name: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    if field_name in ("cpus", "cpuset"):
        try:
            return cpulist_parse(str(a)) == cpulist_parse(str(b))
        except ValueError:
            return False
    if field_name == "cpu_shares":
        # 0 means "the engine default", which is 1024
        return (int(a) or DEFAULT_CPU_SHARES) == (int(b) or DEFAULT_CPU_SHARES)
    return False


def detect_override(last_applied: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields someone else changed since corelane applied them: {field: (applied, now)}.

    Only fields corelane set (not None in ``last_applied``) count. An I/O level under the
    idle or none class, and a real-time priority under a normal policy, mean nothing and
    are not compared.
    """
    changed: dict[str, tuple[Any, Any]] = {}
    for name, applied in last_applied.items():
        if applied is None or name not in current:
            continue
        if name == "iolevel" and last_applied.get("ioclass") in ("idle", "none"):
            continue
        if name == "rt_priority" and last_applied.get("policy") not in ("fifo", "rr", None):
            continue
        if not isinstance(applied, (str, int, float, bool)):
            continue                                # per-thread detail and counts
        now = current[name]
        if not _same(name, applied, now):
            changed[name] = (applied, now)
    return changed


def override_reason(changed: Mapping[str, tuple[Any, Any]]) -> str:
    parts = ", ".join(f"{name} {was!r} -> {now!r}" for name, (was, now) in sorted(changed.items()))
    return f"changed by someone else: {parts}"
