"""CPU topology: which logical CPUs exist, how they group into cores, packages and NUMA
nodes, which are performance (P) and which efficiency (E) cores, and how fast each one is.

The model (``Cpu``, ``Cache``, ``Topology``) is pure data. Only three functions touch the
file system: ``read_topology`` (a sysfs tree under any root folder, so saved captures of
other machines read exactly like the live ``/sys``), ``load_profile`` and ``list_profiles``
(named machines in ``config/profiles/*.yml``).

Core types, in order of trust:

1. ``/sys/devices/cpu_core/cpus`` and ``/sys/devices/cpu_atom/cpus`` (Intel hybrid): P and E.
2. ``cpu_capacity`` (ARM big.LITTLE/DynamIQ): the kernel's own 1024-scale figure. Distinct
   capacities form tiers; the split goes into the largest relative gap between adjacent
   tiers, so the top tier is always P, the bottom tier always E, and a middle tier joins the
   side it is closer to. On the Pixel 6 (1024/820/280) the 820 cores are far closer to the
   1024 ones than to the 280 ones, so P = 1024 and 820 (4 CPUs), E = 280 (4 CPUs). Tiers
   within 15% of each other are not treated as hybrid: such differences come from binning,
   not from different core designs.
3. Otherwise no core type (``None``): frequency alone does not tell a core design apart
   (Intel "favoured cores" differ by a few hundred MHz on identical cores).

Capacity is ``cpu_capacity`` where the kernel gives it, else the CPU's maximum frequency
relative to the fastest CPU (1024 = fastest), else 1024.

Profiles (``config/profiles/<name>.yml``) describe a machine as groups of CPUs that share
one core type, capacity and frequency; CPU numbers, core indexes and SMT siblings follow
from the group order::

    name: example                 # optional, defaults to the file name
    description: free text        # optional
    source: where the figures come from   # optional
    numa_nodes: [0, 1]            # optional: memory-only nodes the groups don't name
    groups:
      - cpus: 0-7                 # a cpulist; groups must not overlap
        core_type: P              # P, E or null (default null)
        capacity: 1024            # 1024-scale; null = from max_freq_khz relative to the
                                  #   fastest group, or 1024 where that is unknown too
        max_freq_khz: 4800000     # null = unknown
        threads_per_core: 2       # consecutive CPUs form one core: (0,1), (2,3), ...
        package: 0                # default 0
        node: 0                   # default 0
        caches:                   # optional
          - {level: 2, size_kb: 2048, share: 2}   # each 2 consecutive CPUs share one
          - {level: 3, size_kb: 24576}            # share defaults to the whole group
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

CAPACITY_SCALE = 1024
# Capacity tiers closer than this ratio count as one core design (see module docstring).
_HYBRID_MIN_RATIO = 1.15
_CORE_TYPES = ("P", "E")


class TopologyError(Exception):
    """The topology could not be read or a profile is malformed; the message says where."""


# --- cpulists ------------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def cpulist_parse(text: str) -> list[int]:
    """Parse the kernel's cpulist format ("0-3,8,10-11") into sorted, unique CPU ids.

    An empty string (a memory-only NUMA node, no isolated CPUs) gives an empty list.
    Ranges may come in any order: Intel's cpu_core/cpu_atom lists are not sorted.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        m = _RANGE.match(part)
        if not m:
            raise ValueError(f"not a cpulist: {text.strip()!r} (bad part {part!r}; expected e.g. '0-3,8')")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"not a cpulist: {text.strip()!r} (range {part!r} runs backwards)")
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def cpulist_format(cpus: Iterable[int]) -> str:
    """Format CPU ids as the kernel does: sorted ranges, "0-3,8" (two neighbours are "0-1")."""
    # A plan formats its few pools' CPU sets once per process in it (200 per host at 1 Hz
    # for a fleet's worker): the same handful of sets, so each is formatted once.
    return _cpulist_format(cpus if isinstance(cpus, (tuple, frozenset)) else tuple(cpus))


