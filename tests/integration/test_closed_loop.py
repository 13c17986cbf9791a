"""corelane on real processes, enforcing: a child of a demoted parent starts neutral, an
asleep shell keeps its priorities, and the closed loop tries strategies and keeps the one
its own measurements favour, recorded with the figures that decided it.

Every process here is started by the test and ended by its pid; corelane's scope is a
marker in their command lines, so nothing else on the host is changed.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.allocation.strategy import Trial, choose
from pipeline import procfs
from pipeline.hostpaths import LIVE
from pipeline.settings import ClosedLoopSettings
from pipeline.topology import cpulist_parse
from support.corelane_instance import Instance
from support.waiting import wait_for

pytestmark = pytest.mark.integration

# A parent that burns a core in a thread (corelane demotes it as batch work) and, told so
# on stdin, starts a child that sleeps; it prints the child's pid.
SPAWNER = """
import os, subprocess, sys, threading
def burn():
    while True:
        pass
threading.Thread(target=burn, daemon=True).start()
for line in sys.stdin:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
    print(child.pid, flush=True)
"""
SLEEPER = "import time\nwhile True:\n    time.sleep(0.001)\n"   # latency-critical behaviour
SHELL = ["bash", "-c", 'read -r line; echo "$0"']                   # asleep on its stdin


def settings_of(pid: int) -> tuple[int, int, set[int]]:
    """(policy, nice, allowed cpus) of a process's leader thread, from /proc."""
    stat = procfs.read_stat(LIVE.proc, pid)
    status = procfs.read_status(LIVE.proc, pid)
    assert stat is not None and status is not None, f"process {pid} is gone"
    return stat.policy, stat.nice, set(cpulist_parse(status.cpus_allowed_list))




def rows(corelane: Instance, sql: str) -> list[dict]:
    done = corelane.run("query", "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    return [dict(zip(body["columns"], row)) for row in body["rows"]]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two cores")
