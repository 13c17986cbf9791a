"""The cgroup layout and a process's cgroups, read from saved trees through the root seam:
this kind of machine (v1 controllers with a cgroup2 mount beside them) and a systemd host
on cgroup v2 alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cgroups, procfs
from pipeline.hostpaths import HostPaths

DATA = Path(__file__).resolve().parent.parent / "data" / "cgroups"


def host(name: str) -> HostPaths:
    root = str(DATA / name)
    return HostPaths(proc_root=root, sys_root=root)


def test_a_hybrid_host_has_cpu_and_memory_on_v1_and_the_rest_on_v2() -> None:
    paths = host("hybrid-v1")
    layout = cgroups.read_layout(paths)
    cpu, memory = layout.hierarchy("cpu"), layout.hierarchy("memory")
    assert cpu is not None and memory is not None
    assert (cpu.version, memory.version) == (1, 1)
    assert cpu.mount == str(DATA / "hybrid-v1" / "sys/fs/cgroup/cpu")
    hugetlb = layout.hierarchy("hugetlb")
    assert hugetlb is not None and hugetlb.version == 2
    # the named systemd hierarchy holds no controller
    assert "name=systemd" not in layout.by_controller and "systemd" not in layout.by_controller
    assert "cpu on v1" in layout.description and "memory on v1" in layout.description


def test_a_v2_host_has_every_controller_in_its_one_hierarchy() -> None:
    layout = cgroups.read_layout(host("v2-systemd"))
    cpu, memory = layout.hierarchy("cpu"), layout.hierarchy("memory")
    assert cpu is memory and cpu is not None and cpu.version == 2
    assert {"cpuset", "io", "pids"} <= cpu.controllers


def test_no_cgroup_mount_means_no_controller() -> None:
    layout = cgroups.parse_mounts("proc /proc proc rw 0 0\n")
    assert layout.hierarchy("cpu") is None
    assert layout.description == "no cgroup controllers mounted"


def test_a_process_cgroup_per_controller() -> None:
    paths = host("hybrid-v1")
    layout = cgroups.read_layout(paths)
    groups = cgroups.process_cgroups(paths, 4242)
    assert groups is not None
    assert cgroups.cgroup_of(layout, groups, "cpu") == "/"
    assert cgroups.cgroup_of(layout, groups, "memory") == \
        "/process_api/93a3595a4ee066f567c95289f76ee3ce"
    assert cgroups.process_cgroups(paths, 999999) is None          # gone
    v2 = host("v2-systemd")
    v2_groups = cgroups.process_cgroups(v2, 100)
    assert v2_groups is not None
    assert cgroups.cgroup_of(cgroups.read_layout(v2), v2_groups, "memory") == \
        "/system.slice/db.service"


@pytest.mark.parametrize("name, path, controller, limits", [
    ("hybrid-v1", "/", "cpu", None),
    ("hybrid-v1", "/batchjobs", "cpu", "cpu.cfs_quota_us 50000"),
    # a group someone made without limits (here the sandbox's init) has nothing to keep
    ("hybrid-v1", "/process_api/93a3595a4ee066f567c95289f76ee3ce", "memory", None),
    ("v2-systemd", "/system.slice/db.service", "cpu", "cpu.max 200000 100000"),
    ("v2-systemd", "/system.slice/db.service", "memory", "memory.max 4294967296"),
    ("v2-systemd", "/user.slice/user-1000.slice/session-3.scope", "cpu", None),
])
def test_a_group_with_limits_of_its_own_says_which(name: str, path: str, controller: str,
                                                    limits: str | None) -> None:
    layout = cgroups.read_layout(host(name))
    h = layout.hierarchy(controller)
    assert h is not None
    assert cgroups.own_limits(h, path, controller) == limits


def test_weights_and_quotas_convert_between_versions() -> None:
    assert cgroups.shares_for_weight(100) == 1024
    assert cgroups.shares_for_weight(10) == 102
    assert cgroups.shares_for_weight(1) == 10
    assert cgroups.quota_us(0.5) == 50_000
    assert cgroups.quota_us(0.001) == 1000                # the kernel's minimum


def test_pressure_stall_figures_from_saved_files() -> None:
    # this kind of VM runs with PSI off (no /proc/pressure): a saved tree stands in
    root = str(DATA.parent / "pressure" / "proc")
    figures = procfs.read_pressure(root)
    assert figures == {"cpu_some": 1.5, "cpu_full": 0.0, "memory_some": 12.25,
                       "memory_full": 3.75, "io_some": 0.4, "io_full": 0.1}
    assert procfs.read_pressure(str(DATA / "hybrid-v1" / "proc")) == {}   # PSI off
    assert procfs.parse_pressure("memory", "some avg10=oops total=1\n") == {}


def test_memory_of_each_tier_group(tmp_path: Path) -> None:
    memory = tmp_path / "sys/fs/cgroup/memory"
    (memory / "corelane/low").mkdir(parents=True)
    (memory / "corelane/low/memory.usage_in_bytes").write_text("1048576\n")
    (memory / "corelane/background").mkdir()
    layout = cgroups.parse_mounts("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
                                  str(tmp_path))
    assert cgroups.group_memory(layout, "corelane") == {"low": 1 << 20}
    assert cgroups.group_memory(layout, "elsewhere") == {}


def test_pressure_of_each_tier_group_on_cgroup_v2_from_saved_files() -> None:
    # per-group PSI lives in cgroup v2 only (PSI is off on this kind of VM, so saved files
    # stand in); a file that is not there (low's memory.pressure) adds nothing
    layout = cgroups.read_layout(host("v2-systemd"))
    assert cgroups.group_pressure(layout, "/corelane") == {
        "background.cpu_some": 35.2, "background.cpu_full": 0.0,
        "background.memory_some": 8.0, "background.memory_full": 2.5,
        "low.cpu_some": 0.1, "low.cpu_full": 0.0}
    assert cgroups.group_pressure(layout, "elsewhere") == {}
    # v1 hierarchies keep no pressure per group
    assert cgroups.group_pressure(cgroups.read_layout(host("hybrid-v1")), "corelane") == {}
