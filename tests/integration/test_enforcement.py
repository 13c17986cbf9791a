"""The enforcement primitives on the real host: processes and containers these tests start.

Every process changed here is a child of the test, ended by its pid; every container is one
the test created. The expected values are read straight from /proc (and the I/O priority
through psutil), not through the code under test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agents.enforcement import (Guard, Identity, Journal, ProcessSettings, Scope,
                                apply_settings, enforce_container, enforce_process,
                                read_container, restorer)
from agents.enforcement import process as process_module
from pipeline import procfs

pytestmark = pytest.mark.integration

NOBODY = 65534
THREADED = """
import sys, threading, time
def busy():
    end = time.monotonic() + 600
    while time.monotonic() < end:
        sum(range(2000))
        time.sleep(0.001)         # busy, but leaves the other tests' CPU mostly alone
threading.Thread(target=busy, daemon=True).start()
for _ in range(2):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


# --- independent readers ---------------------------------------------------------------------

def task_ids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def thread_view(pid: int, tid: int) -> dict[str, object]:
    """What the kernel says about one thread, without the code under test."""
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    cpus = next(line.split(":", 1)[1].strip() for line in status.splitlines()
                if line.startswith("Cpus_allowed_list:"))
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    ioclass, iolevel = psutil.Process(tid).ionice()
    return {"cpus": cpus, "nice": int(fields[16]), "policy": int(fields[38]),
            "ioclass": int(ioclass), "iolevel": int(iolevel)}


def views(pid: int) -> dict[int, dict[str, object]]:
    return {tid: thread_view(pid, tid) for tid in task_ids(pid)}


def start_time_of(pid: int) -> int:
    stat = procfs.read_stat("/proc", pid)
    assert stat is not None, f"process {pid} is gone"
    return stat.start_time


def end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture
def threaded() -> Iterator[subprocess.Popen[bytes]]:
    """A Python process with a busy thread and two sleeping ones (4 tasks with the leader)."""
    process = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        assert len(task_ids(process.pid)) == 4
        yield process
    finally:
        end(process)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal") as j:
        yield j


def guard_for(*pids: int) -> Guard:
    # the scope the applier would get in a test: only what the test started
    return Guard(scope=Scope(pids=frozenset(pids)))


two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="moving work between cores needs at least two CPUs")


# --- processes -------------------------------------------------------------------------------

@two_cpus
def test_every_thread_gets_the_settings_and_the_journal_restores_them(
        threaded: subprocess.Popen[bytes], journal: Journal) -> None:
    pid = threaded.pid
    start = start_time_of(pid)
    original = views(pid)
    assert {v["policy"] for v in original.values()} == {0}
    guard = guard_for(pid)

    batch = ProcessSettings(cpus="1", nice=10, ioclass="idle", policy="batch")
    result = enforce_process(journal, pid, start, batch, guard=guard)
    assert result.outcome == "applied", result.reason
    assert result.changes > 0
    for tid, view in views(pid).items():
        assert view["cpus"] == "1", f"thread {tid}: {view}"
        assert view["nice"] == 10, f"thread {tid}: {view}"
        assert view["policy"] == os.SCHED_BATCH, f"thread {tid}: {view}"
        assert view["ioclass"] == psutil.IOPRIO_CLASS_IDLE, f"thread {tid}: {view}"
    assert result.before["nice"] == 0 and result.before["threads"] == 4
    assert result.after == {"cpus": "1", "nice": 10, "ioclass": "idle", "iolevel": 0,
                            "policy": "batch", "rt_priority": 0, "threads": 4}
    entry = journal.get(Identity.process(pid, start))
    assert entry is not None and entry.original["nice"] == 0 and entry.original["policy"] == "other"
    assert entry.applied == {"cpus": "1", "nice": 10, "ioclass": "idle", "policy": "batch"}

    # the same settings again: nothing is written, and the result says so
    again = enforce_process(journal, pid, start, batch, guard=guard)
    assert again.outcome == "applied" and again.changes == 0
    assert again.reason == "already in place"

    idle = enforce_process(journal, pid, start, ProcessSettings(policy="idle"), guard=guard)
    assert idle.outcome == "applied", idle.reason
    assert {v["policy"] for v in views(pid).values()} == {os.SCHED_IDLE}
    # the journal keeps the first original, not the state between the two applies
    assert journal.get(Identity.process(pid, start)).original["policy"] == "other"

    restored = journal.restore_all(restorer(guard=guard))
    assert [(r.outcome, r.pid) for r in restored] == [("applied", pid)], restored
    assert views(pid) == original
    assert journal.entries() == []


