"""Does corelane keep a latency-sensitive process's wake-ups on time beside CPU hogs, without
costing the hogs their work, and how fast does it react to a new process?

A probe sleeps a fixed interval in a loop and records how late each wake-up is; CPU hogs
oversubscribe the cores and count their loop iterations (work done). Cases, interleaved
(order rotated per repeat): idle (the probe alone), hogs, hogs at a static nice 19, hogs at
a static SCHED_IDLE (as a rule daemon would set them, by pid, after they start), hogs with
`corelane up` on its defaults (its applier scoped to this benchmark's own processes, or to
every process on the host with ``--scope all``), and the same with the probe started by
one of the hogs once corelane has demoted it (a child that inherits a demotion). Then
reaction: from a probe's start to corelane's applied placement; from the fork of a
demoted parent's child to its reset to neutral. Then corelane's own cost with about 200
processes on the host. corelane's CPU (with its probe child) and its broker's are
reported apart in every case.

Every process here runs as ``python -c "import os;exec(os.environ['CLE_<token>'])"``: the
code arrives in the environment and each process renames itself (comm) to random letters,
so neither name nor command line says what it does; corelane must judge by behaviour. The
token differs between the corelane cases and the others, so the applier's scope pattern
matches only the processes of the corelane cases.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.allocation.strategy import percentile  # noqa: E402
from bench.harness import cpu_seconds  # noqa: E402
from pipeline import procfs  # noqa: E402
from pipeline.hostpaths import LIVE  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

PROC = LIVE.proc

ALL_CPUS = sorted(os.sched_getaffinity(0))
CASES = ("idle", "hogs", "nice19", "schedidle", "corelane", "demoted")
STATIC = ("idle", "nice19", "schedidle")          # the baselines a user has without corelane
CASE_TITLES = {"idle0": "idle, before corelane started", "idle": "(a) idle: probe alone",
               "hogs": "(b) hogs", "nice19": "(c) hogs at nice 19",
               "schedidle": "(d) hogs at SCHED_IDLE", "corelane": "(e) hogs + corelane",
               "demoted": "(f) hogs + corelane, probe started by a demoted hog"}

_NAME = ("import random, string\nopen('/proc/self/comm', 'w').write(''.join("
         "random.choices(string.ascii_lowercase, k=random.randint(5, 9))))\n")

# Sets its comm to random letters, timer slack to 1 ns (the default 50 µs would be added to
# every wake-up and hide the scheduler's part), then sleeps and records how late it woke,
# until SIGTERM; writes (wake time, lateness) pairs, in ns, to the file it was given.
PROBE_CODE = _NAME + """
import ctypes, os, signal, time
from array import array
try:
    ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)
except Exception:
    pass
iv_ns, out = os.environ[{args!r}].split(',', 1)
iv_ns = int(iv_ns); iv = iv_ns / 1e9
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
when = array('q'); late = array('q')
pc = time.perf_counter_ns; sl = time.sleep
while not stop:
    t0 = pc(); sl(iv); t1 = pc()
    when.append(t1); late.append(t1 - t0 - iv_ns)
with open(out + '.part', 'wb') as f:
    when.tofile(f); late.tofile(f)
os.rename(out + '.part', out)
"""

# Burns a core counting loop iterations; on SIGUSR1 it appends the count so far to its file
# (the benchmark marks a window's start and end with it). As a spawner, a line on stdin
# makes it start a probe as its child, and it prints the child's pid and the monotonic
# time just before the fork.
HOG_CODE = _NAME + """
import os, signal, subprocess, sys, threading, time
out, spawn = os.environ[{args!r}].split(',', 1)
n = 0
def mark(*_):
    with open(out, 'a') as f:
        f.write(f'{{n}}\\n')
signal.signal(signal.SIGUSR1, mark)
if spawn:
    def serve():
        for line in sys.stdin:
            t = time.monotonic_ns()
            child = subprocess.Popen([sys.executable, '-c', spawn], stdin=subprocess.DEVNULL)
            print(child.pid, t, flush=True)
    threading.Thread(target=serve, daemon=True).start()
while True:
    n += 1