@lru_cache(maxsize=4096)
def _cpulist_format(cpus: tuple[int, ...] | frozenset[int]) -> str:
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# --- model ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cache:
    """One cache as seen from one CPU; CPUs with the same level and shared_cpus share it."""
    level: int
    type: str                        # "Data", "Instruction" or "Unified"
    size_kb: int | None
    shared_cpus: tuple[int, ...]
    id: int | None = None            # the kernel's id within the level, where it gives one

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "type": self.type, "size_kb": self.size_kb,
                "shared_cpus": list(self.shared_cpus), "id": self.id}


@dataclass(frozen=True)
class Cpu:
    """One logical CPU."""
    cpu: int
    core: int                        # global core index, unique across packages
    package: int = 0
    node: int = 0
    core_type: str | None = None     # "P", "E" or None (not a hybrid machine)
    capacity: int = CAPACITY_SCALE   # 1024 = the fastest CPU of the machine
    max_freq_khz: int | None = None
    smt_siblings: tuple[int, ...] = ()   # the other hardware threads of this core
    caches: tuple[Cache, ...] = ()
    core_id: int | None = None       # the kernel's core_id: unique only within a package
    die: int = 0
    cluster: int | None = None

    @property
    def threads(self) -> tuple[int, ...]:
        """All hardware threads of this CPU's core, itself included."""
        return tuple(sorted((self.cpu, *self.smt_siblings)))

    def cache(self, level: int) -> Cache | None:
        """The unified (or else data) cache at ``level``, None if unknown."""
        found = [c for c in self.caches if c.level == level and c.type != "Instruction"]
        found.sort(key=lambda c: c.type != "Unified")
        return found[0] if found else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu, "core": self.core, "core_id": self.core_id,
            "package": self.package, "die": self.die, "cluster": self.cluster,
            "node": self.node, "core_type": self.core_type, "capacity": self.capacity,
            "max_freq_khz": self.max_freq_khz, "smt_siblings": list(self.smt_siblings),
            "caches": [c.to_dict() for c in self.caches],
        }