def test_a_setting_no_longer_asked_for_goes_back_to_its_original(
        threaded: subprocess.Popen[bytes], journal: Journal) -> None:
    # A process corelane demoted falls asleep: its plan asks for its cores only now, and
    # its nice, policy and I/O class go back to what they were before corelane.
    pid = threaded.pid
    start = start_time_of(pid)
    original = views(pid)
    guard = guard_for(pid)
    demoted = enforce_process(journal, pid, start, ProcessSettings(
        cpus="0", nice=19, ioclass="idle", policy="idle"), guard=guard)
    assert demoted.outcome == "applied", demoted.reason
    assert {v["policy"] for v in views(pid).values()} == {os.SCHED_IDLE}

    asleep = enforce_process(journal, pid, start, ProcessSettings(cpus="0"), guard=guard)
    assert asleep.outcome == "applied", asleep.reason
    assert "given back" in asleep.reason
    for tid, view in views(pid).items():
        assert view["cpus"] == "0", f"thread {tid}: {view}"
        assert (view["nice"], view["policy"], view["ioclass"]) == (
            original[pid]["nice"], original[pid]["policy"], original[pid]["ioclass"]), view
    assert journal.get(Identity.process(pid, start)).applied == {"cpus": "0"}
    again = enforce_process(journal, pid, start, ProcessSettings(cpus="0"), guard=guard)
    assert again.changes == 0 and "given back" not in again.reason
    journal.restore_all(restorer(guard=guard))
    assert views(pid) == original


@two_cpus
def test_threads_started_during_the_apply_are_caught(journal: Journal) -> None:
    # threads that keep starting threads: one not yet set may start a thread after the
    # thread list was read, so every thread alive after the apply must carry the settings
    code = ("import threading, time\n"
            "def spawn():\n"
            "    for _ in range(50):\n"
            "        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
            "        time.sleep(0.001)\n"
            "for _ in range(4):\n"
            "    threading.Thread(target=spawn, daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        pid = process.pid
        start = start_time_of(pid)
        result = enforce_process(journal, pid, start, ProcessSettings(cpus="1", nice=5),
                                 guard=guard_for(pid))
        assert result.outcome == "applied", result.reason
        time.sleep(0.5)                               # let the spawner finish
        final = views(pid)
        assert len(final) > 100
        wrong = {tid: v for tid, v in final.items() if v["cpus"] != "1" or v["nice"] != 5}
        assert not wrong, f"{len(wrong)} of {len(final)} threads were missed: {wrong}"
        restored = journal.restore_all(restorer(guard=guard_for(pid)))
        assert restored[0].outcome == "applied", restored[0].reason
        assert {v["nice"] for v in views(pid).values()} == {0}
    finally:
        end(process)


def test_a_reused_pid_is_refused(threaded: subprocess.Popen[bytes]) -> None:
    pid = threaded.pid
    start = start_time_of(pid)
    before = views(pid)
    # the same pid with another start time is another process
    result = apply_settings(pid, start - 1, ProcessSettings(nice=10), guard=guard_for(pid))
    assert result.outcome == "skipped"
    assert result.reason.startswith("pid reused"), result.reason
    assert result.changes == 0
    assert views(pid) == before

    # a process that has ended: its identity leads nowhere (gone, or someone else by now)
    short = subprocess.Popen([sys.executable, "-c", "pass"])
    short_start = start_time_of(short.pid) if short.poll() is None else None
    short.wait(10)
    if short_start is not None:
        result = apply_settings(short.pid, short_start, ProcessSettings(nice=10),
                                guard=guard_for(short.pid))
        assert result.outcome == "skipped"
        assert result.reason == "gone" or result.reason.startswith("pid reused"), result.reason


@pytest.fixture
def no_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[object, ...]]]:
    """Every setter the primitives use, replaced by a recorder that changes nothing."""
    calls: list[tuple[str, tuple[object, ...]]] = []

    def recorder(name: str) -> Callable[..., None]:
        return lambda *args: calls.append((name, args))

    monkeypatch.setattr(os, "sched_setaffinity", recorder("sched_setaffinity"))
    monkeypatch.setattr(os, "setpriority", recorder("setpriority"))
    monkeypatch.setattr(os, "sched_setscheduler", recorder("sched_setscheduler"))
    monkeypatch.setattr(process_module, "_ioprio_set", recorder("ioprio_set"))
    return calls


