"""Temperatures of the host's cores and packages, read from sysfs through the root seam.

Two kernel interfaces say how hot a CPU is:

- hwmon (``sys/class/hwmon/hwmon*/``): a chip ``name`` and ``temp<N>_input`` in
  millidegrees with an optional ``temp<N>_label``. Intel's ``coretemp`` has one chip per
  package, a "Package id P" sensor and one "Core C" sensor per core (C is the kernel's
  ``core_id`` within that package); AMD's ``k10temp`` has one figure (Tctl/Tdie) for its
  package.
- thermal zones (``sys/class/thermal/thermal_zone*/``): a ``type`` and ``temp`` in
  millidegrees; on ARM they are often the only CPU sensors (``cpu-thermal``,
  ``soc_thermal``, per cluster on some phones).

``cpu_temperatures`` turns what was read into one figure per logical CPU: its core's own
sensor, else its package's, else the hottest CPU-wide zone, else None.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import procfs
from pipeline.topology import Topology

# Readings outside this range are a sensor's error codes, not temperatures.
PLAUSIBLE_C = (-40.0, 150.0)
# Thermal-zone types that measure the CPUs as a whole.
CPU_ZONE = re.compile(r"cpu|pkg|soc|core|tctl|x86", re.IGNORECASE)
PACKAGE_CHIPS = ("k10temp", "zenpower")
_CORE_LABEL = re.compile(r"^Core\s+(\d+)$")
_PACKAGE_LABEL = re.compile(r"^Package id\s+(\d+)$")


@dataclass(frozen=True)
class Sensor:
    """One temperature: where it is read (``chip``: a hwmon chip's name, or
    ``thermal_zone``), its label, and what it measures (a core, a package, or the CPUs as
    a whole when both are None)."""
    chip: str
    label: str
    celsius: float
    package: int | None = None
    core_id: int | None = None
    cpu_wide: bool = False                   # a zone or chip for the CPUs, with no finer place

    @property
    def key(self) -> str:
        """The sensor's name in a host sample's ``temperatures_c``: a per-package chip's
        name carries its package, since every package's chip has a "Core 0"."""
        chip = self.chip if self.package is None else f"{self.chip}.{self.package}"
        return f"{chip}/{self.label}"


def _text(path: Path) -> str:
    """A sysfs file's text, "" where it cannot be read (procfs's reader: read every sweep)."""
    data = procfs.read_bytes(str(path))
    return "" if data is None else data.decode("utf-8", "replace").strip()


def _millidegrees(path: Path) -> float | None:
    try:
        value = int(_text(path)) / 1000.0
    except ValueError:
        return None
    return value if PLAUSIBLE_C[0] <= value <= PLAUSIBLE_C[1] else None


def _device_index(hwmon: Path) -> int | None:
    """The package a per-package chip belongs to, from its device's name (coretemp.1)."""
    tail = os.path.basename(os.path.realpath(hwmon / "device"))
    number = tail.rpartition(".")[2]
    return int(number) if number.isdigit() else None


def _hwmon_sensors(hwmon: Path) -> list[Sensor]:
    chip = _text(hwmon / "name") or hwmon.name
    readings: list[tuple[str, float]] = []
    for entry in sorted(hwmon.glob("temp*_input")):
        celsius = _millidegrees(entry)
        if celsius is None:
            continue
        stem = entry.name[:-len("_input")]
        readings.append((_text(hwmon / f"{stem}_label") or stem, celsius))
    package = next((int(m.group(1)) for label, _ in readings
                    if (m := _PACKAGE_LABEL.match(label))), None)
    if package is None:
        package = _device_index(hwmon)
    out = []
    for label, celsius in readings:
        core = _CORE_LABEL.match(label)
        if chip == "coretemp":
            out.append(Sensor(chip, label, celsius, package=package if package is not None else 0,
                              core_id=int(core.group(1)) if core else None))
        elif chip in PACKAGE_CHIPS:
            out.append(Sensor(chip, label, celsius, package=package, cpu_wide=package is None))
        else:
            out.append(Sensor(chip, label, celsius, cpu_wide=bool(CPU_ZONE.search(chip))))
    return out


def read_sensors(sys_root: str | os.PathLike[str] = "/") -> list[Sensor]:
    """Every temperature the host's hwmon chips and thermal zones give, in a stable order;
    none where it has no sensors (most VMs)."""
    root = Path(sys_root) / "sys" / "class"
    sensors: list[Sensor] = []
    for hwmon in sorted((root / "hwmon").glob("hwmon*"), key=lambda p: p.name):
        sensors += _hwmon_sensors(hwmon)
    for zone in sorted((root / "thermal").glob("thermal_zone*"), key=lambda p: p.name):
        celsius = _millidegrees(zone / "temp")
        if celsius is None:
            continue
        kind = _text(zone / "type") or zone.name
        sensors.append(Sensor("thermal_zone", kind, celsius, cpu_wide=bool(CPU_ZONE.search(kind))))
    return sensors


def cpu_temperatures(sensors: Sequence[Sensor], topology: Topology) -> list[float | None]:
    """One figure per logical CPU, in ``topology.cpu_ids`` order: its core's sensor, else
    its package's, else the hottest sensor for the CPUs as a whole, else None."""
    by_core = {(s.package, s.core_id): s.celsius for s in sensors if s.core_id is not None}
    by_package: dict[int, float] = {}
    for s in sensors:
        if s.package is not None and s.core_id is None:
            by_package[s.package] = max(s.celsius, by_package.get(s.package, s.celsius))
    wide = [s.celsius for s in sensors if s.cpu_wide]
    fallback = max(wide) if wide else None
    out: list[float | None] = []
    for cpu_id in topology.cpu_ids:
        cpu = topology.cpu(cpu_id)
        core = by_core.get((cpu.package, cpu.core_id))
        out.append(core if core is not None else by_package.get(cpu.package, fallback))
    return out
