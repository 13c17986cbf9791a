"""The /proc readers against hand-written snapshots in tests/data/proc/host."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import procfs
from pipeline.hostpaths import HostPaths

ROOT = Path(__file__).resolve().parents[1] / "data" / "proc" / "host"
PROC = HostPaths(str(ROOT)).proc

CID_DOCKER_V1 = "3f2a9c1b7d8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f901a2b3c4d5e6f7a8b"
CID_DOCKER_V2 = "9b8a7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f80910a1b2c3d4e5f6a7"
CID_K8S = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc"


def test_list_pids_skips_non_numeric_entries() -> None:
    assert sorted(procfs.list_pids(PROC)) == [2, 100, 200, 300, 400]
    assert procfs.list_pids(str(ROOT / "nowhere")) == []


def test_stat_of_a_plain_process() -> None:
    st = procfs.read_stat(PROC, 100)
    assert st is not None
    assert (st.pid, st.comm, st.state, st.ppid) == (100, "nginx", "S", 1)
    assert (st.utime, st.stime, st.nice, st.num_threads) == (250, 120, 5, 1)
    assert (st.start_time, st.vsize, st.rss_pages) == (5000, 120000000, 2500)
    assert (st.processor, st.rt_priority, st.policy) == (1, 0, 3)
    assert not st.kernel_thread


def test_stat_comm_with_spaces_and_parentheses_splits_at_the_last_paren() -> None:
    st = procfs.read_stat(PROC, 300)
    assert st is not None
    assert st.comm == "my (weird) proc)"
    # Every field after comm lands where it belongs.
    assert (st.state, st.ppid, st.utime, st.stime, st.nice, st.start_time) == (
        "R", 1, 40, 10, -5, 7000)


def test_kernel_thread_flag() -> None:
    st = procfs.read_stat(PROC, 2)
    assert st is not None and st.kernel_thread
    assert st.flags & procfs.PF_KTHREAD
    assert procfs.read_cmdline(PROC, 2) == ""


def test_status_fields() -> None:
    s = procfs.read_status(PROC, 100)
    assert s == procfs.Status(name="nginx", uid=33, threads=1, vm_rss_kb=10000,
                              vm_size_kb=117188, vol_ctx=512, invol_ctx=7,
                              cpus_allowed_list="0-1")
    k = procfs.read_status(PROC, 2)
    assert k is not None and (k.vm_rss_kb, k.vol_ctx, k.invol_ctx) == (0, 61, 0)


def test_status_ctx_switches_does_not_confuse_voluntary_with_nonvoluntary() -> None:
    data = b"Name:\tx\nvoluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t4\n"
    assert procfs.status_ctx_switches(data) == (17, 4)
    assert procfs.status_ctx_switches(b"Name:\tx\n") == (0, 0)


def test_schedstat_and_io() -> None:
    assert procfs.read_schedstat(PROC, 100) == (3400000000, 12000000, 519)
    assert procfs.read_io(PROC, 100) == procfs.IoCounters(
        read_bytes=40960, write_bytes=8192, rchar=1048576, wchar=524288)


def test_io_missing_is_zeros() -> None:
    assert not (ROOT / "proc" / "300" / "io").exists()
    assert procfs.read_io(PROC, 300) == procfs.IoCounters(0, 0, 0, 0)


def test_parse_io_in_another_order() -> None:
    data = b"read_bytes: 5\nrchar: 1\nwrite_bytes: 6\nwchar: 2\n"
    assert procfs.parse_io(data) == procfs.IoCounters(5, 6, 1, 2)


def test_cmdline_joins_arguments() -> None:
    assert procfs.read_cmdline(PROC, 200) == "python3 -u /srv/app/worker.py --port 8080"
    assert procfs.read_cmdline(PROC, 300) == "./my (weird) proc) --flag"


@pytest.mark.parametrize("pid, path, cid", [
    (100, f"/docker/{CID_DOCKER_V1}", CID_DOCKER_V1),                       # v1 cgroupfs
    (200, f"/system.slice/docker-{CID_DOCKER_V2}.scope", CID_DOCKER_V2),    # v2 systemd
    (400, f"/kubepods/besteffort/pod6a1b2c3d-4e5f-6789-abcd-ef0123456789/{CID_K8S}",
     CID_K8S),                                                            # containerd, v1
    (300, "/user.slice/user-1000.slice/session-3.scope", None),           # not a container
    (2, "/", None),
])
def test_cgroup_and_container_id(pid: int, path: str, cid: str | None) -> None:
    assert procfs.read_cgroup(PROC, pid) == (path, cid)


@pytest.mark.parametrize("path, cid", [
    ("/system.slice/cri-containerd-" + "ab" * 32 + ".scope", "ab" * 32),
    ("/machine.slice/libpod-" + "cd" * 32 + ".scope", "cd" * 32),
    ("/kubepods.slice/kubepods-pod1.slice/crio-" + "ef" * 32 + ".scope", "ef" * 32),
    ("/docker/" + "ab" * 31, None),                  # too short for an id
    ("/system.slice/docker.service", None),
])
def test_container_id_forms(path: str, cid: str | None) -> None:
    assert procfs.container_id(path) == cid


def test_hybrid_host_prefers_the_cpu_hierarchy_over_the_empty_v2_root() -> None:
    text = "5:cpuset:/\n3:cpu,cpuacct:/batch/jobs\n1:name=systemd:/\n0::/\n"
    assert procfs.parse_cgroup(text) == ("/batch/jobs", None)


def test_threads_are_summed() -> None:
    totals = procfs.thread_totals(PROC, 200)
    assert totals == procfs.ThreadTotals(vol_ctx=40 + 1800 + 5, invol_ctx=3 + 12 + 1,
                                         run_time_ns=120000000 + 900000000 + 1000000,
                                         run_delay_ns=3000000 + 45000000 + 20000,
                                         timeslices=43 + 1812 + 6, threads_read=3)
    # The worker thread, not the leader, does most of the voluntary switching.
    leader = procfs.read_status(PROC, 200, tid=200)
    worker = procfs.read_status(PROC, 200, tid=201)
    assert leader is not None and worker is not None
    assert worker.vol_ctx > 10 * leader.vol_ctx


def test_boot_time_and_clock() -> None:
    assert procfs.boot_time(PROC) == 1764230000.0       # a saved /proc: btime stands
    assert procfs.clock_ticks() > 0 and procfs.page_size() >= 4096


def test_boot_time_has_the_fraction_of_a_second_btime_cuts_off(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  1 2 3 4\nbtime 1000\n")
    (tmp_path / "uptime").write_text("10.00 19.50\n")
    assert procfs.boot_time(str(tmp_path), now=1010.79) == pytest.approx(1000.79)
    # read long after (or before) that boot: the uptime is not this boot's, btime stands
    assert procfs.boot_time(str(tmp_path), now=5000.0) == 1000.0
    (tmp_path / "uptime").write_text("garbage\n")
    assert procfs.boot_time(str(tmp_path), now=1010.79) == 1000.0


def test_autogroup_is_read_from_the_kernel_switch(tmp_path: Path) -> None:
    assert procfs.autogroup_enabled(PROC) is True
    assert procfs.autogroup_enabled(str(tmp_path)) is None          # no such switch
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "sched_autogroup_enabled").write_text("0\n")
    assert procfs.autogroup_enabled(str(tmp_path)) is False


def test_a_vanished_process_reads_as_none(tmp_path: Path) -> None:
    shutil.copytree(ROOT, tmp_path / "root")
    proc = HostPaths(str(tmp_path / "root")).proc
    shutil.rmtree(Path(proc) / "100")
    assert procfs.read_stat(proc, 100) is None
    assert procfs.read_status(proc, 100) is None
    assert procfs.read_schedstat(proc, 100) is None
    assert procfs.read_cmdline(proc, 100) is None
    assert procfs.read_cgroup(proc, 100) is None
    assert procfs.thread_totals(proc, 100) is None
    assert procfs.read_io(proc, 100) == procfs.IO_ZERO


def test_truncated_stat_is_none_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "7" / "stat").write_text("7 (cut")
    assert procfs.read_stat(HostPaths(str(tmp_path)).proc, 7) is None


def test_read_bytes_reads_past_one_buffer(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 10000)
    assert procfs.read_bytes(str(big), 4096) == b"x" * 10000
    assert procfs.read_bytes(str(tmp_path / "missing")) is None
