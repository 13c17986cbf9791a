"""ProcessSampler against a copy of the tests/data/proc/host snapshot, edited between sweeps."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import procfs
from pipeline.collectors.process import ProcessSampler
from pipeline.events import ProcessSample
from pipeline.hostpaths import LIVE, HostPaths

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "proc" / "host"
HZ = procfs.CLOCK_TICKS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(SNAPSHOT, tmp_path / "root")
    return tmp_path / "root"


def by_pid(samples: list[ProcessSample]) -> dict[int, ProcessSample]:
    return {s.pid: s for s in samples}


def set_stat(root: Path, pid: int, **fields: int) -> None:
    """Change stat fields by their proc(5) number, e.g. set_stat(root, 100, f14=300)."""
    path = root / "proc" / str(pid) / "stat"
    text = path.read_text()
    close = text.rindex(")")
    rest = text[close + 2:].split()
    for key, value in fields.items():
        rest[int(key[1:]) - 3] = str(value)
    path.write_text(text[:close + 2] + " ".join(rest) + "\n")


def test_first_sweep_reads_every_field(root: Path) -> None:
    samples = by_pid(ProcessSampler(HostPaths(str(root)), clock=Clock()).sweep())
    assert sorted(samples) == [2, 100, 200, 300, 400]
    s = samples[100]
    assert (s.pid, s.start_time, s.ppid, s.name, s.state) == (100, 5000, 1, "nginx", "S")
    assert s.cmdline == "nginx: worker process"
    assert s.uid == 33
    assert s.container_id == "3f2a9c1b7d8e4f60a1b2c3d4e5f60718293a4b5c6d7e8f901a2b3c4d5e6f7a8b"
    assert s.cgroup == "/docker/" + s.container_id
    assert s.cpu_share == 0.0                         # first sight
    assert s.cpu_time_s == pytest.approx((250 + 120) / HZ)
    assert s.rss_bytes == 2500 * procfs.PAGE_SIZE
    assert s.vm_bytes == 120000000
    assert (s.threads, s.vol_ctx, s.invol_ctx) == (1, 512, 7)
    assert (s.run_time_ns, s.run_delay_ns, s.timeslices) == (3400000000, 12000000, 519)
    assert (s.io_read_bytes, s.io_write_bytes, s.io_rchar, s.io_wchar) == (
        40960, 8192, 1048576, 524288)
    assert (s.last_cpu, s.nice, s.policy, s.rt_priority) == (1, 5, 3, 0)
    assert s.affinity == "0-1"
    assert s.kernel_thread is False


def test_kernel_thread_weird_comm_and_missing_io(root: Path) -> None:
    samples = by_pid(ProcessSampler(HostPaths(str(root)), clock=Clock()).sweep())
    k = samples[2]
    assert k.kernel_thread is True and k.cmdline == "" and k.rss_bytes == 0
    w = samples[300]
    assert w.name == "my (weird) proc)"
    assert (w.state, w.nice, w.uid, w.container_id) == ("R", -5, 1000, None)
    assert (w.io_read_bytes, w.io_write_bytes, w.io_rchar, w.io_wchar) == (0, 0, 0, 0)
    assert w.vol_ctx == 3 and w.invol_ctx == 25       # the rest of it is still read
    assert samples[400].container_id.startswith("c0ffee00")


def test_multi_threaded_process_is_summed_over_its_threads(root: Path) -> None:
    every = by_pid(ProcessSampler(HostPaths(str(root)), "all", clock=Clock()).sweep())[200]
    leader = by_pid(ProcessSampler(HostPaths(str(root)), "leader", clock=Clock()).sweep())[200]
    assert leader.threads == every.threads == 3
    assert (leader.vol_ctx, leader.invol_ctx) == (40, 3)
    assert (every.vol_ctx, every.invol_ctx) == (40 + 1800 + 5, 3 + 12 + 1)
    assert (every.run_time_ns, every.run_delay_ns, every.timeslices) == (
        1021000000, 48020000, 1861)
    assert leader.run_time_ns == 120000000
    assert every.container_id == "9b8a7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f80910a1b2c3d4e5f6a7"
    assert every.cmdline == "python3 -u /srv/app/worker.py --port 8080"
    # CPU time comes from the leader's stat, which already covers every thread.
    assert every.cpu_time_s == leader.cpu_time_s == pytest.approx(1000 / HZ)


def test_a_thread_that_switches_later_is_seen_on_the_next_sweep(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), "all", clock=clock)
    sampler.sweep()
    task = root / "proc" / "200" / "task" / "201"
    status = (task / "status").read_text().replace("voluntary_ctxt_switches:\t1800",
                                                   "voluntary_ctxt_switches:\t2500")
    (task / "status").write_text(status)
    (task / "schedstat").write_text("950000000 45000000 2512\n")
    clock.now += 1.0
    s = by_pid(sampler.sweep())[200]
    assert s.vol_ctx == 40 + 2500 + 5
    assert s.timeslices == 43 + 2512 + 6


def test_cpu_share_across_two_sweeps(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), clock=clock)
    assert by_pid(sampler.sweep())[100].cpu_share == 0.0
    # Half a second of CPU (utime + stime) over two seconds of wall time: 0.25 cores.
    set_stat(root, 100, f14=250 + HZ // 4, f15=120 + HZ // 4)
    (root / "proc" / "100" / "schedstat").write_text("3900000000 12500000 530\n")
    clock.now += 2.0
    second = by_pid(sampler.sweep())
    assert sampler.interval_s == pytest.approx(2.0)
    assert second[100].cpu_share == pytest.approx(0.25)
    assert second[100].cpu_time_s == pytest.approx((370 + 2 * (HZ // 4)) / HZ)
    assert second[100].run_time_ns == 3900000000
    assert second[400].cpu_share == 0.0               # did not run


def test_a_process_that_ran_has_its_io_read_again(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), clock=clock)
    sampler.sweep()
    pdir = root / "proc" / "400"
    (pdir / "io").write_text((pdir / "io").read_text().replace("rchar: 4096", "rchar: 9999"))
    (pdir / "schedstat").write_text("1600000000 2000000 10050\n")
    text = (pdir / "status").read_text().replace("voluntary_ctxt_switches:\t10000",
                                                 "voluntary_ctxt_switches:\t10010")
    (pdir / "status").write_text(text)
    clock.now += 1.0
    s = by_pid(sampler.sweep())[400]
    assert (s.io_rchar, s.vol_ctx, s.timeslices) == (9999, 10010, 10050)


def test_unchanged_files_give_the_same_sample_with_or_without_reuse(root: Path) -> None:
    clock = Clock()
    cached = ProcessSampler(HostPaths(str(root)), clock=clock)
    full = ProcessSampler(HostPaths(str(root)), clock=clock)
    full.reuse_unchanged = False
    cached.sweep()
    full.sweep()
    # Affinity is re-read every sweep even when nothing else moved.
    status = root / "proc" / "100" / "status"
    status.write_text(status.read_text().replace("Cpus_allowed_list:\t0-1",
                                                 "Cpus_allowed_list:\t1"))
    clock.now += 1.0
    a, b = by_pid(cached.sweep()), by_pid(full.sweep())
    assert a == b
    assert a[100].affinity == "1"


def test_pid_reuse_is_a_new_identity(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), clock=clock)
    first = by_pid(sampler.sweep())[100]
    pdir = root / "proc" / "100"
    # Same pid, later start time, lots of CPU time already: another process.
    set_stat(root, 100, f14=5000, f15=100, f22=90000)
    (pdir / "cmdline").write_bytes(b"/usr/bin/other\0--x\0")
    (pdir / "cgroup").write_text("0::/system.slice/other.service\n")
    clock.now += 1.0
    second = by_pid(sampler.sweep())[100]
    assert (first.start_time, second.start_time) == (5000, 90000)
    assert second.cpu_share == 0.0                    # not (5100 - 370) ticks in 1 s
    assert second.cmdline == "/usr/bin/other --x"     # static facts read again
    assert (second.cgroup, second.container_id) == ("/system.slice/other.service", None)
    # A third sweep rates the new identity against its own first sight.
    set_stat(root, 100, f14=5000 + HZ // 2, f15=100, f22=90000)
    (pdir / "schedstat").write_text("9000000000 0 1\n")
    clock.now += 1.0
    assert by_pid(sampler.sweep())[100].cpu_share == pytest.approx(0.5)


def test_static_facts_are_read_once_per_identity(root: Path) -> None:
    sampler = ProcessSampler(HostPaths(str(root)), clock=Clock())
    sampler.sweep()
    (root / "proc" / "100" / "cmdline").write_bytes(b"changed\0")
    (root / "proc" / "100" / "cgroup").write_text("0::/elsewhere\n")
    s = by_pid(sampler.sweep())[100]
    assert s.cmdline == "nginx: worker process"
    assert s.cgroup.startswith("/docker/")


def test_vanished_processes_are_skipped_and_forgotten(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), clock=clock)
    sampler.sweep()
    assert sampler.known == 5
    shutil.rmtree(root / "proc" / "300")
    (root / "proc" / "400" / "status").unlink()        # gone between stat and status
    (root / "proc" / "100" / "stat").write_text("")     # exited: empty read
    clock.now += 1.0
    assert sorted(by_pid(sampler.sweep())) == [2, 200]
    assert sampler.known == 2
    # A thread that vanished between listdir and its read is left out, the process kept.
    shutil.rmtree(root / "proc" / "200" / "task" / "202")
    clock.now += 1.0
    s = by_pid(sampler.sweep())[200]
    assert s.vol_ctx == 40 + 1800


def test_renamed_process_keeps_its_identity(root: Path) -> None:
    clock = Clock()
    sampler = ProcessSampler(HostPaths(str(root)), clock=clock)
    sampler.sweep()
    stat = root / "proc" / "100" / "stat"
    stat.write_text(stat.read_text().replace("(nginx)", "(nginx: master)"))
    clock.now += 1.0
    s = by_pid(sampler.sweep())[100]
    assert s.name == "nginx: master" and s.start_time == 5000
    assert s.cmdline == "nginx: worker process"


def test_bad_thread_detail() -> None:
    with pytest.raises(ValueError):
        ProcessSampler(LIVE, thread_detail="some")  # type: ignore[arg-type]


def test_empty_root(tmp_path: Path) -> None:
    assert ProcessSampler(HostPaths(str(tmp_path)), clock=Clock()).sweep() == []
