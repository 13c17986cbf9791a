"""Tier limits on this machine's real cgroup file systems: a CPU hog in a capped tier uses
no more than its quota, a memory hog in a tier with a memory limit is held, a process in
someone else's limited group is never moved, and stop and revert put every moved process
back into its own cgroups.

Every process here is started by the test and ended by its pid; the groups are made under a
root named for the test run and removed at the end.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.enforcement import Journal, enforce_membership, restorer
from agents.enforcement.cgroup import (GroupLimits, apply_membership, group_path,
                                       remove_tier_groups, write_tier_group)
from agents.enforcement.inheritance import demoted_parents, reset_child
from pipeline import cgroups, procfs
from pipeline.hostpaths import LIVE
from support.corelane_instance import ROOT, Instance
from support.ports import free_port
from support.waiting import wait_for

pytestmark = pytest.mark.integration

LAYOUT = cgroups.read_layout(LIVE)
needs_cpu = pytest.mark.skipif(LAYOUT.hierarchy("cpu") is None or os.geteuid() != 0,
                               reason="needs the cpu controller, writable (root)")
needs_memory = pytest.mark.skipif(LAYOUT.hierarchy("memory") is None or os.geteuid() != 0,
                                  reason="needs the memory controller, writable (root)")

HOG = "import sys\nwhile True:\n    pass\n"
# burns a core and remakes a written 4 MiB buffer each second: cgroup v1 charges a page to
# the group its process is in when the page is first touched, and keeps it there on a move
# (this kernel no longer moves charges), so only memory touched after the move counts
HOG_TOUCHING = """
import time
buffer, made = b"", 0.0
while True:
    if time.monotonic() - made > 1.0:
        buffer, made = bytes(range(256)) * 16384, time.monotonic()
"""
SLEEPER = "import sys, time\ntime.sleep(600)\n"
# burns a core; told so on stdin, takes 8 MB more every 20 ms (touched, so it is resident)
MEMORY_HOG = """
import sys, threading, time
def burn():
    while True:
        pass
threading.Thread(target=burn, daemon=True).start()
sys.stdin.readline()
held = []
while True:
    held.append(bytearray(8 << 20))
    print(len(held) * 8, flush=True)
    time.sleep(0.02)
