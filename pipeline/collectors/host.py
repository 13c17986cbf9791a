"""The host collector: one ``HostSample`` per sweep, from psutil and sysfs (once per host, so
its cost does not matter the way the per-process sweep's does)."""
from __future__ import annotations

import time
from typing import Any, Callable

import psutil

from pipeline import cgroups, procfs, thermal
from pipeline.events import HostSample
from pipeline.hostpaths import LIVE, HostPaths
from pipeline.topology import Topology


def _total(t: Any) -> float:
    # Linux counts guest time inside user and nice already: do not count it twice.
    return sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _busy_percent(before: Any, after: Any) -> float:
    """Share of the time between two cpu_times readings that was not idle, 0..100."""
    total = _total(after) - _total(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0))
    if total <= 0:
        return 0.0
    return max(0.0, min(100.0, (total - idle) / total * 100.0))


class HostSampler:
    """Per-CPU use since the previous ``sample()`` (or since construction, for the first)."""

    def __init__(self, paths: HostPaths = LIVE,
                 clock: Callable[[], float] = time.monotonic, cgroup_root: str = "",
                 topology: Topology | None = None) -> None:
        """``cgroup_root`` is where corelane's tier groups are (their memory use is sampled);
        with ``topology``, each CPU's temperature is placed on it."""
        self._clock = clock
        self._sys_root = paths.sys_root
        self._topology = topology
        self._cgroup_root = cgroup_root
        self._layout = cgroups.read_layout(paths) if cgroup_root else None
        self._last_times = psutil.cpu_times(percpu=True)
        self._last_at = clock()
        self._boot = procfs.boot_time(paths.proc)
        self._proc = paths.proc

    def sample(self) -> HostSample:
        times = psutil.cpu_times(percpu=True)
        now = self._clock()
        before = self._last_times
        if len(before) != len(times):          # a CPU came or went: start over
            before = times
        percent = [_busy_percent(b, a) for b, a in zip(before, times)]
        interval = now - self._last_at
        self._last_times, self._last_at = times, now

        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        sensors = thermal.read_sensors(self._sys_root)
        return HostSample(
            cpu_percent=percent,
            cpu_freq_khz=self._frequencies(len(times)),
            load=tuple(psutil.getloadavg()),  # type: ignore[arg-type]
            mem_total_bytes=vm.total,
            mem_available_bytes=vm.available,
            swap_used_bytes=swap.used,
            temperatures_c={s.key: s.celsius for s in sensors},
            cpu_temperatures_c=(thermal.cpu_temperatures(sensors, self._topology)
                                if self._topology is not None and sensors else []),
            boot_time=self._boot,
            interval_s=interval,
            autogroup=procfs.autogroup_enabled(self._proc),
            pressure=procfs.read_pressure(self._proc),
            tier_memory_bytes=(cgroups.group_memory(self._layout, self._cgroup_root)
                               if self._layout is not None else {}),
            tier_pressure=(cgroups.group_pressure(self._layout, self._cgroup_root)
                           if self._layout is not None else {}),
        )

    @staticmethod
    def _frequencies(ncpu: int) -> list[float | None]:
        """Current kHz per CPU; None where the host does not say (VMs often do not)."""
        try:
            freqs = psutil.cpu_freq(percpu=True) or []
        except (OSError, NotImplementedError, AttributeError):
            freqs = []
        if len(freqs) == ncpu:
            return [f.current * 1000.0 if f.current else None for f in freqs]
        if len(freqs) == 1 and freqs[0].current:     # one figure for all CPUs
            return [freqs[0].current * 1000.0] * ncpu
        return [None] * ncpu