"""

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a benchmark killed mid-run leaves no hog burning.
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Launcher:
    """Starts probes and hogs under one marker token; ends each by its pid."""

    def __init__(self, tmp: Path, token: str) -> None:
        self.tmp = tmp
        self.var = f"CLE_{token}"
        self.args_var = f"CLE_{token}_A"
        self.live: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def _start(self, code: str, args: str = "", stdin: int = subprocess.DEVNULL
               ) -> subprocess.Popen[bytes]:
        env = {**os.environ, self.var: code, self.args_var: args}
        with open(self.tmp / "children.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", f"import os;exec(os.environ['{self.var}'])"],
                                    env=env, stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=log, preexec_fn=_die_with_parent, cwd=self.tmp)
        self.live.append(proc)
        return proc

    def probe_code(self, interval_us: int, out: Path) -> tuple[str, str]:
        return PROBE_CODE.format(args=self.args_var), f"{interval_us * 1000},{out}"

    def probe(self, interval_us: int, out: Path) -> subprocess.Popen[bytes]:
        return self._start(*self.probe_code(interval_us, out))

    def hogs(self, n: int, spawner_probe: tuple[str, str] | None = None) -> list[Hog]:
        """``n`` hogs; with ``spawner_probe`` (code, args) the first can start that probe."""
        out = []
        for i in range(n):
            self.count += 1
            counts = self.tmp / f"hog{self.count}.txt"
            spawn = ""
            if i == 0 and spawner_probe is not None:
                code, args = spawner_probe
                # the child finds its arguments where the probe code looks for them
                spawn = f"import os; os.environ[{self.args_var!r}] = {args!r}; exec({code!r})"
            proc = self._start(HOG_CODE.format(args=self.args_var), f"{counts},{spawn}",
                               stdin=subprocess.PIPE if spawn else subprocess.DEVNULL)
            out.append(Hog(proc, counts))
        return out

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc)


@dataclass
class Hog:
    proc: subprocess.Popen[bytes]
    counts: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mark(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR1)

    def work(self) -> int:
        """Iterations between its first and last mark."""
        try:
            marks = [int(x) for x in self.counts.read_text().split()]
        except (OSError, ValueError):
            return 0
        return marks[-1] - marks[0] if len(marks) >= 2 else 0


def read_probe(out: Path, t_from: int, t_to: int) -> list[float]:
    """Lateness (µs) of the wake-ups between two CLOCK_MONOTONIC instants (ns)."""
    raw = array("q")
    raw.frombytes(out.read_bytes())
    n = len(raw) // 2
    return [raw[n + i] / 1000 for i in range(n) if t_from <= raw[i] <= t_to]


def thread_settings(pid: int) -> set[tuple[int, int]]:
    """The distinct (policy, nice) of every thread of ``pid``."""
    stats = (procfs.read_stat(PROC, pid, tid) for tid in procfs.list_tids(PROC, pid))
    return {(st.policy, st.nice) for st in stats if st}


# The ultra_critical tier's nice by default: the probe's own placement, whatever the
# strategy, and not the housekeeping one every unclassified process gets first.
ULTRA_NICE = -10


def demoted(pid: int) -> bool:
    return any(nice > 0 or policy in (os.SCHED_BATCH, os.SCHED_IDLE)
               for policy, nice in thread_settings(pid))


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def host_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cpus, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Run:
    case: str
    repeat: int
    samples: list[float]
    host_busy_pct: float = 0.0
    work_per_s: float = 0.0               # the hogs' loop iterations per second, summed
    corelane_cpu_pct: float | None = None
    broker_cpu_pct: float | None = None
    placed_after_s: float | None = None   # corelane cases: probe start -> nice -10 (polled)
    applied_after_s: float | None = None  # ... -> its ultra_critical enforcement (history)
    reset_after_ms: float | None = None   # case f: the child's fork -> read back neutral
    demoted_at_first_read: bool | None = None
    note: str = ""


@dataclass
class Corelane:
    """`corelane up` on its own broker, ports and files; everything under ``home``."""
    home: Path
    scope_pattern: str | None  # None: corelane's default scope, every process on the host
    protect: tuple[str, ...] = ()  # with the whole host in scope: what it must not touch
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 240) -> None:
        config = self.home / "corelane.yml"
        # Defaults everywhere but what it may touch and no container sampling. With the
        # whole host in scope, ``protect`` keeps it off this benchmark's own process and
        # the processes of the static cases.
        if self.scope_pattern is not None:
            applier = f"{{scope: {{patterns: ['{self.scope_pattern}']}}}}"
        else:
            from pipeline.settings import ApplierSettings
            protected = [*ApplierSettings().protected, *self.protect]
            applier = "{protected: [" + ", ".join(f"'{p}'" for p in protected) + "]}"
        config.write_text(f"collector: {{containers: false}}\napplier: {applier}\n")
        port = free_port()
        while not _port_free(port + 1):  # its controller listens on the broker port + 1
            port = free_port()
        self.env = {**os.environ, "CORELANE_CONFIG": str(config),
                    "CORELANE_KAFKA": f"127.0.0.1:{port}", "CORELANE_HOME": str(self.home),
                    "CORELANE_DB": str(self.home / "history.duckdb"),
                    "CORELANE_API": f"127.0.0.1:{free_port()}"}
        with open(self.home / "corelane.log", "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "corelane", "up"], cwd=ROOT,
                                         env=self.env, text=True, stdout=subprocess.DEVNULL,
                                         stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("corelane up exited:\n" + self.log_tail())
            try:
                parts = self.health()["parts"]
                if parts["recorder"]["stats"]["batches"] >= 1 and \
                        parts["collector"]["stats"]["sweeps"] >= 2:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError("corelane did not start recording in time:\n" + self.log_tail())

    def health(self) -> dict:
        return httpx.get(f"http://{self.env['CORELANE_API']}/api/v1/health", timeout=2).json()

    def log_tail(self) -> str:
        path = self.home / "corelane.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def broker_pid(self) -> int | None:
        try:
            return int((self.home / "kafka" / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds of corelane (with its children: the wake-up probe) and of its broker
        (a child too, counted apart)."""
        broker_pid = self.broker_pid()
        own = 0.0
        if self.proc is not None:
            mine = [self.proc.pid] + [p for p in procfs.list_pids(PROC)
                                      if p != broker_pid
                                      and (st := procfs.read_stat(PROC, p)) is not None
                                      and st.ppid == self.proc.pid]
            for pid in mine:
                with contextlib.suppress(OSError):
                    own += cpu_seconds(pid)
        broker = 0.0
        if broker_pid is not None:
            with contextlib.suppress(OSError):
                broker = cpu_seconds(broker_pid)
        return own, broker

    def query(self, sql: str) -> list[dict]:
        res = subprocess.run([sys.executable, "-m", "corelane", "query", "--format", "csv", sql],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            return []
        return list(csv.DictReader(io.StringIO(res.stdout)))

    def applied_at(self, pid: int, after_epoch: float) -> float | None:
        """Wall time of the first 'applied' ultra_critical enforcement for ``pid``."""
        rows = self.query(
            f"SELECT epoch_ms(e.ts) AS ms FROM enforcements e JOIN decisions d "
            f"ON d.batch = e.plan_id AND d.pid = e.pid WHERE e.pid = {pid} "
            f"AND e.outcome = 'applied' AND d.tier = 'ultra_critical' "
            f"AND epoch_ms(e.ts) >= {int(after_epoch * 1000) - 1000} ORDER BY e.ts LIMIT 1")
        return int(rows[0]["ms"]) / 1000 if rows else None

    def last_decisions(self, pids: list[int]) -> str:
        ids = ",".join(map(str, pids))
        rows = self.query(f"SELECT plan_seq, pid, tier, cpus, nice, policy, reason FROM "
                          f"decisions WHERE pid IN ({ids}) QUALIFY row_number() OVER "
                          f"(PARTITION BY pid ORDER BY ts DESC) = 1 ORDER BY pid")
        return "\n".join(str(r) for r in rows)

    def stop(self) -> None:
        broker = self.broker_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it restores what it changed, stops its broker
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A broker left behind by a failed stop is ended by the pid it recorded.
        if broker is not None and self.broker_pid() == broker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker, signal.SIGKILL)


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check, timeout_s: float, every_s: float = 0.05) -> float | None:  # type: ignore[no-untyped-def]
    """Seconds until ``check()`` held, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return time.monotonic() - t0
        time.sleep(every_s)
    return None


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    plain: Launcher  # static cases: a token outside corelane's scope
    scoped: Launcher  # corelane cases and reaction runs: the token in corelane's scope
    corelane: Corelane | None = None
    probe_no: int = 0

    def _probe_out(self) -> Path:
        self.probe_no += 1
        return self.tmp / f"p{self.probe_no}.bin"

    def placed(self, pid: int, t_start: float, timeout_s: float) -> float | None:
        """Seconds from ``t_start`` (monotonic) until every thread of the probe has the
        ultra_critical tier's nice: corelane judged it and applied its placement, whatever
        the strategy (its cores differ from one strategy to the next)."""
        got = wait_until(lambda: thread_settings(pid) == {(os.SCHED_OTHER, ULTRA_NICE)},
                         timeout_s - (time.monotonic() - t_start))
        return None if got is None else time.monotonic() - t_start

    def spawn_from_demoted(self, spawner: Hog, out: Path, run: Run) -> _Child | None:
        """Wait for corelane to demote the spawner hog, have it start the probe, and time
        the child's reset to neutral from the fork (polled every millisecond)."""
        if wait_until(lambda: demoted(spawner.pid), self.args.place_timeout) is None:
            run.note = f"the spawner hog was never demoted: {thread_settings(spawner.pid)}"
            return None
        assert spawner.proc.stdin is not None and spawner.proc.stdout is not None
        spawner.proc.stdin.write(b"go\n")
        spawner.proc.stdin.flush()
        pid_s, forked_ns = spawner.proc.stdout.readline().split()
        pid = int(pid_s)
        first = thread_settings(pid)
        run.demoted_at_first_read = any(n > 0 or p in (os.SCHED_BATCH, os.SCHED_IDLE)
                                        for p, n in first)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now_ns = time.monotonic_ns()
            if not demoted(pid) and thread_settings(pid):
                run.reset_after_ms = (now_ns - int(forked_ns)) / 1e6
                break
            time.sleep(0.001)
        return _Child(pid)

    def run_case(self, case: str, repeat: int) -> Run:
        a = self.args
        scoped = case in ("corelane", "demoted")
        launcher = self.scoped if scoped else self.plain
        out = self._probe_out()
        spawner_probe = launcher.probe_code(a.interval_us, out) if case == "demoted" else None
        hogs = launcher.hogs(a.hogs, spawner_probe) if case not in ("idle", "idle0") else []
        for hog in hogs:  # as a rule daemon would: after the fact, by pid
            if case == "nice19":
                os.setpriority(os.PRIO_PROCESS, hog.pid, 19)
            elif case == "schedidle":
                for tid in procfs.list_tids(PROC, hog.pid):
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        run = Run(case, repeat, [])
        t_wall = time.time()
        t_start = time.monotonic()
        probe: subprocess.Popen[bytes] | _Child | None
        if case == "demoted":
            probe = self.spawn_from_demoted(hogs[0], out, run)
            t_wall, t_start = time.time(), time.monotonic()
        else:
            probe = launcher.probe(a.interval_us, out)
        try:
            if probe is None:
                return run
            if scoped:
                run.placed_after_s = self.placed(probe.pid, t_start, a.place_timeout)
                if run.placed_after_s is None:
                    run.note = "the probe was never placed as ultra_critical"
            else:
                time.sleep(1.0)  # interpreter start-up and the hogs' first slices
            busy0 = host_busy()
            cl0 = self.corelane.cpu_s() if self.corelane else None
            for hog in hogs:
                hog.mark()
            t_from = time.perf_counter_ns()
            time.sleep(a.seconds)
            t_to = time.perf_counter_ns()
            for hog in hogs:
                hog.mark()
            busy1 = host_busy()
            cl1 = self.corelane.cpu_s() if self.corelane else None
            time.sleep(0.05)
        finally:
            if probe is not None:
                _end(probe, launcher)
            for hog in hogs:
                launcher.stop(hog.proc)
        if wait_until(out.exists, 5) is not None:
            run.samples = read_probe(out, t_from, t_to)
        out.unlink(missing_ok=True)
        run.host_busy_pct = 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        run.work_per_s = sum(h.work() for h in hogs) / a.seconds
        if cl0 is not None and cl1 is not None:
            run.corelane_cpu_pct = 100 * (cl1[0] - cl0[0]) / a.seconds
            run.broker_cpu_pct = 100 * (cl1[1] - cl0[1]) / a.seconds
        if scoped and self.corelane is not None and probe is not None:
            applied = self.corelane.applied_at(probe.pid, t_wall)
            run.applied_after_s = None if applied is None else applied - t_wall
            if run.note:  # what corelane decided, to tell a planning fault from a slow one
                run.note += "\n" + self.corelane.last_decisions([probe.pid] + [h.pid for h in hogs])
        return run

    def reaction_extra(self, n: int) -> list[tuple[float | None, float | None]]:
        """``n`` more probe starts beside hogs that corelane has already placed: (placed
        after, applied after) per start."""
        a = self.args
        assert self.corelane is not None
        hogs = self.scoped.hogs(a.hogs)
        out: list[tuple[float | None, float | None]] = []
        try:
            wait_until(lambda: all(demoted(h.pid) for h in hogs), a.place_timeout)
            for _ in range(n):
                time.sleep(2.0)
                t_wall, t_start = time.time(), time.monotonic()
                probe = self.scoped.probe(a.interval_us, self._probe_out())
                try:
                    placed = self.placed(probe.pid, t_start, a.place_timeout)
                    time.sleep(2.5)  # the recorder flushes every 2 s
                finally:
                    self.scoped.stop(probe)
                applied = self.corelane.applied_at(probe.pid, t_wall)
                out.append((placed, None if applied is None else applied - t_wall))
                print(f"  reaction start {len(out)}: placed after {_fmt_s(placed)}, applied "
                      f"(history) after {_fmt_s(out[-1][1])}", flush=True)
        finally:
            for hog in hogs:
                self.scoped.stop(hog.proc)
        return out

    def overhead(self, procs: int, seconds: float) -> tuple[int, float, float]:
        """corelane's and its broker's CPU (% of one core) with about ``procs`` processes on
        the host, nothing else going on: (processes, corelane, broker)."""
        assert self.corelane is not None
        sleepers: list[subprocess.Popen[bytes]] = []
        try:
            while len(procfs.list_pids(PROC)) < procs:
                sleepers.append(subprocess.Popen(["sleep", "3600"], preexec_fn=_die_with_parent))
            time.sleep(60.0)       # each new one sampled fast, judged, placed, and quiet again
            n = len(procfs.list_pids(PROC))
            c0 = self.corelane.cpu_s()
            time.sleep(seconds)
            c1 = self.corelane.cpu_s()
        finally:
            for s in sleepers:
                s.kill()
                s.wait()
        return n, 100 * (c1[0] - c0[0]) / seconds, 100 * (c1[1] - c0[1]) / seconds


