"""corelane takes its own nice first, so that the load it places cannot starve it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a child of its own: the nice of this test's process stays as it is.
CHILD = """
import logging, os, sys, threading
from corelane.own_priority import take_own_nice
from pipeline.settings import Settings
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
if sys.argv[2:] == ["nobody"]:
    os.setuid(65534)                        # no longer allowed to go below its nice
take_own_nice(Settings(own_nice=None if sys.argv[1] == "null" else int(sys.argv[1])))
seen = []
thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
thread.start(); thread.join()
print(os.getpriority(os.PRIO_PROCESS, 0), seen[0])
"""


def run(value: str, as_nobody: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, value,
                           *(["nobody"] if as_nobody else [])],
                          capture_output=True, text=True, timeout=60)


def test_the_process_and_the_threads_it_starts_run_at_own_nice() -> None:
    if os.geteuid() != 0:
        pytest.skip("a nice below 0 needs root")
    done = run("-5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-5", "-5"]


def test_null_leaves_the_nice_as_started() -> None:
    started = os.getpriority(os.PRIO_PROCESS, 0)
    done = run("null")
    assert done.stdout.split() == [str(started)] * 2, done.stderr


def test_without_the_permission_it_says_so_and_runs_on() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a child as another user")
    started = os.getpriority(os.PRIO_PROCESS, 0)
    done = run("-5", as_nobody=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(started)] * 2
    assert "own_nice: cannot run at nice -5" in done.stderr, done.stderr