def test_pid_1_and_kernel_threads_are_refused_without_a_syscall(
        no_writes: list[tuple[str, tuple[object, ...]]]) -> None:
    everything = ProcessSettings(cpus="0", nice=19, ioclass="idle", policy="idle")
    # the default guard: scope "all", so protection alone must stop these
    init = apply_settings(1, start_time_of(1), everything)
    assert (init.outcome, init.reason) == ("skipped", "protected: PID 1 (init)")
    kthreadd = apply_settings(2, start_time_of(2), everything)
    assert kthreadd.outcome == "skipped"
    assert kthreadd.reason.startswith("protected: kernel thread"), kthreadd.reason
    # another kernel thread, found by its PF_KTHREAD flag
    worker = next(p for p in procfs.list_pids("/proc") if p > 2
                  and (s := procfs.read_stat("/proc", p)) is not None and s.kernel_thread)
    result = apply_settings(worker, start_time_of(worker), everything)
    assert result.outcome == "skipped" and "kernel thread" in result.reason, result.reason
    assert no_writes == []


@two_cpus
def test_corelane_own_processes_get_an_affinity_but_no_nice(
        threaded: subprocess.Popen[bytes]) -> None:
    # the test's child stands in for corelane's broker: it is named as one of corelane's own
    pid = threaded.pid
    guard = Guard(own_pids=frozenset({pid}), scope=Scope(pids=frozenset({pid})))
    result = apply_settings(pid, start_time_of(pid),
                            ProcessSettings(cpus="1", nice=19, ioclass="idle", policy="idle"),
                            guard=guard)
    assert result.outcome == "applied", result.reason
    assert result.reason == ("protected: corelane's own process (affinity only): "
                             "nice, ioclass, policy left as they were")
    for tid, view in views(pid).items():
        assert view["cpus"] == "1", f"thread {tid}: {view}"
        assert (view["nice"], view["policy"], view["ioclass"]) == (0, 0, 0), f"thread {tid}"


def test_out_of_scope_is_left_alone(threaded: subprocess.Popen[bytes],
                                    no_writes: list[tuple[str, tuple[object, ...]]]) -> None:
    result = apply_settings(threaded.pid, start_time_of(threaded.pid), ProcessSettings(nice=5),
                            guard=Guard(scope=Scope(pids=frozenset({threaded.pid + 100000}))))
    assert (result.outcome, result.reason) == ("skipped", "out of scope")
    assert no_writes == []