"""


def cpu_seconds(pid: int) -> float:
    stat = procfs.read_stat("/proc", pid)
    assert stat is not None, f"process {pid} is gone"
    return (stat.utime + stat.stime) / os.sysconf("SC_CLK_TCK")


def membership(pid: int) -> dict[str, str]:
    groups = cgroups.process_cgroups(LIVE, pid)
    assert groups is not None, f"process {pid} is gone"
    return {c: cgroups.cgroup_of(LAYOUT, groups, c) or "" for c in ("cpu", "memory")
            if LAYOUT.hierarchy(c) is not None}


@pytest.fixture
def root() -> Iterator[str]:
    """A cgroup root of this test's own, removed at the end."""
    name = f"corelane-test-{os.getpid()}-{random.randrange(10**6)}"
    yield name
    remove_tier_groups(LAYOUT, name)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def start(procs: list[subprocess.Popen], code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def start_time(pid: int) -> int:
    stat = procfs.read_stat("/proc", pid)
    assert stat is not None
    return stat.start_time


@needs_cpu
def test_a_process_in_a_group_with_limits_of_its_own_is_never_moved(
        root: str, started: list[subprocess.Popen]) -> None:
    cpu = LAYOUT.hierarchy("cpu")
    assert cpu is not None
    theirs = f"/{root}-theirs"
    folder = cpu.folder(theirs)
    os.makedirs(folder)
    try:
        limit = "cpu.cfs_quota_us" if cpu.version == 1 else "cpu.max"
        Path(folder, limit).write_text("50000" if cpu.version == 1 else "50000 100000")
        proc = start(started, SLEEPER)
        Path(folder, "cgroup.procs").write_text(str(proc.pid))
        assert membership(proc.pid)["cpu"] == theirs
        assert write_tier_group(LAYOUT, root, "low", GroupLimits(cpu_weight=50)).applied
        result = apply_membership(proc.pid, start_time(proc.pid),
                                  {"cpu": group_path(root, "low")}, layout=LAYOUT, root=root)
        assert result.outcome == "skipped", result
        assert "has limits of its own" in result.reason and limit in result.reason
        assert membership(proc.pid)["cpu"] == theirs
        # and one named in applier.protected_cgroups, limits or not
        Path(folder, limit).write_text("-1" if cpu.version == 1 else "max 100000")
        result = apply_membership(proc.pid, start_time(proc.pid),
                                  {"cpu": group_path(root, "low")}, layout=LAYOUT, root=root,
                                  protected=[theirs])
        assert result.outcome == "skipped" and "protected cgroup" in result.reason, result
        assert membership(proc.pid)["cpu"] == theirs
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
        started.clear()
        os.rmdir(folder)


@needs_cpu
def test_a_moved_process_is_journalled_and_restored_to_its_own_cgroups(
        root: str, started: list[subprocess.Popen], tmp_path: Path) -> None:
    proc = start(started, HOG)
    own = membership(proc.pid)
    assert write_tier_group(LAYOUT, root, "background",
                            GroupLimits(cpu_weight=10, cpu_quota_us=20000)).applied
    with Journal(tmp_path / "journal") as journal:
        result = enforce_membership(journal, proc.pid, start_time(proc.pid),
                                    {"cpu": group_path(root, "background")}, layout=LAYOUT,
                                    root=root)
        assert result is not None and result.applied and result.changes == 1, result
        assert membership(proc.pid)["cpu"] == group_path(root, "background")
        restored = journal.restore_all(restorer())
    assert [r.outcome for r in restored] == ["applied"], restored
    assert membership(proc.pid) == own


# prints the pid of a sleeping child each time it reads a line
FORKER = """
import subprocess, sys
for line in sys.stdin:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
"""


@needs_cpu
def test_a_child_of_a_parent_only_moved_into_a_capped_group_leaves_that_group(
        root: str, started: list[subprocess.Popen], tmp_path: Path) -> None:
    """A parent corelane moved into a capped tier group but left its priorities: its child
    inherits the group at fork, and is taken out of it, back to the parent's own groups."""
    parent = start(started, FORKER)
    own = membership(parent.pid)
    group = group_path(root, "low")
    assert write_tier_group(LAYOUT, root, "low", GroupLimits(cpu_quota_us=50_000)).applied
    with Journal(tmp_path / "journal") as journal:
        moved = enforce_membership(journal, parent.pid, start_time(parent.pid),
                                   {"cpu": group}, layout=LAYOUT, root=root)
        assert moved is not None and moved.applied and membership(parent.pid)["cpu"] == group
        parents = demoted_parents(journal.entries())
        assert set(parents) == {parent.pid}              # moved only: no priority changed
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        child = int(parent.stdout.readline())
        try:
            assert membership(child)["cpu"] == group             # inherited at fork
            result = reset_child(journal, child, parents[parent.pid], None, layout=LAYOUT)
            assert result is not None and result.applied, result
            assert "moved into a tier group" in result.reason, result.reason
            assert membership(child) == own
        finally:
            os.kill(child, signal.SIGKILL)
        journal.restore_all(restorer())
    assert membership(parent.pid) == own


@needs_memory
def test_a_memory_hog_in_a_tier_with_a_memory_limit_is_held(
        root: str, started: list[subprocess.Popen]) -> None:
    memory = LAYOUT.hierarchy("memory")
    assert memory is not None
    limit = 64 << 20
    assert write_tier_group(LAYOUT, root, "low",
                            GroupLimits(memory_max=limit, swap=False)).applied
    hog = start(started, MEMORY_HOG)
    moved = apply_membership(hog.pid, start_time(hog.pid), {"memory": group_path(root, "low")},
                             layout=LAYOUT, root=root)
    assert moved.applied, moved
    assert hog.stdin is not None and hog.stdout is not None
    hog.stdin.write("grow\n")
    hog.stdin.flush()
    asked = [int(line) for line in hog.stdout]            # until the kernel ends it
    hog.wait(30)
    assert hog.returncode == -9, (hog.returncode, asked[-3:])
    assert max(asked, default=0) < 2 * (limit >> 20), asked[-3:]
    folder = memory.folder(group_path(root, "low"))
    if memory.version == 1:
        # this kernel leaves failcnt at 0 on a memcg OOM; oom_control counts the kill
        assert "oom_kill 1" in Path(folder, "memory.oom_control").read_text()
        assert int(Path(folder, "memory.max_usage_in_bytes").read_text()) <= limit
    else:
        events = dict(line.split() for line in Path(folder, "memory.events").read_text().splitlines())
        assert int(events["max"]) > 0 and int(events["oom_kill"]) >= 1


@needs_cpu
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two cores")
def test_a_cpu_hog_in_a_capped_tier_uses_no_more_than_its_quota_and_goes_back_on_stop(
        kafka_bootstrap: str, tmp_path: Path, started: list[subprocess.Popen]) -> None:
    mark = f"TLT{random.randrange(10**8)}"
    root = f"corelane-test-{os.getpid()}-{random.randrange(10**6)}"
    quota = 0.5
    corelane = Instance(
        tmp_path, kafka_bootstrap, f"e2e-limits-{os.getpid()}.", dry_run=False,
        collector="{interval_s: 0.5, containers: false}",
        allocator="{interval_s: 0.5, policy: {tiers: {low: {nice: 10, policy: batch, "
                  "limits: {cpu_weight: 50, cpu_quota: %s, memory_high: 1GiB}}}}}" % quota,
        closed_loop="{strategies: [shared], initial: shared}",
        applier=f"{{scope: {{patterns: ['{mark}']}}, cgroup_root: {root}}}")
    corelane.start()
    try:
        corelane.wait_recording()
        capped = start(started, HOG_TOUCHING, mark)
        free = start(started, HOG)                       # out of scope: the baseline
        own = membership(capped.pid)
        group = group_path(root, "low")
        wait_for("the hog's move into the low group",
                 lambda: membership(capped.pid)["cpu"] == group, timeout_s=60)
        c0, f0, t0 = cpu_seconds(capped.pid), cpu_seconds(free.pid), time.monotonic()
        time.sleep(10)
        c1, f1, t1 = cpu_seconds(capped.pid), cpu_seconds(free.pid), time.monotonic()
        used, baseline = (c1 - c0) / (t1 - t0), (f1 - f0) / (t1 - t0)
        print(f"quota {quota} cores: the capped hog used {used:.3f} cores, "
              f"the free one {baseline:.3f}")
        assert used <= quota * 1.05, (used, baseline)
        assert baseline > quota, (used, baseline)       # the cap, not a busy machine
        rows = json.loads(corelane.run("query", "--format", "json",
                                       "SELECT cgroup, reason FROM decisions WHERE target = "
                                       "'cgroup' AND tier = 'low' LIMIT 1").stdout)["rows"]
        assert rows and rows[0][0] == "low" and "cpu quota 0.5 cores" in rows[0][1], rows

        def low_in_status() -> str | None:
            done = corelane.run("status", "--format", "json")
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)["limits"].get("low")
        low = wait_for("status showing the low tier's limits", low_in_status, timeout_s=20)
        assert low == "cpu weight 50, cpu quota 0.5 cores, memory high 1.0 GiB", low
        shown = corelane.run("status")
        assert "limits: low: cpu weight 50, cpu quota 0.5 cores" in " ".join(
            shown.stdout.split()), shown.stdout

        def low_memory_used() -> str | None:
            done = corelane.run("status", "--format", "json")
            plan = json.loads(done.stdout)["plan"]
            rows = [dict(zip(plan["columns"], row)) for row in plan["rows"]]
            used = next((r["memory_used"] for r in rows if r["tier"] == "low"), None)
            return used if used and used.endswith("MiB") else None
        # the low group's memory use, as its memory controller counts it (the hog's buffer
        # of 4 MiB, made after the move, and what Python touches around it)
        used_text = wait_for("status showing the low group's memory use in MiB",
                             low_memory_used, timeout_s=20)
        assert 4.0 <= float(used_text.split()[0]) < 1024, used_text
    finally:
        log = corelane.terminate()
    assert membership(capped.pid) == own, log[-3000:]
    cpu = LAYOUT.hierarchy("cpu")
    assert cpu is not None and not os.path.exists(cpu.folder(f"/{root}")), log[-3000:]
    shutil.rmtree(tmp_path / "journal", ignore_errors=True)


