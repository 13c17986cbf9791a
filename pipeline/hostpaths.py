"""Where this host's /proc and /sys are read from: the root-folder seam.

Live, both roots are ``/``. Tests and saved captures point them at a folder holding
``proc/...`` or ``sys/devices/...`` snapshots, and every reader of /proc and /sys takes its
paths from one ``HostPaths``, built from the settings (``collector.proc_root``,
``topology.sys_root``), so a snapshot reaches every reader.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostPaths:
    proc_root: str = "/"
    sys_root: str = "/"

    @property
    def proc(self) -> str:
        """The ``proc`` folder (``/proc`` live); a str, since the sweep joins it per file."""
        return os.path.join(self.proc_root, "proc")

    @property
    def is_live(self) -> bool:
        """True when /proc is this machine's own: some settings (the I/O priority) have no
        file in /proc and can only be asked of the live kernel."""
        return os.path.realpath(self.proc_root) == "/"

    @property
    def cpu_sysfs(self) -> Path:
        """``sys/devices/system/cpu`` under the sysfs root."""
        return Path(self.sys_root) / "sys" / "devices" / "system" / "cpu"

    def cpu_file(self, cpu: int, name: str) -> Path:
        """A file of one logical CPU, e.g. ``cpu_file(3, "power/pm_qos_resume_latency_us")``."""
        return self.cpu_sysfs / f"cpu{int(cpu)}" / name


LIVE = HostPaths()
