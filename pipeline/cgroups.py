"""Where this host's cgroup controllers are, and which cgroup a process is in.

A host may have cgroup v2 alone (``/sys/fs/cgroup``), v1 alone, or both: v1 hierarchies
for some controllers with a cgroup2 mount beside them holding the rest (``hybrid``). A
controller bound to a v1 hierarchy is not available in v2, so each controller is looked
up on its own: ``Layout.hierarchy("cpu")`` says where the CPU controller lives, whatever
the others do.

Everything is read through the root-folder seam: ``proc/self/mounts`` under the proc root
says what is mounted where, and the mount points are read under the sysfs root, so a saved
tree (``tests/data/cgroups/…``) stands in for a live one. Parsing is pure.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline import procfs
from pipeline.hostpaths import LIVE, HostPaths

# The controllers corelane writes limits with.
CPU, MEMORY = "cpu", "memory"
UNIFIED = ""                                   # /proc/PID/cgroup's key for the v2 line

V1_WEIGHT_DEFAULT = 1024                       # cpu.shares
V2_WEIGHT_DEFAULT = 100                        # cpu.weight
CFS_PERIOD_US = 100_000
# v1 writes "no limit" as the largest page-aligned value; anything this large is no limit
V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: v1 with its controllers, or the v2 one."""
    version: int                               # 1 | 2
    mount: str                                 # where it is read and written, seam applied
    controllers: frozenset[str] = frozenset()

    def folder(self, path: str) -> str:
        """The folder of cgroup ``path`` (as /proc/PID/cgroup names it) in this hierarchy."""
        return os.path.join(self.mount, path.lstrip("/"))


@dataclass(frozen=True)
class Layout:
    """The host's cgroup hierarchies, by controller."""
    hierarchies: tuple[Hierarchy, ...] = ()
    by_controller: Mapping[str, Hierarchy] = field(default_factory=dict)

    def hierarchy(self, controller: str) -> Hierarchy | None:
        return self.by_controller.get(controller)

    @property
    def description(self) -> str:
        """One line for a person: which controller is where."""
        if not self.by_controller:
            return "no cgroup controllers mounted"
        return ", ".join(f"{name} on v{h.version}" for name, h in sorted(self.by_controller.items()))


def parse_mounts(text: str, sys_root: str = "/",
                 v2_controllers: Mapping[str, str] | None = None) -> Layout:
    """The layout from a ``/proc/self/mounts`` text. ``v2_controllers`` maps a cgroup2
    mount point (as mounted) to its ``cgroup.controllers`` text; a v1 controller wins over
    v2, since a controller bound to v1 is not available in v2."""
    hierarchies: list[Hierarchy] = []
    by_controller: dict[str, Hierarchy] = {}
    unified: list[Hierarchy] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        _, mount, fstype, options = parts[:4]
        mount = mount.replace("\\040", " ")
        where = os.path.join(sys_root, mount.lstrip("/"))
        if fstype == "cgroup":
            names = frozenset(o for o in options.split(",")
                              if o not in ("rw", "ro") and "=" not in o
                              and o not in _MOUNT_FLAGS)
            if not names:
                continue                           # a named hierarchy (name=systemd)
            h = Hierarchy(1, where, names)
            hierarchies.append(h)
            for name in names:
                by_controller.setdefault(name, h)
        elif fstype == "cgroup2":
            listed = (v2_controllers or {}).get(mount, "")
            h = Hierarchy(2, where, frozenset(listed.split()))
            hierarchies.append(h)
            unified.append(h)
    for h in unified:
        for name in h.controllers:
            by_controller.setdefault(name, h)
    return Layout(tuple(hierarchies), by_controller)


_MOUNT_FLAGS = frozenset({"nosuid", "nodev", "noexec", "relatime", "noatime", "strictatime",
                          "nodiratime", "clone_children", "nsdelegate", "memory_recursiveprot",
                          "memory_localevents", "favordynmods", "noprefix", "cpuset_v2_mode",
                          "xattr"})


def read_layout(paths: HostPaths = LIVE) -> Layout:
    """The layout of the host ``paths`` points at."""
    text = read_text(os.path.join(paths.proc, "self", "mounts")) or ""
    v2: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            where = os.path.join(paths.sys_root, parts[1].lstrip("/"))
            v2[parts[1]] = read_text(os.path.join(where, "cgroup.controllers")) or ""
    return parse_mounts(text, paths.sys_root, v2)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as {controller: path}; the v2 line is under ``UNIFIED``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if not path:
            continue
        if hid == "0" and names == "":
            out[UNIFIED] = path
        for name in names.split(","):
            if name and not name.startswith("name="):
                out[name] = path
    return out


