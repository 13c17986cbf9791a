"""corelane up on the real host: a latency-critical process beside CPU hogs, classified by
behaviour, placed by the allocator and enforced on every thread; all of it undone on stop.
The scope is narrowed to the processes this test starts."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from agents.enforcement.cpu import read_limit
from bench.workloads import start_mix
from pipeline.hostpaths import LIVE
from pipeline.procfs import list_tids, read_stat, read_status
from pipeline.topology import cpulist_parse
from storage.history import HistoryStore
from storage.query import QueryEngine
from support.corelane_instance import Instance

pytestmark = pytest.mark.integration
PROC = LIVE.proc
WORKLOAD_MARK = "CLW_PATH"  # in every generator process's command line, and nowhere else


def thread_settings(pid: int) -> list[tuple[list[int], int, int]]:
    """(allowed cpus, nice, policy) of every thread, read from /proc."""
    out = []
    for tid in list_tids(PROC, pid):
        status, stat = read_status(PROC, pid, tid), read_stat(PROC, pid, tid)
        if status is not None and stat is not None:
            out.append((cpulist_parse(status.cpus_allowed_list), stat.nice, stat.policy))
    return out


def history_rows(db: Path, sql: str) -> list:
    """Rows of a read-only query over a stopped instance's history."""
    with HistoryStore.open_readonly(db) as store:
        return QueryEngine(store.connection, 10, 1000).run(sql).rows


async def test_latency_work_isolated_from_hogs_and_restored(kafka_bootstrap: str,
                                                            tmp_path: Path) -> None:
    seed = random.randrange(10**6)
    original = sorted(os.sched_getaffinity(0))
    idle_limits = {c: read_limit(c) for c in original}
    # Scope: only the workload generator's processes (their shared bootstrap command line),
    # so corelane can start first: hogs started before it would only slow its start.
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-enf-{seed}.", dry_run=False,
                        collector="{interval_s: 1.0, containers: false}",
                        allocator="{interval_s: 1.0}",
                        # isolation itself is what this test checks, not the closed loop
                        closed_loop="{enabled: false, initial: exclusive_poll}",
                        applier=f"{{scope: {{patterns: ['{WORKLOAD_MARK}']}}}}")
    corelane.start()
    corelane.wait_recording()
    with start_mix({"latency_critical": 1, "compute_batch": 2}, seed=seed,
                   overrides={"latency_critical": {"mt": True}}) as mix:
        mains = [w for w in mix.workloads if w.role == "main"]
        probe = next(w for w in mains if w.label == "latency_critical")
        hogs = [w for w in mains if w.label == "compute_batch"]
        try:
            def isolated() -> bool:
                probe_threads = thread_settings(probe.pid)
                cpus = {tuple(c) for c, _, _ in probe_threads}
                if len(cpus) != 1 or list(next(iter(cpus))) == original:
                    return False
                mine = set(next(iter(cpus)))
                return all(not set(c) & mine and (nice, policy) == (10, 3)
                           for hog in hogs for c, nice, policy in thread_settings(hog.pid))

            def wait_isolated() -> None:
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline and not isolated():
                    time.sleep(0.5)

            wait_isolated()
            # Every thread of the latency-critical process on its own cores; the hogs, on
            # every thread too, elsewhere, with SCHED_BATCH and nice 10 (the low tier).
            probe_threads = thread_settings(probe.pid)
            assert len(probe_threads) > 1  # the worker-thread variant
            probe_cpus = set(probe_threads[0][0])
            assert probe_cpus and probe_cpus != set(original), (seed, probe_threads)
            assert all(set(cpus) == probe_cpus for cpus, _, _ in probe_threads), probe_threads
            for hog in hogs:
                for cpus, nice, policy in thread_settings(hog.pid):
                    assert not set(cpus) & probe_cpus, (seed, hog.pid, cpus, probe_cpus)
                    assert (nice, policy) == (10, 3), (seed, hog.pid, nice, policy)
            # Its cores poll when idle (where the kernel has the limit at all); no other does.
            if None not in idle_limits.values():
                assert {read_limit(c) for c in probe_cpus} == {"n/a"}
                assert all(read_limit(c) == idle_limits[c] for c in original
                           if c not in probe_cpus)

            # status reads the history, which trails the live plan by up to a flush.
            deadline = time.monotonic() + 15
            while True:
                status = corelane.run("status")
                assert status.returncode == 0, status.stderr
                if "ultra_critical" in status.stdout or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert "ultra_critical" in status.stdout and probe.name in status.stdout, \
                status.stdout
        finally:
            if corelane.proc is not None and corelane.proc.poll() is None:
                corelane.terminate()

        # Each change is in the history as an enforcement with before and after.
        rows = history_rows(corelane.db, f"SELECT before, after FROM enforcements WHERE "
                                         f"pid = {probe.pid} AND outcome = 'applied' AND reason = ''")
        assert rows, "no applied enforcement recorded for the latency-critical process"

        # On stop, everything corelane changed is back as it was.
        def restored() -> bool:
            return all(cpus == original and nice == 0 and policy == 0
                       for w in [probe, *hogs] for cpus, nice, policy in thread_settings(w.pid))
        assert restored(), [thread_settings(w.pid) for w in [probe, *hogs]]
        assert {c: read_limit(c) for c in original} == idle_limits

        # A crash leaves the changes in place; `corelane revert` puts them back from the
        # journal.
        corelane.start()
        try:
            corelane.wait_recording()
            wait_isolated()
            assert isolated()
        finally:
            corelane.kill()
        assert not restored()
        reverted = corelane.run("revert")
        assert reverted.returncode == 0, reverted.stderr
        assert restored(), [thread_settings(w.pid) for w in [probe, *hogs]]
        assert {c: read_limit(c) for c in original} == idle_limits