def test_children_start_neutral_sleepers_keep_theirs_and_the_loop_chooses(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    mark = f"CLT{random.randrange(10**8)}"
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-loop-{os.getpid()}.", dry_run=False,
                        collector="{interval_s: 0.5, containers: false}",
                        allocator="{interval_s: 0.5}",
                        closed_loop="{strategies: [shared, exclusive_poll], initial: shared, "
                                    "trial_checks: 2, explore_every_s: 0.5, settle_s: 3, "
                                    "probe_wakeups: 200}",
                        applier=f"{{scope: {{patterns: ['{mark}']}}}}")
    started: list[subprocess.Popen] = []
    children: list[int] = []

    def start(argv: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                **kw)
        started.append(proc)
        return proc

    corelane.start()
    try:
        corelane.wait_recording()
        spawner = start([sys.executable, "-c", SPAWNER, mark])
        shell = start([*SHELL, mark])
        sleeper = start([sys.executable, "-c", SLEEPER, mark])
        original = {p.pid: settings_of(p.pid) for p in (spawner, shell, sleeper)}
        assert all(pol == 0 and nice == 0 for pol, nice, _ in original.values())

        # The burning parent is demoted: a higher nice or a batch/idle policy.
        def demoted() -> bool:
            pol, nice, _ = settings_of(spawner.pid)
            return nice > 0 or pol in (os.SCHED_BATCH, os.SCHED_IDLE)
        wait_for("the parent's demotion", demoted)

        # Its child inherits that at fork, and is put back to neutral at once.
        assert spawner.stdin is not None and spawner.stdout is not None
        spawner.stdin.write("go\n")
        spawner.stdin.flush()
        child = int(spawner.stdout.readline())
        children.append(child)
        reset = wait_for("corelane's report of the child's reset", lambda: rows(
            corelane, f"SELECT outcome, reason, \"after\" FROM enforcements WHERE pid = {child} "
                      f"AND reason LIKE 'child of {spawner.pid}%'"), timeout_s=30)
        assert reset[0]["outcome"] == "applied", reset
        after = json.loads(reset[0]["after"])
        assert (after.get("nice"), after.get("policy")) == (0, "other"), after
        # Still neutral now, on the shared cores it was given, unless the child's own plan has
        # placed it since. That plan is applied as soon as it is published and recorded a
        # moment later, so the history is given a few seconds to catch up.
        given_cpus = after["cpus"]
        seen: list[Any] = []

        def explained() -> bool:
            policy, nice, cpus = settings_of(child)
            planned = rows(corelane, f"SELECT nice, cpus FROM decisions WHERE pid = {child}")
            seen[:] = [(policy, nice, cpus), planned]
            nice_ok = (policy, nice) == (os.SCHED_OTHER, 0) or nice in {p["nice"] for p in planned}
            cpus_ok = any(cpus == set(cpulist_parse(c))
                          for c in {given_cpus} | {p["cpus"] for p in planned})
            return nice_ok and cpus_ok
        try:
            wait_for("the child's settings to be its reset's or its own plan's", explained,
                     timeout_s=10)
        except AssertionError as exc:
            exc.add_note(f"(policy, nice, cpus) and its plans: {seen}")
            raise

        # The asleep shell is judged asleep and keeps its nice and policy.
        judged = wait_for("the shell's judgement", lambda: rows(
            corelane, f"SELECT class, tier FROM classifications WHERE pid = {shell.pid} "
                      f"ORDER BY ts DESC LIMIT 1"))
        assert judged[0]["class"] == "idle", judged
        wait_for("a decision for the shell", lambda: rows(
            corelane, f"SELECT 1 FROM decision_outcomes WHERE pid = {shell.pid} "
                      f"AND outcome = 'applied' AND tier = 'background'"))
        assert settings_of(shell.pid)[:2] == original[shell.pid][:2]

        # The closed loop: each strategy tried, one chosen, with the figures behind it.
        chosen = wait_for("the closed loop's choice", lambda: rows(
            corelane, "SELECT strategy, reason, figures, load FROM strategies "
                      "WHERE state = 'chosen' ORDER BY ts LIMIT 1"), timeout_s=90)[0]
        figures = json.loads(chosen["figures"])
        assert set(figures) == {"shared", "exclusive_poll"}, figures
        # the choice follows from the figures it records (the defaults otherwise)
        loop = ClosedLoopSettings(strategies=["shared", "exclusive_poll"])
        expected, _ = choose({s: Trial.from_figures(s, f) for s, f in figures.items()},
                             chosen["load"], loop)
        assert chosen["strategy"] == expected, (chosen, figures)
        trials = rows(corelane, "SELECT strategy FROM strategies WHERE state = 'trial'")
        assert {t["strategy"] for t in trials} == {"shared", "exclusive_poll"}
        measured = rows(corelane, "SELECT strategy, count(*) AS n, max(wakeups) AS w "
                                  "FROM measurements GROUP BY 1")
        assert {m["strategy"] for m in measured} == {"shared", "exclusive_poll"}
        assert all(m["w"] == 200 for m in measured)
        # and the plans follow it
        wait_for("a plan with the chosen strategy", lambda: rows(
            corelane, f"SELECT 1 FROM decisions WHERE strategy = '{expected}' "
                      f"AND ts > (SELECT max(ts) FROM strategies WHERE state = 'chosen')"))
        # status says which strategy is in force and why, and what autogroup means here (the
        # loop goes on meanwhile: the newest strategy is read before and after)
        def newest() -> str:
            row = rows(corelane, "SELECT strategy, state FROM strategies ORDER BY ts DESC LIMIT 1")
            return f"strategy: {row[0]['strategy']} ({row[0]['state']}"
        first = newest()
        shown = corelane.run("status")
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert first in text or newest() in text, text
        autogroup = procfs.autogroup_enabled(LIVE.proc)
        assert ("autogroup is on" in text) == bool(autogroup), text
    except AssertionError as exc:
        exc.add_note(f"--- corelane's log ---\n{corelane.log_text()[-6000:]}")
        raise
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in started:
            proc.kill()
            proc.wait(10)
        corelane.terminate()
