"""corelane's own wake-up probe: a tiny cyclictest that measures, on demand, how late a
sleeper wakes where the critical tiers run.

One child process lives as long as its parent (it dies with it): asked for a burst, it
sleeps ``interval_us`` ``wakeups`` times and answers with how late each wake-up came. Its
parent puts it on the cores and at the priorities of the work it stands in for before
each burst. Timer slack is 1 ns, so the kernel's default 50 µs of slack does not hide the
scheduler's part. Between bursts it blocks on a pipe and costs nothing.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
from array import array
from collections.abc import Iterable

PROBE_NAME = "corelane-probe"

_CHILD = f"""
import ctypes, sys, time
from array import array
libc = ctypes.CDLL(None)
libc.prctl(15, b"{PROBE_NAME}", 0, 0, 0)       # PR_SET_NAME
libc.prctl(29, 1, 0, 0, 0)                      # PR_SET_TIMERSLACK: 1 ns
pc, sl = time.perf_counter_ns, time.sleep
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    n, iv_ns = (int(x) for x in line.split())
    iv = iv_ns / 1e9
    late = array("d")
    for _ in range(n):
        t0 = pc()
        sl(iv)
        late.append((pc() - t0 - iv_ns) / 1000.0)
    out.write(late.tobytes())
    out.flush()
"""

_POLICIES = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}
_libc = ctypes.CDLL(None, use_errno=True)


class ProbeError(RuntimeError):
    """The probe could not measure; the message says why."""


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG


class WakeupProbe:
    """The probe child; ``measure`` is blocking (run it in a worker thread)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        with self._lock:
            self._started()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent, close_fds=True)
        return self._proc

    def measure(self, cpus: Iterable[int], wakeups: int, interval_us: int,
                nice: int | None = None, policy: str | None = None) -> list[float]:
        """Lateness of each of ``wakeups`` sleeps of ``interval_us``, in µs, with the probe
        on ``cpus`` at ``nice`` and ``policy`` (None: as it is)."""
        with self._lock:
            proc = self._started()
            try:
                os.sched_setaffinity(proc.pid, set(cpus))
                if policy is not None:
                    os.sched_setscheduler(proc.pid, _POLICIES.get(policy, os.SCHED_OTHER),
                                          os.sched_param(0))
                if nice is not None:
                    os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
            except OSError as exc:
                raise ProbeError(f"cannot place the probe on cpus {sorted(set(cpus))}: "
                                 f"{exc.strerror}") from None
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{wakeups} {interval_us * 1000}\n".encode())
            proc.stdin.flush()
            want = wakeups * 8
            got = bytearray()
            deadline = wakeups * interval_us / 1e6 * 20 + 5.0
            fd = proc.stdout.fileno()
            while len(got) < want:
                ready, _, _ = select.select([fd], [], [], deadline)
                chunk = os.read(fd, want - len(got)) if ready else b""
                if not chunk:
                    self.stop()
                    raise ProbeError(f"the probe gave {len(got) // 8} of {wakeups} wake-ups")
                got += chunk
            values = array("d")
            values.frombytes(bytes(got))
            return values.tolist()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
