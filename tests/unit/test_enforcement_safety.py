"""Protection, scope and override detection, on made-up processes and a fake /proc."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.enforcement import process as process_module
from agents.enforcement.process import ProcessSettings, apply_settings
from agents.enforcement.safety import (Guard, Scope, detect_override, is_protected, protection,
                                       override_reason)
from pipeline.procfs import PF_KTHREAD, Stat
from pipeline.hostpaths import HostPaths


def stat(pid: int, comm: str = "worker", ppid: int = 1000, flags: int = 0) -> Stat:
    return Stat(pid=pid, comm=comm, state="S", ppid=ppid, flags=flags, utime=0, stime=0,
                nice=0, num_threads=1, start_time=4242, vsize=0, rss_pages=0, processor=0,
                rt_priority=0, policy=0)


# --- protection ------------------------------------------------------------------------------

def test_pid_1_and_kernel_threads_are_protected() -> None:
    assert is_protected(1, stat(1, "systemd", ppid=0), (), ()) == "protected: PID 1 (init)"
    assert is_protected(2, stat(2, "kthreadd", ppid=0), (), ()).startswith(
        "protected: kernel thread")
    assert is_protected(77, stat(77, "kworker/0:1", flags=PF_KTHREAD), (), ()) == \
        "protected: kernel thread (kworker/0:1)"
    # a child of kthreadd is a kernel thread even if the flag were missing
    assert is_protected(78, stat(78, "rcu_gp", ppid=2), (), ()) is not None
    # without any stat, pids 1 and 2 are still recognised
    assert is_protected(1, None, (), ()) is not None


def test_patterns_match_name_or_command_line() -> None:
    patterns = [r"^sshd$", r"postgres: .*checkpointer"]
    assert is_protected(500, stat(500, "sshd"), patterns, ()) == "protected: matches '^sshd$'"
    assert is_protected(501, stat(501, "sshd-session"), patterns, ()) is None
    assert is_protected(502, stat(502, "postgres"), patterns, (),
                        cmdline="postgres: checkpointer") is not None
    assert is_protected(503, stat(503, "postgres"), patterns, (),
                        cmdline="postgres: walwriter") is None


def test_own_processes_may_only_be_placed() -> None:
    found = protection(600, stat(600, "python"), (), {600, 601})
    assert found is not None and found.affinity_allowed
    assert "corelane's own" in found.reason
    assert protection(602, stat(602, "python"), (), {600, 601}) is None
    # a pattern is stronger than "own": no affinity either
    strict = protection(600, stat(600, "java"), ["java"], {600})
    assert strict is not None and not strict.affinity_allowed


def test_a_bad_pattern_is_reported_clearly() -> None:
    with pytest.raises(ValueError, match=r"protected pattern '\(unclosed' is not a regular"):
        Guard(protected_patterns=("(unclosed",))


# --- scope -----------------------------------------------------------------------------------

def test_scope_all_and_empty() -> None:
    assert Scope.all().allows(123)
    assert not Scope().allows(123, "anything", "anything", "/anything")


def test_scope_pids_patterns_and_cgroup_prefixes() -> None:
    scope = Scope(pids=frozenset({10}), patterns=("^nginx",),
                  cgroup_prefixes=("/docker/abc",))
    assert scope.allows(10)
    assert scope.allows(11, name="nginx")
    assert scope.allows(12, cmdline="nginx: worker process")
    assert not scope.allows(13, name="postgres")
    assert scope.allows(14, cgroup="/docker/abc")
    assert scope.allows(15, cgroup="/docker/abc/sub")
    # a prefix is a path, not a string prefix: /docker/abcdef is another cgroup
    assert not scope.allows(16, cgroup="/docker/abcdef")


def test_scope_from_config() -> None:
    assert Scope.from_config("all").everything
    assert Scope.from_config(None).everything
    scope = Scope.from_config({"pids": [1, "2"], "patterns": ["x"], "cgroups": ["/a"]})
    assert scope.pids == {1, 2} and scope.patterns == ("x",) and scope.cgroup_prefixes == ("/a",)
    with pytest.raises(ValueError, match="unknown scope keys"):
        Scope.from_config({"pid": [1]})
    with pytest.raises(ValueError, match="'all' or a mapping"):
        Scope.from_config("some")


def test_containers_are_in_scope_by_name_or_id_only() -> None:
    scope = Scope.from_config({"patterns": ["^web"], "containers": ["^cle-"]})
    assert scope.allows_container("ab" * 32, "cle-hog-1")
    assert scope.allows_container("cle-" + "0" * 60, "")
    assert not scope.allows_container("ab" * 32, "web-frontend")    # process patterns don't
    assert Scope.all().allows_container("ab" * 32, "anything")
    assert not Scope.from_config({"pids": [1]}).allows_container("ab" * 32, "x")


# --- the guard over a fake /proc, and no write for what it refuses ----------------------------

def fake_proc(root: Path, pid: int, comm: str, cmdline: str, cgroup: str, flags: int = 0,
              ppid: int = 1000) -> int:
    start = 4242
    folder = root / "proc" / str(pid)
    (folder / "task" / str(pid)).mkdir(parents=True)
    fields = ["S", str(ppid), "0", "0", "0", "0", str(flags)] + ["0"] * 9 + ["0", "1", "0",
                                                                             str(start)]
    fields += ["0"] * 20
    (folder / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (folder / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (folder / "cgroup").write_text(f"4:cpuset:{cgroup}\n0::{cgroup}\n")
    return start


@pytest.fixture
def no_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("sched_setaffinity", "setpriority", "sched_setscheduler"):
        monkeypatch.setattr(os, name, lambda *a, _n=name: calls.append(_n))
    monkeypatch.setattr(process_module, "_ioprio_set", lambda *a: calls.append("ioprio_set"))
    return calls


def test_guard_reads_what_it_needs_from_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, 300, "nginx", "nginx: worker process", "/docker/abc")
    proc = str(tmp_path / "proc")
    st = stat(300, "nginx")
    assert Guard(scope=Scope(cgroup_prefixes=("/docker/abc",))).check(300, st, proc) is None
    refused = Guard(scope=Scope(cgroup_prefixes=("/docker/zzz",))).check(300, st, proc)
    assert refused is not None and refused.reason == "out of scope"
    by_cmdline = Guard(protected_patterns=("worker process",)).check(300, st, proc)
    assert by_cmdline is not None and not by_cmdline.affinity_allowed


def test_own_processes_get_an_affinity_whatever_the_scope(tmp_path: Path) -> None:
    fake_proc(tmp_path, 300, "java", "java kafka.Kafka", "/")
    proc = str(tmp_path / "proc")
    narrow = Scope(patterns=("^nothing-here$",))
    found = Guard(scope=narrow, own_pids=frozenset({300})).check(300, stat(300, "java"), proc)
    assert found is not None and found.affinity_allowed
    other = Guard(scope=narrow).check(300, stat(300, "java"), proc)
    assert other is not None and other.reason == "out of scope"


def test_apply_refuses_protected_targets_before_any_write(tmp_path: Path,
                                                          no_writes: list[str]) -> None:
    kthread_start = fake_proc(tmp_path, 50, "kworker/1:2", "", "/", flags=PF_KTHREAD, ppid=2)
    other_start = fake_proc(tmp_path, 60, "redis-server", "redis-server *:6379", "/")
    wanted = ProcessSettings(cpus="0", nice=19, policy="idle", ioclass="idle")
    result = apply_settings(50, kthread_start, wanted, paths=HostPaths(str(tmp_path)))
    assert (result.outcome, result.reason) == ("skipped", "protected: kernel thread (kworker/1:2)")
    result = apply_settings(60, other_start, wanted, paths=HostPaths(str(tmp_path)),
                            guard=Guard(protected_patterns=("redis",)))
    assert (result.outcome, result.reason) == ("skipped", "protected: matches 'redis'")
    result = apply_settings(60, other_start + 1, wanted, paths=HostPaths(str(tmp_path)))
    assert result.outcome == "skipped" and result.reason.startswith("pid reused")
    result = apply_settings(61, other_start, wanted, paths=HostPaths(str(tmp_path)))
    assert (result.outcome, result.reason) == ("skipped", "gone")
    assert no_writes == []


# --- operator override -----------------------------------------------------------------------

def test_override_detection() -> None:
    applied = {"cpus": "2-3", "nice": 10, "ioclass": "idle", "iolevel": 0, "policy": "batch",
               "rt_priority": None}
    same = {"cpus": "2,3", "nice": 10, "ioclass": "idle", "iolevel": 7, "policy": "batch",
            "rt_priority": 0, "threads": 4}
    assert detect_override(applied, same) == {}
    changed = {**same, "nice": 0, "cpus": "0-3"}
    assert detect_override(applied, changed) == {"nice": (10, 0), "cpus": ("2-3", "0-3")}
    assert override_reason(detect_override(applied, changed)) == \
        "changed by someone else: cpus '2-3' -> '0-3', nice 10 -> 0"
    # fields corelane did not set are nobody's business here
    assert detect_override({"cpus": "1"}, {"cpus": "1", "nice": 19}) == {}
    # the level matters under best effort
    assert detect_override({"ioclass": "be", "iolevel": 4}, {"ioclass": "be", "iolevel": 0}) \
        == {"iolevel": (4, 0)}


def test_override_detection_for_containers() -> None:
    assert detect_override({"cpuset": "1", "cpu_shares": 1024},
                           {"cpuset": "1", "cpu_shares": 0, "pid": 9}) == {}
    assert detect_override({"cpuset": "1", "cpu_shares": 512},
                           {"cpuset": "0-1", "cpu_shares": 512}) == {"cpuset": ("1", "0-1")}