def _as_nobody(work: Callable[[], object]) -> object:
    """Run ``work`` in a forked child that has dropped root for nobody; return its result."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                                           # the child: never returns
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = json.dumps(work()).encode()
        except BaseException as exc:                         # report, whatever it was
            payload, status = json.dumps({"error": repr(exc)}).encode(), 1
        os.write(write_end, payload)
        os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(child, 0)
    return json.loads(b"".join(chunks))


def test_an_unprivileged_caller_is_reported_not_permitted(
        threaded: subprocess.Popen[bytes]) -> None:
    root_owned = threaded.pid
    # a process owned by nobody: lowering its nice needs a privilege nobody lacks
    own = subprocess.Popen(["sleep", "300"], user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        root_start, own_start = start_time_of(root_owned), start_time_of(own.pid)
        before_root, before_own = views(root_owned), views(own.pid)
        scope = Guard(scope=Scope(pids=frozenset({root_owned, own.pid})))

        def attempt() -> list[dict[str, object]]:
            results = [apply_settings(own.pid, own_start, ProcessSettings(nice=-5), guard=scope),
                       apply_settings(root_owned, root_start, ProcessSettings(nice=10),
                                      guard=scope)]
            return [{"outcome": r.outcome, "reason": r.reason, "changes": r.changes}
                    for r in results]

        outcome = _as_nobody(attempt)
        assert isinstance(outcome, list), outcome
        for item in outcome:
            assert item["outcome"] == "skipped", item
            assert str(item["reason"]).startswith("not permitted: nice"), item
            assert item["changes"] == 0
        assert views(root_owned) == before_root
        assert views(own.pid) == before_own
    finally:
        end(own)


def test_a_change_made_by_someone_else_is_respected(threaded: subprocess.Popen[bytes],
                                                    journal: Journal) -> None:
    pid, start = threaded.pid, start_time_of(threaded.pid)
    guard = guard_for(pid)
    assert enforce_process(journal, pid, start, ProcessSettings(nice=10), guard=guard).applied
    os.setpriority(os.PRIO_PROCESS, pid, 7)             # an operator renices the leader
    again = enforce_process(journal, pid, start, ProcessSettings(nice=10), guard=guard)
    assert again.outcome == "skipped" and again.changes == 0
    assert again.reason == "changed by someone else: nice 10 -> 7", again.reason
    # and a restore leaves the operator's choice in place
    restored = journal.restore_all(restorer(guard=guard))
    assert restored[0].reason.startswith("changed by someone else"), restored[0]
    assert thread_view(pid, pid)["nice"] == 7
    assert journal.entries() == []


# --- containers ------------------------------------------------------------------------------

def _cpus_allowed(pid: int) -> str:
    status = procfs.read_status("/proc", pid)
    assert status is not None, f"process {pid} is gone"
    return status.cpus_allowed_list


@two_cpus
def test_a_container_cpuset_is_changed_and_restored(docker_engine, docker_containers,
                                                    journal: Journal) -> None:
    client = docker_engine.client
    container = docker_containers(["sleep", "300"])
    pid = container.attrs["State"]["Pid"]
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    assert _cpus_allowed(pid) == online

    result = enforce_container(journal, client, container.id, "1", 512)
    assert result.outcome == "applied", result.reason
    assert result.container_id == container.id
    assert _cpus_allowed(pid) == "1"
    inspect = client.api.inspect_container(container.id)["HostConfig"]
    assert (inspect["CpusetCpus"], inspect["CpuShares"]) == ("1", 512)
    entry = journal.get(Identity.container(container.id))
    assert entry is not None
    assert entry.original == {"cpuset": "", "cpu_shares": 0}
    assert entry.applied == {"cpuset": "1", "cpu_shares": 512}

    again = enforce_container(journal, client, container.id, "1", 512)
    assert (again.outcome, again.reason, again.changes) == ("applied", "already in place", 0)

    restored = journal.restore_all(restorer(client))
    assert [(r.outcome, r.container_id) for r in restored] == [("applied", container.id)], restored
    assert _cpus_allowed(pid) == online
    now = read_container(client, container.id)
    assert now is not None and now["cpu_shares"] in (0, 1024)
    assert journal.entries() == []


def test_a_removed_container_is_skipped_as_gone(docker_engine, docker_containers,
                                                journal: Journal) -> None:
    container = docker_containers(["sleep", "300"])
    docker_engine.client.api.remove_container(container.id, force=True)
    result = enforce_container(journal, docker_engine.client, container.id, "0", None)
    assert (result.outcome, result.reason) == ("skipped", "gone")
    assert journal.entries() == []


def test_a_container_out_of_scope_is_left_alone(docker_engine, docker_containers,
                                                journal: Journal) -> None:
    container = docker_containers(["sleep", "300"])
    narrow = Scope(containers=("^not-this-one$",))
    result = enforce_container(journal, docker_engine.client, container.id, "0", 512,
                               scope=narrow)
    assert (result.outcome, result.reason) == ("skipped", "out of scope")
    inspect = docker_engine.client.api.inspect_container(container.id)["HostConfig"]
    assert (inspect["CpusetCpus"], inspect["CpuShares"]) == ("", 0)
    assert journal.entries() == []