@needs_cpu
def test_revert_puts_moved_processes_back_and_removes_the_groups(
        root: str, started: list[subprocess.Popen], tmp_path: Path) -> None:
    proc = start(started, SLEEPER)
    own = membership(proc.pid)
    assert write_tier_group(LAYOUT, root, "low", GroupLimits(cpu_weight=50)).applied
    with Journal(tmp_path / "journal") as journal:            # as a crashed instance left it
        moved = enforce_membership(journal, proc.pid, start_time(proc.pid),
                                   {"cpu": group_path(root, "low")}, layout=LAYOUT, root=root)
        assert moved is not None and moved.applied, moved
    config = tmp_path / "corelane.yml"
    config.write_text(f"applier: {{cgroup_root: {root}}}\n")
    done = subprocess.run([sys.executable, "-m", "corelane", "revert"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "CORELANE_HOME": str(tmp_path),
                               "CORELANE_CONFIG": str(config),
                               "CORELANE_API": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 0, done.stderr
    assert membership(proc.pid) == own, done.stdout
    cpu = LAYOUT.hierarchy("cpu")
    assert cpu is not None and not os.path.exists(cpu.folder(f"/{root}")), done.stdout
    said = done.stdout + done.stderr
    assert f"process {proc.pid}: applied" in said and "removed cgroup" in said, said
