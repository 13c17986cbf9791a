"""CPU topology: the sysfs reader against real captures, fallbacks, profiles and cpulists."""
from __future__ import annotations

import importlib.util
import json
import re
import tarfile
from pathlib import Path

import pytest

from pipeline.topology import (
    Cpu, Topology, TopologyError, capacity_core_types, cpulist_format, cpulist_parse,
    list_profiles, load_profile, read_topology, render_table, topology_from_profile,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sysfs"
REPO = Path(__file__).resolve().parents[2]
_SKIP = re.compile(r"/(memory\d*|cpuidle|power|vulnerabilities|firmware_node|microcode)(/|$)")


@pytest.fixture(scope="session")
def sysfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every archive in tests/data/sysfs unpacked once: name -> root folder for the reader."""
    out = tmp_path_factory.mktemp("sysfs")
    roots = {}
    for archive in sorted(DATA.glob("*.tar.xz")):
        with tarfile.open(archive) as tar:
            # the server captures hold thousands of memory-block and idle-state files the
            # reader never opens; skipping them keeps the session fixture fast
            keep = [m for m in tar.getmembers() if not _SKIP.search(m.name)]
            tar.extractall(out, members=keep, filter="data")
        name = archive.name.removesuffix(".tar.xz")
        roots[name] = out / name
    return roots


# --- counts from tests/data/sysfs (README of the captures) ---------------------------------

@pytest.mark.parametrize("name, cpus, cores, packages, nodes", [
    ("intel-hybrid-16cpu", 16, 12, 1, 1),
    ("desktop-20cpu", 20, 10, 1, 1),
    ("server-112cpu-6node", 112, 56, 2, 6),
    ("server-2socket-4node-40core", 80, 40, 2, 4),
    ("arm-pixel6-8cpu", 8, 8, 1, 1),
])
def test_counts(sysfs, name, cpus, cores, packages, nodes):
    topo = read_topology(sysfs[name])
    s = topo.summary()
    assert (s["cpus"], s["cores"], s["packages"], s["nodes"]) == (cpus, cores, packages, nodes)
    assert len(topo.cpu_ids) == cpus and len(topo.cores) == cores
    # every CPU's core holds exactly the CPU and its SMT siblings
    for c in topo.cpus:
        assert topo.core_cpus(c.core) == c.threads


def test_intel_hybrid_split(sysfs):
    topo = read_topology(sysfs["intel-hybrid-16cpu"])
    assert topo.is_hybrid
    assert topo.p_cpus == tuple(range(8)) and topo.e_cpus == tuple(range(8, 16))
    for p in range(0, 8, 2):                       # P-cores carry SMT pairs (0,1), (2,3), ...
        assert topo.siblings(p) == (p + 1,) and topo.siblings(p + 1) == (p,)
    assert all(topo.siblings(e) == () for e in topo.e_cpus)
    s = topo.summary()
    assert (s["p_cores"], s["e_cores"], s["smt"]) == (4, 8, True)
    # no cpu_capacity on x86 here: capacity follows the maximum frequency, 4.8 vs 3.5 GHz
    assert topo.cpu(0).max_freq_khz == 4_800_000 and topo.cpu(0).capacity == 1024
    assert topo.cpu(8).max_freq_khz == 3_500_000 and topo.cpu(8).capacity == round(1024 * 3.5 / 4.8)


def test_desktop_not_hybrid(sysfs):
    topo = read_topology(sysfs["desktop-20cpu"])
    assert not topo.is_hybrid
    assert all(c.core_type is None for c in topo.cpus)
    assert topo.siblings(0) == (10,)
    # siblings are one core; a CPU it does not have is none of its cores
    assert topo.cores_of([0, 10, 1, 99]) == {topo.cpu(0).core, topo.cpu(1).core}


def test_server_core_ids_repeat_across_packages(sysfs):
    topo = read_topology(sysfs["server-112cpu-6node"])
    # cpu0 and cpu1 share core_id 0 but sit in different packages: two global cores
    assert topo.cpu(0).core_id == topo.cpu(1).core_id == 0
    assert topo.cpu(0).package != topo.cpu(1).package
    assert topo.cpu(0).core != topo.cpu(1).core
    assert topo.cpu(56).core == topo.cpu(0).core
    # nodes 4 and 5 hold memory only: counted, but without CPUs
    assert topo.nodes == (0, 1, 2, 3, 4, 5)
    assert topo.node_cpus(4) == () and len(topo.node_cpus(0)) == 28
    assert len(topo.cache_groups(3)) == 2             # one L3 per package


def test_interleaved_hybrid_lists(sysfs):
    root = sysfs["server-2socket-4node-40core"]
    raw = (root / "sys/devices/cpu_core/cpus").read_text().strip()
    assert raw == "0-15,40-55,20-35,60-75"               # unsorted ranges in the file
    topo = read_topology(root)
    assert topo.p_cpus == tuple(cpulist_parse("0-15,20-35,40-55,60-75"))
    assert topo.e_cpus == tuple(cpulist_parse("16-19,36-39,56-59,76-79"))
    assert topo.summary()["p_cores"] == 32 and topo.summary()["e_cores"] == 8
    assert {topo.cpu(c).package for c in topo.e_cpus} == {0, 1}
    assert topo.node_cpus(3) == tuple(cpulist_parse("23-24,27-29,33-34,37-39,63-64,67-69,73-74,77-79"))


def test_pixel6_capacities_and_fallbacks(sysfs):
    root = sysfs["arm-pixel6-8cpu"]
    cpu_dir = root / "sys/devices/system/cpu"
    assert not (cpu_dir / "online").exists() and not (root / "sys/devices/system/node").exists()
    topo = read_topology(root)
    assert topo.cpu_ids == tuple(range(8))               # from "present"
    assert [c.capacity for c in topo.cpus] == [1024, 1024, 820, 820, 280, 280, 280, 280]
    assert topo.nodes == (0,) and all(c.node == 0 for c in topo.cpus)
    assert all(c.max_freq_khz is None for c in topo.cpus)
    assert not topo.has_smt                              # core_cpus_list only, one thread each
    # three tiers: 820 is nearer 1024 than 280, so it joins the P side
    assert topo.p_cpus == (0, 1, 2, 3) and topo.e_cpus == (4, 5, 6, 7)
    assert topo.cache_groups(3) == [(0, 1), (2, 3), (4, 5, 6, 7)]


def test_capacity_tier_rule():
    assert capacity_core_types({0: 1024, 1: 1024}) == {0: None, 1: None}
    assert capacity_core_types({0: 1024, 1: 1000}) == {0: None, 1: None}    # binning, not design
    assert capacity_core_types({0: 1024, 1: 446}) == {0: "P", 1: "E"}
    # a middle tier near the bottom joins E
    assert capacity_core_types({0: 1024, 1: 400, 2: 300}) == {0: "P", 1: "E", 2: "E"}


def test_this_machine_capture(sysfs):
    names = [n for n in sysfs if n.startswith("this-machine-")]
    assert len(names) == 1, f"expected one this-machine capture in {DATA}, found {names}"
    name = names[0]
    topo = read_topology(sysfs[name])
    assert name == f"this-machine-{len(topo.cpus)}cpu"
    s = topo.summary()
    assert s["cpus"] >= 1 and 1 <= s["cores"] <= s["cpus"] and s["packages"] >= 1
    for c in topo.cpus:
        assert c.capacity >= 1 and c.cache(1) is not None


def test_capture_script_round_trip(sysfs, tmp_path):
    """Re-capturing a saved tree keeps everything the reader uses."""
    spec = importlib.util.spec_from_file_location("capture_sysfs", REPO / "scripts/capture_sysfs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = sysfs["intel-hybrid-16cpu"]
    assert mod.main(["--root", str(src), "--out", str(tmp_path), "--name", "again"]) == 0
    with tarfile.open(tmp_path / "again.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    before, after = read_topology(src).to_dict(), read_topology(tmp_path / "again").to_dict()
    before.pop("source"), after.pop("source")
    assert before == after


# --- to_dict, rendering --------------------------------------------------------------------

def test_to_dict_shape(sysfs):
    topo = read_topology(sysfs["intel-hybrid-16cpu"])
    d = json.loads(json.dumps(topo.to_dict()))
    assert set(d) >= {"cpus", "summary"}
    assert len(d["cpus"]) == 16
    for row in d["cpus"]:
        assert {"cpu", "core", "package", "node", "core_type", "capacity", "max_freq_khz"} <= set(row)
        assert row["core_type"] in ("P", "E", None)
        assert isinstance(row["capacity"], int)
    assert {"cpus", "cores", "packages", "nodes", "p_cores", "e_cores", "smt"} <= set(d["summary"])
    assert Topology.from_dict(d) == topo


def test_to_dict_null_frequency(sysfs):
    d = read_topology(sysfs["arm-pixel6-8cpu"]).to_dict()
    assert all(row["max_freq_khz"] is None for row in d["cpus"])
    assert '"max_freq_khz": null' in json.dumps(d)


def test_render_table(sysfs):
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_table(read_topology(sysfs["intel-hybrid-16cpu"])))
    text = " ".join(console.export_text().split())     # the caption wraps at the table's width
    assert "4800" in text and "P: 0-7" in text and "E: 8-15" in text


# --- profiles ------------------------------------------------------------------------------

def test_apple_m4_max_profile():
    assert "apple-m4-max" in list_profiles()
    topo = load_profile("apple-m4-max")
    assert topo.cpu_ids == tuple(range(16))
    assert topo.p_cpus == tuple(range(12)) and topo.e_cpus == tuple(range(12, 16))
    s = topo.summary()
    assert (s["cores"], s["packages"], s["nodes"], s["p_cores"], s["e_cores"], s["smt"]) == \
        (16, 1, 1, 12, 4, False)
    assert topo.cpu(0).max_freq_khz == 4_512_000
    assert topo.cpu(12).max_freq_khz is None


def test_unknown_profile_lists_known():
    with pytest.raises(TopologyError, match="apple-m4-max"):
        load_profile("no-such-machine")


def test_profile_smt_and_caches():
    topo = topology_from_profile({"groups": [
        {"cpus": "0-7", "core_type": "P", "max_freq_khz": 5_000_000, "threads_per_core": 2,
         "caches": [{"level": 2, "size_kb": 2048, "share": 2}, {"level": 3, "size_kb": 30720}]},
        {"cpus": "8-15", "core_type": "E", "max_freq_khz": 2_500_000, "node": 1,
         "caches": [{"level": 2, "size_kb": 4096, "share": 4}]},
    ]}, source="inline")
    assert len(topo.cores) == 12 and topo.siblings(2) == (3,) and topo.siblings(9) == ()
    assert topo.cpu(8).capacity == 512 and topo.cpu(0).capacity == 1024
    assert topo.cache_groups(2)[-2:] == [(8, 9, 10, 11), (12, 13, 14, 15)]
    assert topo.cpu(5).cache(3).shared_cpus == tuple(range(8))
    assert topo.nodes == (0, 1)


@pytest.mark.parametrize("text, needle", [
    ("groups: []", "groups"),
    ("groups:\n  - {cpus: 0-3, core_type: X}", "groups[0]: 'core_type'"),
    ("groups:\n  - {cpus: 0-3}\n  - {cpus: 3-4}", "cpu 3 is already in groups[0]"),
    ("groups:\n  - {cpus: 0-2, threads_per_core: 2}", "threads_per_core"),
    ("groups:\n  - {cpus: 0-3, capacity: fast}", "'capacity'"),
    ("groups:\n  - {cpus: 0-3, colour: red}", "colour"),
    ("groups:\n  - {cpus: 3-0}", "runs backwards"),
    ("- just a list", "mapping"),
    ("groups: [", "not valid YAML"),
])
def test_malformed_profile_names_file_and_key(tmp_path, text, needle):
    (tmp_path / "bad.yml").write_text(text)
    with pytest.raises(TopologyError) as err:
        load_profile("bad", profiles_dir=tmp_path)
    assert "bad.yml" in str(err.value) and needle in str(err.value)


# --- cpulists ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, cpus", [
    ("0-3,8", [0, 1, 2, 3, 8]),
    ("0", [0]),
    ("", []),
    ("\n", []),
    ("0-1\n", [0, 1]),
    ("8,0-3", [0, 1, 2, 3, 8]),
    ("0-15,40-55,20-35", list(range(16)) + list(range(20, 36)) + list(range(40, 56))),
    ("1,1,0-1", [0, 1]),
    (" 2 , 4-5 ", [2, 4, 5]),
])
def test_cpulist_parse(text, cpus):
    assert cpulist_parse(text) == cpus


@pytest.mark.parametrize("cpus, text", [
    ([0, 1, 2, 3, 8], "0-3,8"),
    ([], ""),
    ([5], "5"),
    ([0, 1], "0-1"),
    ([8, 3, 2, 1, 0, 8], "0-3,8"),
    ([0, 2, 4], "0,2,4"),
])
def test_cpulist_format(cpus, text):
    assert cpulist_format(cpus) == text


@pytest.mark.parametrize("text", ["0-3,8", "0,2,4-7,9", "", "100-127", "0-1"])
def test_cpulist_round_trip(text):
    assert cpulist_format(cpulist_parse(text)) == text


@pytest.mark.parametrize("bad", ["a", "1-", "-1", "3-1", "0-3;8", "1.5"])
def test_cpulist_parse_rejects(bad):
    with pytest.raises(ValueError, match="cpulist"):
        cpulist_parse(bad)


# --- errors and fallbacks on synthetic trees -----------------------------------------------

def test_root_without_cpu_info(tmp_path):
    with pytest.raises(TopologyError, match=str(tmp_path / "sys/devices/system/cpu")):
        read_topology(tmp_path)
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    with pytest.raises(TopologyError, match="no CPU information"):
        read_topology(tmp_path)


def _write(root: Path, rel: str, text: str) -> None:
    p = root / "sys/devices/system" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def test_synthetic_missing_files_fall_back(tmp_path):
    # no online/present, no node/, cpu0 with core_id only, cpu1 with nothing but its folder
    _write(tmp_path, "cpu/cpu0/topology/core_id", "0")
    _write(tmp_path, "cpu/cpu0/cpufreq/cpuinfo_max_freq", "3000000")
    (tmp_path / "sys/devices/system/cpu/cpu1").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/cpufreq").mkdir()           # not a cpuN folder
    topo = read_topology(tmp_path)
    assert topo.cpu_ids == (0, 1)
    assert [c.package for c in topo.cpus] == [0, 0] and topo.nodes == (0,)
    assert topo.cpu(0).core != topo.cpu(1).core
    assert topo.cpu(0).max_freq_khz == 3_000_000 and topo.cpu(1).max_freq_khz is None
    assert [c.capacity for c in topo.cpus] == [1024, 1024]        # unknown speed reads as 1024
    assert all(c.core_type is None and c.caches == () for c in topo.cpus)


def test_synthetic_offline_and_node_fallback(tmp_path):
    _write(tmp_path, "cpu/online", "0-1,3")
    _write(tmp_path, "cpu/present", "0-3")
    for n in (0, 1, 3):
        _write(tmp_path, f"cpu/cpu{n}/topology/core_id", str(n // 2))
        _write(tmp_path, f"cpu/cpu{n}/topology/physical_package_id", "0")
        _write(tmp_path, f"cpu/cpu{n}/topology/thread_siblings_list", "0-1" if n < 2 else "2-3")
    _write(tmp_path, "node/node0/cpulist", "0-1")
    _write(tmp_path, "node/node1/cpulist", "2-3")
    topo = read_topology(tmp_path)
    assert topo.cpu_ids == (0, 1, 3) and topo.offline == (2,)
    assert topo.siblings(3) == () and topo.siblings(0) == (1,)    # offline sibling dropped
    assert topo.cpu(3).node == 1 and topo.summary()["offline"] == "2"


def test_topology_rejects_duplicate_cpus():
    with pytest.raises(TopologyError, match="twice"):
        Topology(cpus=(Cpu(cpu=0, core=0), Cpu(cpu=0, core=1)))
