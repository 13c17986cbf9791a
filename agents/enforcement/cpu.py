"""A CPU's idle-state limit (its PM QoS resume latency), read and written through sysfs.

``/sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us`` caps, by exit latency, the
idle states the cpuidle governor may pick on that CPU. A core that halts when idle pays the
wake-up (and, in a VM, an exit to the hypervisor) on every wake-up of the task it serves;
one limited to polling does not. The file's text is inverted for history's sake: ``0``
means no limit, ``n/a`` means no exit latency at all (the CPU polls when idle).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agents.enforcement.process import ALREADY, NOT_PERMITTED, ApplyResult
from pipeline.hostpaths import LIVE, HostPaths

NOT_SUPPORTED = "no idle-state limit on this CPU (no cpuidle PM QoS in sysfs)"
FIELD = "idle_limit"


def limit_path(cpu: int, paths: HostPaths = LIVE) -> Path:
    return paths.cpu_file(cpu, "power/pm_qos_resume_latency_us")


def limit_text(latency_us: int) -> str:
    """The file's text for an exit-latency limit in µs (0: poll, never halt)."""
    if latency_us < 0:
        raise ValueError(f"an idle exit-latency limit is 0 µs or more, not {latency_us}")
    return "n/a" if latency_us == 0 else str(latency_us)


def read_limit(cpu: int, paths: HostPaths = LIVE) -> str | None:
    """The limit as the file says it, or None where the CPU has no such file."""
    try:
        return limit_path(cpu, paths).read_text().strip()
    except OSError:
        return None


def apply_limit(cpu: int, text: str, *, last_applied: Mapping[str, Any] | None = None,
                before_change: Callable[[dict[str, Any]], None] | None = None,
                paths: HostPaths = LIVE) -> ApplyResult:
    """Write the limit ``text`` (``limit_text``) for ``cpu`` and read it back. Skipped where
    the CPU has no limit file, or where the limit differs from ``last_applied`` (someone
    else changed it)."""
    def result(outcome: str, reason: str = "", before: str | None = None,
               after: str | None = None, changes: int = 0) -> ApplyResult:
        return ApplyResult("cpu", outcome, reason,
                           {"cpu": cpu, FIELD: before} if before is not None else {"cpu": cpu},
                           {"cpu": cpu, FIELD: after} if after is not None else {"cpu": cpu},
                           changes=changes)

    before = read_limit(cpu, paths)
    if before is None:
        return result("skipped", NOT_SUPPORTED)
    if last_applied and last_applied.get(FIELD) not in (None, before):
        return result("skipped", f"changed by someone else: {FIELD} "
                                 f"{last_applied.get(FIELD)!r} -> {before!r}", before, before)
    if before == text:
        return result("applied", ALREADY, before, before)
    if before_change is not None:
        try:
            before_change({FIELD: before})
        except Exception as exc:                # whatever the recorder raised: write nothing
            return result("failed", "the original setting could not be recorded, so nothing "
                                    f"was changed: {exc}", before, before)
    try:
        limit_path(cpu, paths).write_text(text)
    except PermissionError:
        return result("skipped", NOT_PERMITTED, before, before)
    except OSError as exc:
        return result("failed", f"writing {text!r} was refused: {exc}", before, before)
    after = read_limit(cpu, paths)
    if after != text:
        return result("failed", f"read back {after!r}, wanted {text!r}", before, after, 1)
    return result("applied", "", before, after, 1)
