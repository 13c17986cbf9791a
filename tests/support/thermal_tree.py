"""Simulated temperature sensors in a sysfs tree, laid out as the kernel lays them out:
hwmon chips (``coretemp`` per package, with "Package id P" and "Core C" sensors) and
thermal zones, in millidegrees. Rewriting a tree is how a test heats or cools a core."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def _write(folder: Path, files: Mapping[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n")


def write_coretemp(root: Path, packages: Mapping[int, float],
                   cores: Mapping[tuple[int, int], float], chip_index: int = 0) -> None:
    """One coretemp chip per package under ``root/sys/class/hwmon``: the package's figure
    and each (package, core_id)'s."""
    for n, (package, celsius) in enumerate(sorted(packages.items())):
        files = {"name": "coretemp", "temp1_input": str(int(celsius * 1000)),
                 "temp1_label": f"Package id {package}"}
        own = sorted((core, c) for (p, core), c in cores.items() if p == package)
        for i, (core, c) in enumerate(own, start=2):
            files[f"temp{i}_input"] = str(int(c * 1000))
            files[f"temp{i}_label"] = f"Core {core}"
        _write(root / "sys" / "class" / "hwmon" / f"hwmon{chip_index + n}", files)


def write_zone(root: Path, index: int, kind: str, celsius: float) -> None:
    """One thermal zone under ``root/sys/class/thermal``."""
    _write(root / "sys" / "class" / "thermal" / f"thermal_zone{index}",
           {"type": kind, "temp": str(int(celsius * 1000))})