@dataclass(frozen=True)
class Topology:
    """The online CPUs of one machine (or profile), sorted by id, plus where they came from."""
    cpus: tuple[Cpu, ...]
    source: str = ""
    numa_nodes: tuple[int, ...] = ()     # every NUMA node, memory-only ones included
    offline: tuple[int, ...] = ()        # present but not online
    isolated: tuple[int, ...] = ()       # isolcpus= on the kernel command line

    def __post_init__(self) -> None:
        ids = [c.cpu for c in self.cpus]
        if len(set(ids)) != len(ids):
            raise TopologyError(f"{self.source or 'topology'}: a CPU id appears twice in {ids}")
        if ids != sorted(ids):
            object.__setattr__(self, "cpus", tuple(sorted(self.cpus, key=lambda c: c.cpu)))
        for c in self.cpus:
            if c.core_type not in (None, *_CORE_TYPES):
                raise TopologyError(f"{self.source or 'topology'}: cpu {c.cpu} has core type "
                                    f"{c.core_type!r}; expected 'P', 'E' or None")

    # cached_property writes the instance __dict__ directly, which a frozen dataclass allows
    @cached_property
    def _by_id(self) -> dict[int, Cpu]:
        return {c.cpu: c for c in self.cpus}

    def cpu(self, cpu: int) -> Cpu:
        try:
            return self._by_id[cpu]
        except KeyError:
            raise KeyError(f"cpu {cpu} is not online here (online: {cpulist_format(self.cpu_ids)})") from None

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        """Online CPU ids."""
        return tuple(c.cpu for c in self.cpus)

    def online_cpus(self) -> list[int]:
        return list(self.cpu_ids)

    @cached_property
    def cores(self) -> dict[int, tuple[int, ...]]:
        """Global core index -> its CPUs."""
        out: dict[int, list[int]] = {}
        for c in self.cpus:
            out.setdefault(c.core, []).append(c.cpu)
        return {k: tuple(v) for k, v in sorted(out.items())}

    def cores_of(self, cpus: Iterable[int]) -> set[int]:
        """The global indexes of the cores these CPUs are on (CPUs it lacks left out)."""
        ids = self._by_id
        return {ids[c].core for c in cpus if c in ids}

    @property
    def packages(self) -> tuple[int, ...]:
        return tuple(sorted({c.package for c in self.cpus}))

    @property
    def nodes(self) -> tuple[int, ...]:
        """Every NUMA node, including nodes that have memory but no CPUs."""
        return tuple(sorted({c.node for c in self.cpus} | set(self.numa_nodes)))

    @property
    def p_cpus(self) -> tuple[int, ...]:
        return tuple(c.cpu for c in self.cpus if c.core_type == "P")

    @property
    def e_cpus(self) -> tuple[int, ...]:
        return tuple(c.cpu for c in self.cpus if c.core_type == "E")

    @property
    def is_hybrid(self) -> bool:
        return bool(self.p_cpus) and bool(self.e_cpus)

    @property
    def has_smt(self) -> bool:
        return any(c.smt_siblings for c in self.cpus)

    @property
    def threads_per_core(self) -> int:
        return max((len(v) for v in self.cores.values()), default=0)

    def siblings(self, cpu: int) -> tuple[int, ...]:
        """The other hardware threads on ``cpu``'s core (empty without SMT)."""
        return self.cpu(cpu).smt_siblings

    def core_cpus(self, core: int) -> tuple[int, ...]:
        return self.cores.get(core, ())

    def node_cpus(self, node: int) -> tuple[int, ...]:
        return tuple(c.cpu for c in self.cpus if c.node == node)

    def package_cpus(self, package: int) -> tuple[int, ...]:
        return tuple(c.cpu for c in self.cpus if c.package == package)

    def cores_of_type(self, core_type: str | None) -> tuple[int, ...]:
        """Global core indexes whose CPUs have ``core_type``."""
        return tuple(k for k, cpus in self.cores.items() if self.cpu(cpus[0]).core_type == core_type)

    def cache_groups(self, level: int) -> list[tuple[int, ...]]:
        """Groups of online CPUs sharing one cache of ``level`` (e.g. 3: one group per LLC)."""
        groups: set[tuple[int, ...]] = set()
        online = set(self.cpu_ids)
        for c in self.cpus:
            cache = c.cache(level)
            if cache is not None:
                groups.add(tuple(x for x in cache.shared_cpus if x in online) or (c.cpu,))
        return sorted(groups)

    def summary(self) -> dict[str, Any]:
        return {
            "cpus": len(self.cpus),
            "cores": len(self.cores),
            "packages": len(self.packages),
            "nodes": len(self.nodes),
            "p_cores": len(self.cores_of_type("P")),
            "e_cores": len(self.cores_of_type("E")),
            "p_cpus": len(self.p_cpus),
            "e_cpus": len(self.e_cpus),
            "hybrid": self.is_hybrid,
            "smt": self.has_smt,
            "threads_per_core": self.threads_per_core,
            "online": cpulist_format(self.cpu_ids),
            "node_list": cpulist_format(self.nodes),
            "p_cpu_list": cpulist_format(self.p_cpus),
            "e_cpu_list": cpulist_format(self.e_cpus),
            "offline": cpulist_format(self.offline),
            "isolated": cpulist_format(self.isolated),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``corelane topology --json`` shape: ``{"source", "cpus": [...], "summary": {...}}``."""
        return {"source": self.source,
                "cpus": [c.to_dict() for c in self.cpus],
                "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """The inverse of ``to_dict`` (e.g. a topology carried in an event)."""
        cpus = []
        for d in data["cpus"]:
            caches = tuple(Cache(level=k["level"], type=k["type"], size_kb=k.get("size_kb"),
                                 shared_cpus=tuple(k.get("shared_cpus", ())), id=k.get("id"))
                           for k in d.get("caches", ()))
            cpus.append(Cpu(cpu=d["cpu"], core=d["core"], package=d.get("package", 0),
                            node=d.get("node", 0), core_type=d.get("core_type"),
                            capacity=d.get("capacity", CAPACITY_SCALE),
                            max_freq_khz=d.get("max_freq_khz"),
                            smt_siblings=tuple(d.get("smt_siblings", ())), caches=caches,
                            core_id=d.get("core_id"), die=d.get("die", 0),
                            cluster=d.get("cluster")))
        summary = data.get("summary", {})
        return cls(cpus=tuple(cpus), source=data.get("source", ""),
                   numa_nodes=tuple(cpulist_parse(summary.get("node_list", ""))),
                   offline=tuple(cpulist_parse(summary.get("offline", ""))),
                   isolated=tuple(cpulist_parse(summary.get("isolated", ""))))


# --- pure derivations shared by the sysfs reader and profiles ------------------------------

def capacity_core_types(capacities: Mapping[int, int]) -> dict[int, str | None]:
    """P/E per CPU from its capacity: split at the largest ratio between adjacent tiers.

    One tier, or tiers all within 15% of each other, is not hybrid: every CPU gets None.
    """
    tiers = sorted({v for v in capacities.values() if v > 0}, reverse=True)
    if len(tiers) < 2:
        return {cpu: None for cpu in capacities}
    ratios = [tiers[i] / tiers[i + 1] for i in range(len(tiers) - 1)]
    best = max(range(len(ratios)), key=lambda i: ratios[i])
    if ratios[best] < _HYBRID_MIN_RATIO:
        return {cpu: None for cpu in capacities}
    threshold = tiers[best]        # this tier and every faster one are P
    return {cpu: ("P" if cap >= threshold else "E") for cpu, cap in capacities.items()}


def derived_capacity(max_freq_khz: int | None, fastest_khz: int | None) -> int:
    """A 1024-scale capacity from relative maximum frequency, 1024 where unknown."""
    if not max_freq_khz or not fastest_khz:
        return CAPACITY_SCALE
    return max(1, min(CAPACITY_SCALE, round(CAPACITY_SCALE * max_freq_khz / fastest_khz)))


def _global_core_index(keys: Mapping[int, Any]) -> dict[int, int]:
    """Number cores 0..n-1 in order of their lowest CPU; ``keys`` maps cpu -> core identity."""
    first: dict[Any, int] = {}
    for cpu in sorted(keys):
        first.setdefault(keys[cpu], cpu)
    order = {k: i for i, k in enumerate(sorted(first, key=first.__getitem__))}
    return {cpu: order[k] for cpu, k in keys.items()}


# --- sysfs reader --------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_list(path: Path) -> list[int] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return cpulist_parse(text)
    except ValueError:
        return None


def _parse_size_kb(text: str | None) -> int | None:
    if not text:
        return None
    m = re.match(r"^(\d+)\s*([KMG]?)B?$", text.strip(), re.IGNORECASE)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).upper()
    if unit == "":
        return n // 1024          # plain bytes
    return n * {"K": 1, "M": 1024, "G": 1024 * 1024}[unit]


def _read_caches(cpu_dir: Path) -> tuple[Cache, ...]:
    caches = []
    for index in sorted(cpu_dir.glob("cache/index*"), key=lambda p: p.name):
        level = _read_int(index / "level")
        if level is None:
            continue
        shared = _read_list(index / "shared_cpu_list")
        caches.append(Cache(level=level, type=_read(index / "type") or "Unified",
                            size_kb=_parse_size_kb(_read(index / "size")),
                            shared_cpus=tuple(shared) if shared else (int(cpu_dir.name[3:]),),
                            id=_read_int(index / "id")))
    return tuple(caches)


def _cpu_dirs(cpu_root: Path) -> list[int]:
    return sorted(int(p.name[3:]) for p in cpu_root.glob("cpu[0-9]*")
                  if p.is_dir() and p.name[3:].isdigit())


def read_online_cpus(sys_root: str | Path = "/") -> list[int]:
    """The CPUs online now, as ``<sys_root>/sys/devices/system/cpu/online`` lists them."""
    path = Path(sys_root) / "sys" / "devices" / "system" / "cpu" / "online"
    online = _read_list(path)
    if not online:
        raise TopologyError(f"cannot read the online CPUs from {path}")
    return online


def read_topology(sys_root: str | Path = "/") -> Topology:
    """Read the CPU topology from ``<sys_root>/sys/devices/...`` (``/`` for this machine)."""
    root = Path(sys_root)
    cpu_root = root / "sys" / "devices" / "system" / "cpu"
    node_root = root / "sys" / "devices" / "system" / "node"
    if not cpu_root.is_dir():
        hint = ""
        # common slips: pointing at .../sys itself, or at the folder an archive was unpacked into
        if (root / "devices" / "system" / "cpu").is_dir():
            hint = f"; {root} looks like the sys folder itself, try its parent {root.parent}"
        elif root.is_dir():
            inner = sorted(str(p) for p in root.iterdir()
                           if (p / "sys" / "devices" / "system" / "cpu").is_dir())
            if inner:
                hint = f"; it holds saved trees one level down, e.g. {', '.join(inner[:3])}"
        raise TopologyError(f"no CPU information: {cpu_root} is not a folder "
                            f"(a saved sysfs tree must hold sys/devices/system/cpu under {root}){hint}")

    # online, else present, else whatever cpuN folders exist (captures may lack either file)
    online = _read_list(cpu_root / "online")
    if not online:
        online = _read_list(cpu_root / "present")
    if not online:
        online = _cpu_dirs(cpu_root)
    if not online:
        raise TopologyError(f"no CPU information in {cpu_root}: no 'online' or 'present' "
                            f"file and no cpuN folders")
    online_set = set(online)
    present = _read_list(cpu_root / "present") or online
    offline = tuple(c for c in present if c not in online_set)
    isolated = tuple(c for c in (_read_list(cpu_root / "isolated") or []) if c in online_set)

    # NUMA: one node 0 when the kernel (or the capture) has no node folder
    node_of: dict[int, int] = {}
    numa_nodes: list[int] = []
    for nd in sorted(node_root.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        if not nd.name[4:].isdigit():
            continue
        n = int(nd.name[4:])
        numa_nodes.append(n)
        for c in _read_list(nd / "cpulist") or []:
            node_of[c] = n
    if not numa_nodes:
        numa_nodes = [0]

    raw: dict[int, dict[str, Any]] = {}
    core_keys: dict[int, Any] = {}
    for n in online:
        d = cpu_root / f"cpu{n}"
        t = d / "topology"
        package = _read_int(t / "physical_package_id")
        package = package if package is not None and package >= 0 else 0   # -1 on some ARM boards
        die = _read_int(t / "die_id")
        die = die if die is not None and die >= 0 else 0
        core_id = _read_int(t / "core_id")
        threads = _read_list(t / "core_cpus_list") or _read_list(t / "thread_siblings_list")
        node = node_of.get(n)
        if node is None:
            # a cpuN/nodeK entry names the node when node/nodeK/cpulist is missing
            links = [p.name for p in d.glob("node[0-9]*")]
            node = int(links[0][4:]) if links else numa_nodes[0]
        if threads:
            core_keys[n] = ("threads", tuple(c for c in threads if c in online_set) or (n,))
        elif core_id is not None:
            core_keys[n] = ("id", package, die, core_id)     # core_id repeats across packages
        else:
            core_keys[n] = ("cpu", n)
        raw[n] = {
            "package": package, "die": die, "core_id": core_id, "node": node,
            "cluster": _read_int(t / "cluster_id"),
            "cpu_capacity": _read_int(d / "cpu_capacity"),
            "max_freq_khz": _read_int(d / "cpufreq" / "cpuinfo_max_freq"),
            "caches": _read_caches(d),
        }

    core_of = _global_core_index(core_keys)
    members: dict[int, list[int]] = {}
    for n, k in core_of.items():
        members.setdefault(k, []).append(n)

    fastest = max((r["max_freq_khz"] or 0 for r in raw.values()), default=0) or None
    capacity = {n: r["cpu_capacity"] if r["cpu_capacity"] is not None
                else derived_capacity(r["max_freq_khz"], fastest) for n, r in raw.items()}

    core_type: dict[int, str | None]
    p_list = _read_list(root / "sys" / "devices" / "cpu_core" / "cpus")
    e_list = _read_list(root / "sys" / "devices" / "cpu_atom" / "cpus")
    if p_list is not None or e_list is not None:
        p, e = set(p_list or ()), set(e_list or ())
        core_type = {n: "P" if n in p else "E" if n in e else None for n in online}
    elif all(r["cpu_capacity"] is not None for r in raw.values()):
        core_type = capacity_core_types({n: r["cpu_capacity"] for n, r in raw.items()})
    else:
        core_type = {n: None for n in online}

    cpus = tuple(
        Cpu(cpu=n, core=core_of[n], package=r["package"], node=r["node"],
            core_type=core_type[n], capacity=capacity[n], max_freq_khz=r["max_freq_khz"],
            smt_siblings=tuple(c for c in members[core_of[n]] if c != n),
            caches=r["caches"], core_id=r["core_id"], die=r["die"], cluster=r["cluster"])
        for n, r in sorted(raw.items()))
    source = "this machine (/sys)" if root.resolve() == Path("/") else f"sysfs tree {root}"
    return Topology(cpus=cpus, source=source, numa_nodes=tuple(numa_nodes),
                    offline=offline, isolated=isolated)


# --- named profiles ------------------------------------------------------------------------

_GROUP_KEYS = {"cpus", "core_type", "capacity", "max_freq_khz", "threads_per_core",
               "package", "node", "caches"}
_CACHE_KEYS = {"level", "type", "size_kb", "share"}
_TOP_KEYS = {"name", "description", "source", "groups", "numa_nodes"}


def _profiles_dir() -> Path:
    from config import PROFILES_DIR
    return Path(PROFILES_DIR)


def list_profiles(profiles_dir: str | Path | None = None) -> list[str]:
    """Names of the shipped profiles (``config/profiles/<name>.yml``)."""
    d = Path(profiles_dir) if profiles_dir is not None else _profiles_dir()
    return sorted(p.stem for p in d.glob("*.yml"))


def load_profile(name: str, profiles_dir: str | Path | None = None) -> Topology:
    """The topology of a named machine from ``config/profiles/<name>.yml``."""
    import yaml

    d = Path(profiles_dir) if profiles_dir is not None else _profiles_dir()
    path = d / f"{name}.yml"
    if "/" in name or "\\" in name or not path.is_file():
        known = ", ".join(list_profiles(d)) or "none"
        raise TopologyError(f"unknown topology profile {name!r}; known profiles: {known} (in {d})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    return topology_from_profile(data, source=str(path))


def _profile_int(where: str, key: str, value: Any, *, allow_none: bool = False,
                 minimum: int = 0) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = f"a whole number >= {minimum}" + (" or null" if allow_none else "")
        raise TopologyError(f"{where}: '{key}' must be {need}, not {value!r}")
    return value


def topology_from_profile(data: Any, source: str = "profile") -> Topology:
    """Build a Topology from a parsed profile (format: the module docstring)."""
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: a profile must be a mapping with a 'groups' list")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise TopologyError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    groups = data.get("groups")
    if not isinstance(groups, list) or not groups:
        raise TopologyError(f"{source}: 'groups' must be a non-empty list of CPU groups")

    rows: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for gi, g in enumerate(groups):
        where = f"{source}: groups[{gi}]"
        if not isinstance(g, dict):
            raise TopologyError(f"{where}: must be a mapping with at least 'cpus'")
        unknown = set(g) - _GROUP_KEYS
        if unknown:
            raise TopologyError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_GROUP_KEYS)}")
        if "cpus" not in g:
            raise TopologyError(f"{where}: 'cpus' is missing (a cpulist such as '0-11')")
        try:
            cpus = cpulist_parse(str(g["cpus"]))
        except ValueError as exc:
            raise TopologyError(f"{where}: 'cpus': {exc}") from None
        if not cpus:
            raise TopologyError(f"{where}: 'cpus' is empty")
        for c in cpus:
            if c in seen:
                raise TopologyError(f"{where}: 'cpus': cpu {c} is already in {seen[c]}")
            seen[c] = f"groups[{gi}]"
        ctype = g.get("core_type")
        if ctype not in (None, *_CORE_TYPES):
            raise TopologyError(f"{where}: 'core_type' must be P, E or null, not {ctype!r}")
        tpc = _profile_int(where, "threads_per_core", g.get("threads_per_core", 1), minimum=1)
        assert tpc is not None
        if len(cpus) % tpc:
            raise TopologyError(f"{where}: 'threads_per_core' {tpc} does not divide the group's "
                                f"{len(cpus)} CPUs")
        caches = []
        for ci, k in enumerate(g.get("caches") or []):
            cw = f"{where}.caches[{ci}]"
            if not isinstance(k, dict) or set(k) - _CACHE_KEYS or "level" not in k:
                raise TopologyError(f"{cw}: must be a mapping with 'level' and optionally "
                                    f"'type', 'size_kb', 'share'")
            share = _profile_int(cw, "share", k.get("share", len(cpus)), minimum=1)
            assert share is not None
            if len(cpus) % share:
                raise TopologyError(f"{cw}: 'share' {share} does not divide the group's {len(cpus)} CPUs")
            caches.append((_profile_int(cw, "level", k["level"], minimum=1),
                           str(k.get("type", "Unified")),
                           _profile_int(cw, "size_kb", k.get("size_kb"), allow_none=True), share))
        rows.append({
            "cpus": cpus, "core_type": ctype, "tpc": tpc, "caches": caches,
            "capacity": _profile_int(where, "capacity", g.get("capacity"), allow_none=True, minimum=1),
            "max_freq_khz": _profile_int(where, "max_freq_khz", g.get("max_freq_khz"),
                                         allow_none=True, minimum=1),
            "package": _profile_int(where, "package", g.get("package", 0)),
            "node": _profile_int(where, "node", g.get("node", 0)),
        })

    fastest = max((r["max_freq_khz"] or 0 for r in rows), default=0) or None
    built: list[Cpu] = []
    core = 0
    for r in rows:
        cpus, tpc = r["cpus"], r["tpc"]
        capacity = r["capacity"] if r["capacity"] is not None else derived_capacity(r["max_freq_khz"], fastest)
        for i in range(0, len(cpus), tpc):
            threads = cpus[i:i + tpc]
            for pos, n in enumerate(threads):
                idx = i + pos
                caches = tuple(
                    Cache(level=lvl, type=typ, size_kb=size,
                          shared_cpus=tuple(cpus[(idx // share) * share:(idx // share + 1) * share]))
                    for lvl, typ, size, share in r["caches"])
                built.append(Cpu(cpu=n, core=core, package=r["package"], node=r["node"],
                                 core_type=r["core_type"], capacity=capacity,
                                 max_freq_khz=r["max_freq_khz"],
                                 smt_siblings=tuple(t for t in threads if t != n), caches=caches))
            core += 1

    extra_nodes = data.get("numa_nodes") or []
    if not isinstance(extra_nodes, list):
        raise TopologyError(f"{source}: 'numa_nodes' must be a list of node numbers")
    nodes = sorted({c.node for c in built} | {
        _profile_int(source, "numa_nodes", n) for n in extra_nodes})  # type: ignore[misc]
    name = data.get("name") or Path(source).stem
    return Topology(cpus=tuple(built), source=f"profile {name} ({source})", numa_nodes=tuple(nodes))


# --- presentation --------------------------------------------------------------------------

def render_table(topo: Topology) -> Any:
    """A rich Table: one row per CPU and a summary caption."""
    from rich.table import Table

    s = topo.summary()
    caption = (f"{s['cpus']} CPUs, {s['cores']} cores, {s['packages']} package(s), "
               f"{s['nodes']} NUMA node(s)")
    if topo.is_hybrid:
        caption += (f"; P: {s['p_cpu_list']} ({s['p_cores']} cores), "
                    f"E: {s['e_cpu_list']} ({s['e_cores']} cores)")
    caption += f"; SMT {'on' if s['smt'] else 'off'}"
    if s["offline"]:
        caption += f"; offline: {s['offline']}"
    if s["isolated"]:
        caption += f"; isolated: {s['isolated']}"
    table = Table(title=f"CPU topology — {topo.source}", caption=caption)
    for col in ("CPU", "Core", "Package", "Node", "Type", "Capacity", "Max MHz", "Siblings"):
        table.add_column(col, justify="right" if col not in ("Type", "Siblings") else "left")
    for c in topo.cpus:
        table.add_row(str(c.cpu), str(c.core), str(c.package), str(c.node), c.core_type or "-",
                      str(c.capacity),
                      str(round(c.max_freq_khz / 1000)) if c.max_freq_khz else "-",
                      cpulist_format(c.smt_siblings) or "-")
    return table


__all__ = [
    "CAPACITY_SCALE", "Cache", "Cpu", "Topology", "TopologyError",
    "capacity_core_types", "cpulist_format", "cpulist_parse", "derived_capacity",
    "list_profiles", "load_profile", "read_topology", "render_table", "topology_from_profile",
]
