#!/usr/bin/env python3
"""Capture the topology-relevant part of a machine's sysfs into a .tar.xz.

The archive unpacks to ``<name>/sys/devices/...`` and reads with
``pipeline.topology.read_topology("<unpacked>/<name>")``, like the archives in
tests/data/sysfs. A plain ``tar`` of /sys does not work: sysfs files report a size of 4096
(or 0) whatever they hold, so each file's text is read and written out as a regular file.

    python scripts/capture_sysfs.py                      # this machine, into tests/data/sysfs
    python scripts/capture_sysfs.py --root /tmp/x/desk   # re-capture a saved tree
"""
from __future__ import annotations

import argparse
import re
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "sysfs"

# Paths relative to <root>/sys/devices; a glob per entry, only regular (text) files kept.
_CPU_TOP = ["online", "present", "possible", "offline", "isolated", "nohz_full", "kernel_max",
            "smt/active", "smt/control"]
_PER_CPU = ["online", "cpu_capacity", "topology/*", "cache/index*/level", "cache/index*/type",
            "cache/index*/size", "cache/index*/shared_cpu_list", "cache/index*/id",
            "cache/index*/coherency_line_size", "cache/index*/ways_of_associativity",
            "cache/index*/number_of_sets",
            "cpufreq/cpuinfo_max_freq", "cpufreq/cpuinfo_min_freq", "cpufreq/base_frequency",
            "cpufreq/scaling_driver", "cpufreq/related_cpus",
            "acpi_cppc/highest_perf", "acpi_cppc/nominal_perf", "acpi_cppc/lowest_perf"]
_NODE_TOP = ["online", "possible", "has_cpu", "has_memory", "has_normal_memory"]
_PER_NODE = ["cpulist", "distance"]


def _patterns() -> list[str]:
    pats = [f"system/cpu/{p}" for p in _CPU_TOP]
    pats += [f"system/cpu/cpu[0-9]*/{p}" for p in _PER_CPU]
    pats += [f"system/node/{p}" for p in _NODE_TOP]
    pats += [f"system/node/node[0-9]*/{p}" for p in _PER_NODE]
    pats += ["cpu_core/cpus", "cpu_atom/cpus"]
    return pats


def _ncpus(devices: Path) -> int:
    return len([p for p in (devices / "system" / "cpu").glob("cpu[0-9]*")
                if re.fullmatch(r"cpu\d+", p.name)])


def copy_tree(root: Path, dest: Path) -> int:
    """Copy the topology files under ``root/sys/devices`` to ``dest/sys/devices``; returns a count."""
    devices = root / "sys" / "devices"
    if not (devices / "system" / "cpu").is_dir():
        raise SystemExit(f"capture_sysfs: {devices / 'system' / 'cpu'} is not a folder; "
                         f"--root must hold sys/devices/system/cpu")
    count = 0
    for pat in _patterns():
        for src in sorted(devices.glob(pat)):
            # a cpuN/cpufreq link to ../cpufreq/policyN is followed: the reader looks for cpuN/cpufreq/*
            if not src.is_file():
                continue
            try:
                text = src.read_text()
            except (OSError, UnicodeDecodeError):
                continue          # write-only or unreadable without root: not topology anyway
            out = dest / "sys" / "devices" / src.relative_to(devices)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            count += 1
    return count


def pack(folder: Path, archive: Path) -> None:
    """A reproducible tar.xz of ``folder`` (sorted names, fixed owner and time)."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        return info

    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz") as tar:
        paths = [folder, *sorted(folder.rglob("*"))]
        for p in paths:
            tar.add(p, arcname=str(p.relative_to(folder.parent)), recursive=False, filter=clean)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/", help="folder holding sys/devices (default: /)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the archive")
    ap.add_argument("--name", help="archive name without .tar.xz (default: this-machine-<N>cpu)")
    args = ap.parse_args(argv)

    root = Path(args.root)
    name = args.name or f"this-machine-{_ncpus(root / 'sys' / 'devices')}cpu"
    archive = Path(args.out) / f"{name}.tar.xz"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        n = copy_tree(root, folder)
        pack(folder, archive)
    print(f"{archive}: {n} files from {root / 'sys' / 'devices'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