class _Child:
    """The probe a spawner hog started: not this process's child, ended by its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


def _end(probe: subprocess.Popen[bytes] | _Child, launcher: Launcher) -> None:
    if isinstance(probe, _Child):
        with contextlib.suppress(ProcessLookupError):
            os.kill(probe.pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{probe.pid}").exists(), 5)
    else:
        launcher.stop(probe)


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def summarise(runs: list[Run]) -> dict[str, float]:
    pooled = sorted(x for r in runs for x in r.samples)
    p99s = [percentile(r.samples, 99) for r in runs if r.samples]
    return {"n": len(pooled), "p50": percentile(pooled, 50), "p99": percentile(pooled, 99),
            "p999": percentile(pooled, 99.9), "max": pooled[-1] if pooled else float("nan"),
            "p99_lo": min(p99s) if p99s else float("nan"),
            "p99_hi": max(p99s) if p99s else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20, help="measured seconds per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each case, interleaved")
    ap.add_argument("--hogs", type=int, default=4, help="CPU hogs (2 per core oversubscribes twice)")
    ap.add_argument("--interval-us", type=int, default=1000, help="the probe's sleep")
    ap.add_argument("--reaction-starts", type=int, default=10,
                    help="probe starts timed for reaction in all (the corelane repeats count)")
    ap.add_argument("--cases", default=",".join(CASES), help="which of " + ",".join(CASES))
    ap.add_argument("--place-timeout", type=float, default=60,
                    help="seconds to wait for corelane to place a probe")
    ap.add_argument("--overhead-procs", type=int, default=200,
                    help="processes on the host while corelane's own cost is measured (0: skip)")
    ap.add_argument("--overhead-seconds", type=float, default=60)
    ap.add_argument("--scope", choices=("bench", "all"), default="bench",
                    help="what corelane may change: this benchmark's processes (the static "
                         "cases run outside it), or, as on its defaults, every process on "
                         "the host (all restored when it stops)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in this folder and keep it (corelane's log, history and "
                         "journal) instead of a temporary one")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("corelane's applier needs root to pin and renice")

    print(f"cpus {ALL_CPUS}; load average before: {loadavg()}", flush=True)
    with contextlib.nullcontext(str(a.keep)) if a.keep else \
            tempfile.TemporaryDirectory(prefix="corelane-efficacy-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        token_scoped, token_plain = secrets.token_hex(4), secrets.token_hex(4)
        bench = Bench(a, tmp, Launcher(tmp, token_plain), Launcher(tmp, token_scoped))
        runs: list[Run] = []
        reaction: list[tuple[float | None, float | None]] = []
        overhead: tuple[int, float, float] | None = None
        strategies: list[dict] = []
        corelane_home = tmp / "corelane"
        corelane_home.mkdir(exist_ok=True)
        try:
            print("idle, before corelane starts ...", flush=True)
            runs.append(bench.run_case("idle0", 0))
            t0 = time.monotonic()
            bench.corelane = Corelane(corelane_home, None if a.scope == "all"
                                      else f"CLE_{token_scoped}",
                                      protect=(r"bench/efficacy\.py", f"CLE_{token_plain}"))
            bench.corelane.start()
            print(f"corelane up recording after {time.monotonic() - t0:.0f} s (scope: "
                  f"{'every process' if a.scope == 'all' else 'CLE_' + token_scoped})",
                  flush=True)
            cases = tuple(c for c in CASES if c in a.cases.split(","))
            for rep in range(a.repeats):
                order = cases[rep % len(cases):] + cases[:rep % len(cases)]
                for case in order:
                    run = bench.run_case(case, rep)
                    runs.append(run)
                    s = summarise([run])
                    extra = ""
                    if case in ("corelane", "demoted"):
                        extra = (f", placed after {_fmt_s(run.placed_after_s)}, applied "
                                 f"(history) after {_fmt_s(run.applied_after_s)}")
                    if case == "demoted":
                        extra += (f", reset {run.reset_after_ms:.1f} ms after its fork"
                                  if run.reset_after_ms is not None else ", never reset")
                    print(f"repeat {rep + 1} {case:9s} n={s['n']} p50={s['p50']:.0f} "
                          f"p99={s['p99']:.0f} max={s['max']:.0f} µs, hogs "
                          f"{run.work_per_s / 1e6:.1f} M it/s, host busy "
                          f"{run.host_busy_pct:.0f}%{extra} {run.note}", flush=True)
            extra_starts = max(0, a.reaction_starts - a.repeats)
            if extra_starts and "corelane" in cases:
                print(f"reaction: {extra_starts} more probe starts beside placed hogs ...",
                      flush=True)
                reaction = bench.reaction_extra(extra_starts)
            if a.overhead_procs:
                print(f"corelane's own cost with about {a.overhead_procs} processes ...",
                      flush=True)
                overhead = bench.overhead(a.overhead_procs, a.overhead_seconds)
            strategies = bench.corelane.query(
                "SELECT strftime(ts, '%H:%M:%S') AS at, state, strategy, reason, figures "
                "FROM strategies ORDER BY ts")
        finally:
            bench.plain.stop_all()
            bench.scoped.stop_all()
            if bench.corelane is not None:
                bench.corelane.stop()
        report(a, runs, reaction, overhead, strategies)


def report(a: argparse.Namespace, runs: list[Run],
           reaction: list[tuple[float | None, float | None]],
           overhead: tuple[int, float, float] | None, strategies: list[dict]) -> None:
    print(f"\nload average after: {loadavg()}")
    print(f"\nprobe: {a.interval_us} µs sleeps; {a.hogs} hogs on {len(ALL_CPUS)} cpus; "
          f"{a.repeats} x {a.seconds:g} s per case, pooled. Lateness in µs; hogs' work in "
          f"million loop iterations per second, all hogs together.\n")
    print("| case | wake-ups | p50 | p99 | p99.9 | max | p99 per repeat (min-max) "
          "| hogs' work | host busy | corelane CPU | broker CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    stats: dict[str, dict[str, float]] = {}
    work: dict[str, float] = {}
    for case in ("idle0", *CASES):
        rs = [r for r in runs if r.case == case]
        if not rs:
            continue
        s = stats[case] = summarise(rs)
        busy = sum(r.host_busy_pct for r in rs) / len(rs)
        work[case] = sum(r.work_per_s for r in rs) / len(rs)
        cl = [r.corelane_cpu_pct for r in rs if r.corelane_cpu_pct is not None]
        br = [r.broker_cpu_pct for r in rs if r.broker_cpu_pct is not None]
        cl_txt = f"{sum(cl) / len(cl):.1f}%" if cl else "not running"
        br_txt = f"{sum(br) / len(br):.1f}%" if br else "not running"
        work_txt = f"{work[case] / 1e6:.1f}" if case not in ("idle", "idle0") else "-"
        print(f"| {CASE_TITLES[case]} | {s['n']} | {s['p50']:.0f} | {s['p99']:.0f} | "
              f"{s['p999']:.0f} | {s['max']:.0f} | {s['p99_lo']:.0f}-{s['p99_hi']:.0f} | "
              f"{work_txt} | {busy:.0f}% | {cl_txt} | {br_txt} |")
    print()
    statics = {c: stats[c]["p99"] for c in STATIC if c in stats}
    if "corelane" in stats and statics:
        best_case = min(statics, key=statics.__getitem__)
        ratio = stats["corelane"]["p99"] / statics[best_case]
        print(f"latency: corelane p99 / best static p99 ({best_case}, {statics[best_case]:.0f} "
              f"µs) = {ratio:.2f} (target <= 1.0: {'met' if ratio <= 1.0 else 'not met'}; "
              f"moonshot <= 0.7: {'met' if ratio <= 0.7 else 'not met'})")
    if "corelane" in work and work.get("hogs"):
        share = work["corelane"] / work["hogs"]
        print(f"throughput: hogs' work with corelane / hogs alone = {share:.2f} "
              f"(target >= 0.90: {'met' if share >= 0.9 else 'not met'})")
    for r in runs:
        if r.note:
            print(f"{r.case} repeat {r.repeat + 1}: {r.note}")

    placed = [r.placed_after_s for r in runs if r.case == "corelane"] + [x[0] for x in reaction]
    applied = [r.applied_after_s for r in runs if r.case == "corelane"] + [x[1] for x in reaction]
    print(f"\nreaction, probe start -> placed, {len(placed)} starts:")
    for label, vals in (("every thread at the ultra_critical nice (polled every 50 ms)",
                         placed),
                        ("its ultra_critical enforcement 'applied' in the history (ts)", applied)):
        got = sorted(v for v in vals if v is not None)
        missing = len(vals) - len(got)
        if got:
            p95 = percentile(got, 95)
            print(f"  {label}: p50 {percentile(got, 50):.2f} s, p95 {p95:.2f} s, "
                  f"min {got[0]:.2f} s, max {got[-1]:.2f} s"
                  + (f"; {missing} never" if missing else "")
                  + f" (target p95 <= 0.5 s: {'met' if p95 <= 0.5 else 'not met'}; moonshot "
                    f"0.2 s: {'met' if p95 <= 0.2 else 'not met'})")
        else:
            print(f"  {label}: none observed")
    resets = [r for r in runs if r.case == "demoted"]
    if resets:
        got = sorted(r.reset_after_ms for r in resets if r.reset_after_ms is not None)
        first = [r.demoted_at_first_read for r in resets if r.demoted_at_first_read is not None]
        if got:
            p95 = percentile(got, 95)
            print(f"  a demoted hog's child, fork -> read back neutral (polled every 1 ms): "
                  f"p50 {percentile(got, 50):.1f} ms, p95 {p95:.1f} ms, max {got[-1]:.1f} ms "
                  f"over {len(got)} children (target p95 <= 100 ms: "
                  f"{'met' if p95 <= 100 else 'not met'}); still demoted at the benchmark's "
                  f"first read: {sum(first)} of {len(first)}")
        else:
            print("  a demoted hog's child was never seen reset")
    if overhead is not None:
        n, own, broker = overhead
        print(f"\ncost, {n} processes on the host, {a.overhead_seconds:g} s: corelane "
              f"{own:.1f}% of one core (target <= 5%: {'met' if own <= 5 else 'not met'}), "
              f"its broker {broker:.1f}% beside it")
    if strategies:
        print("\nthe closed loop on this host (strategy events):")
        for s in strategies:
            figures = json.loads(s["figures"]) if s.get("figures") else {}
            shown = ", ".join(f"{k} p99 {v.get('p99_us', float('nan')):.0f} µs, batch "
                              f"{v.get('batch_cpu', 0):.2f} cores" for k, v in figures.items())
            print(f"  {s['at']} {s['state']:7s} {s['strategy']:15s} {s['reason']}"
                  + (f" [{shown}]" if shown and s["state"] != "trial" else ""))


if __name__ == "__main__":
    main()