def process_cgroups(paths: HostPaths, pid: int) -> dict[str, str] | None:
    """The process's cgroup per controller, or None when it is gone."""
    text = read_text(os.path.join(paths.proc, str(pid), "cgroup"))
    return None if text is None else parse_proc_cgroup(text)


def within(path: str, prefix: str) -> bool:
    """Whether cgroup ``path`` is ``prefix`` or below it (``/a/b`` is within ``/a``, not
    within ``/a/bc``)."""
    prefix = "/" + prefix.strip("/")
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def cgroup_of(layout: Layout, cgroups: Mapping[str, str], controller: str) -> str | None:
    """The cgroup a process is in for ``controller`` (its v1 line, else its v2 one)."""
    h = layout.hierarchy(controller)
    if h is None:
        return None
    return cgroups.get(controller) if h.version == 1 else cgroups.get(UNIFIED)


# --- limits ----------------------------------------------------------------------------------

def shares_for_weight(weight: int) -> int:
    """A v2 ``cpu.weight`` (1–10000, 100 by default) as v1 ``cpu.shares`` (1024 by default)."""
    return max(2, min(262144, round(weight * V1_WEIGHT_DEFAULT / V2_WEIGHT_DEFAULT)))


def quota_us(cores: float, period_us: int = CFS_PERIOD_US) -> int:
    """``cores`` worth of CPU time per period, in µs (the kernel's minimum is 1000)."""
    return max(1000, round(cores * period_us))


def own_limits(h: Hierarchy, path: str, controller: str) -> str | None:
    """What limits cgroup ``path`` sets on ``controller`` itself, for a person, or None:
    a group with limits of its own is someone's managed group, never to be left."""
    folder = h.folder(path)
    found: list[str] = []

    def value(name: str) -> str | None:
        return read_text(os.path.join(folder, name))

    if controller == CPU:
        if h.version == 1:
            quota = value("cpu.cfs_quota_us")
            if quota is not None and quota.strip() not in ("-1", ""):
                found.append(f"cpu.cfs_quota_us {quota.strip()}")
            shares = value("cpu.shares")
            if shares is not None and shares.strip() not in (str(V1_WEIGHT_DEFAULT), ""):
                found.append(f"cpu.shares {shares.strip()}")
        else:
            cpu_max = value("cpu.max")
            if cpu_max is not None and cpu_max.split()[:1] not in (["max"], []):
                found.append(f"cpu.max {cpu_max.strip()}")
            weight = value("cpu.weight")
            if weight is not None and weight.strip() not in (str(V2_WEIGHT_DEFAULT), ""):
                found.append(f"cpu.weight {weight.strip()}")
    elif controller == MEMORY:
        names = (("memory.limit_in_bytes", "memory.soft_limit_in_bytes") if h.version == 1
                 else ("memory.max", "memory.high"))
        for name in names:
            got = (value(name) or "").strip()
            if got and got != "max" and not (got.isdigit() and int(got) >= V1_UNLIMITED):
                found.append(f"{name} {got}")
    return ", ".join(found) or None


def group_memory(layout: Layout, root: str) -> dict[str, int]:
    """Memory used (bytes) by each group directly under ``root`` (corelane's tier groups)."""
    h = layout.hierarchy(MEMORY)
    if h is None:
        return {}
    base = h.folder("/" + root.strip("/"))
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return {}
    usage = "memory.usage_in_bytes" if h.version == 1 else "memory.current"
    out = {}
    for name in names:
        text = read_text(os.path.join(base, name, usage))
        if text is not None and text.strip().isdigit():
            out[name] = int(text)
    return out


def group_pressure(layout: Layout, root: str) -> dict[str, float]:
    """The pressure stall figures (avg10, %) of each group directly under ``root`` in a
    cgroup v2 hierarchy, keyed ``<group>.<resource>_<some|full>``: only v2 keeps pressure
    per group, and only where the kernel has PSI on."""
    out: dict[str, float] = {}
    for h in layout.hierarchies:
        if h.version != 2:
            continue
        base = h.folder("/" + root.strip("/"))
        try:
            names = sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n)))
        except OSError:
            continue
        for name in names:
            figures = procfs.read_pressure_files(
                lambda resource: os.path.join(base, name, f"{resource}.pressure"))
            out.update({f"{name}.{key}": value for key, value in figures.items()})
    return out


def read_text(path: str) -> str | None:
    """A cgroup or /proc file's text, or None when it cannot be read (gone, no permission)."""
    data = procfs.read_bytes(path)
    return None if data is None else data.decode("utf-8", "replace")


__all__ = ["CPU", "CFS_PERIOD_US", "Hierarchy", "Layout", "MEMORY", "UNIFIED", "cgroup_of", "group_memory",
           "group_pressure",
           "own_limits", "parse_mounts", "within", "parse_proc_cgroup", "process_cgroups", "quota_us",
           "read_layout", "read_text", "shares_for_weight"]