def _container_cpus(docker_engine, container_id: str) -> tuple[str, str]:
    """(the engine's cpuset, the container's main process's Cpus_allowed_list)."""
    attrs = docker_engine.client.api.inspect_container(container_id)
    status = read_status(PROC, attrs["State"]["Pid"])
    assert status is not None, f"the container's process {attrs['State']['Pid']} is gone"
    return attrs["HostConfig"]["CpusetCpus"] or "", status.cpus_allowed_list


async def test_a_container_is_kept_off_the_critical_cores_and_restored(
        kafka_bootstrap: str, tmp_path: Path, docker_engine, docker_containers) -> None:
    seed = random.randrange(10**6)
    name = f"corelane-test-hog-{seed}"
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    # Scope: the generator's processes and this one container, through the real engine.
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-ctr-{seed}.", dry_run=False,
                        collector=f"{{interval_s: 1.0, containers: true, "
                                  f"docker_host: '{docker_engine.host}'}}",
                        allocator="{interval_s: 1.0}",
                        closed_loop="{enabled: false, initial: exclusive_poll}",
                        applier=f"{{scope: {{patterns: ['{WORKLOAD_MARK}'], "
                                f"containers: ['^{name}$']}}}}")
    corelane.start()
    corelane.wait_recording()
    container = docker_containers(["sh", "-c", "while :; do :; done"], name=name)
    assert _container_cpus(docker_engine, container.id) == ("", online)
    with start_mix({"latency_critical": 1}, seed=seed) as mix:
        probe = next(w for w in mix.workloads if w.role == "main")
        try:
            def placed() -> tuple[set[int], set[int]] | None:
                probe_cpus = {tuple(c) for c, _, _ in thread_settings(probe.pid)}
                cpuset, allowed = _container_cpus(docker_engine, container.id)
                if len(probe_cpus) != 1 or not cpuset:
                    return None
                mine, theirs = set(next(iter(probe_cpus))), set(cpulist_parse(cpuset))
                if mine & theirs or set(cpulist_parse(allowed)) != theirs:
                    return None
                return mine, theirs

            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and placed() is None:
                time.sleep(0.5)
            # The container's cgroup, set through the engine, keeps its process off the
            # latency-critical process's cores.
            assert placed() is not None, (seed, _container_cpus(docker_engine, container.id),
                                          thread_settings(probe.pid), corelane.log_text()[-3000:])
        finally:
            if corelane.proc is not None and corelane.proc.poll() is None:
                corelane.terminate()

        rows = history_rows(corelane.db, f"SELECT after FROM enforcements WHERE target = "
                                         f"'container' AND container_id = '{container.id}' "
                                         f"AND outcome = 'applied'")
        assert rows, "no applied enforcement recorded for the container"
        # On stop, the process may run anywhere again. (The engine cannot be given back an
        # empty cpuset: "every CPU" is written as the online list.)
        cpuset, allowed = _container_cpus(docker_engine, container.id)
        assert cpuset in ("", online) and allowed == online, (cpuset, allowed)
