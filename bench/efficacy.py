"""Does corelane keep a latency-sensitive process's wake-ups on time beside CPU hogs, and how
fast does it react to a new one?

A probe sleeps a fixed interval in a loop and records how late each wake-up is; CPU hogs
oversubscribe the cores. Cases, interleaved (order rotated per repeat): idle (probe alone),
hogs, hogs at a static nice 19, and hogs with `corelane up` on its defaults, its applier
scoped to this benchmark's own processes (``--scope all``: to every process on the host but
the benchmark itself and the processes of the other cases, as a user would run it). Then
the reaction time: from a probe's start until corelane has applied its placement. For each
corelane run it also lists who else ran where the probe was pinned.

Every process here runs as ``python -c "import os;exec(os.environ['CLE_<token>'])"``: the
code arrives in the environment and each process renames itself (comm) to random letters,
so neither name nor command line says what it does; corelane must judge by behaviour. The
token differs between the corelane case and the others, so the applier's scope pattern
matches only the processes of the corelane case (and, with ``--scope all``, the protected
patterns the processes of the others).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import io
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds, free_port  # noqa: E402
from pipeline import procfs  # noqa: E402
from pipeline.hostpaths import LIVE  # noqa: E402
from pipeline.topology import cpulist_parse  # noqa: E402

PROC = LIVE.proc

ALL_CPUS = sorted(os.sched_getaffinity(0))
CASES = ("idle", "hogs", "nice19", "corelane")
CASE_TITLES = {"idle0": "idle, before corelane started", "idle": "(a) idle: probe alone",
               "hogs": "(b) hogs", "nice19": "(c) hogs at nice 19",
               "corelane": "(d) hogs + corelane"}

# Sets its comm to random letters, timer slack to 1 ns (the default 50 µs would be added to
# every wake-up and hide the scheduler's part), then sleeps and records how late it woke,
# until SIGTERM; writes (wake time, lateness) pairs, in ns, to the file it was given.
PROBE_CODE = """
import ctypes, os, random, signal, string, time
from array import array
open('/proc/self/comm', 'w').write(''.join(random.choices(string.ascii_lowercase, k=random.randint(5, 9))))
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

HOG_CODE = """
import os, random, string
open('/proc/self/comm', 'w').write(''.join(random.choices(string.ascii_lowercase, k=random.randint(5, 9))))
while True:
    pass
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

    def _start(self, code: str, args: str = "") -> subprocess.Popen[bytes]:
        env = {**os.environ, self.var: code, self.args_var: args}
        with open(self.tmp / "children.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", f"import os;exec(os.environ['{self.var}'])"],
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=log, preexec_fn=_die_with_parent, cwd=self.tmp)
        self.live.append(proc)
        return proc

    def probe(self, interval_us: int, out: Path) -> subprocess.Popen[bytes]:
        return self._start(PROBE_CODE.format(args=self.args_var), f"{interval_us * 1000},{out}")

    def hogs(self, n: int) -> list[subprocess.Popen[bytes]]:
        return [self._start(HOG_CODE) for _ in range(n)]

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


def read_probe(out: Path, t_from: int, t_to: int) -> list[float]:
    """Lateness (µs) of the wake-ups between two CLOCK_MONOTONIC instants (ns)."""
    from array import array
    raw = array("q")
    raw.frombytes(out.read_bytes())
    n = len(raw) // 2
    return [raw[n + i] / 1000 for i in range(n) if t_from <= raw[i] <= t_to]


def allowed_cpus(pid: int) -> set[frozenset[int]]:
    """The distinct Cpus_allowed_list of every thread of ``pid``."""
    statuses = (procfs.read_status(PROC, pid, tid) for tid in procfs.list_tids(PROC, pid))
    return {frozenset(cpulist_parse(st.cpus_allowed_list)) for st in statuses if st}


def probe_pinned(pid: int) -> frozenset[int] | None:
    """The probe's cpus once every thread is off the full set (one set for all), else None."""
    sets = allowed_cpus(pid)
    if len(sets) == 1:
        (cpus,) = sets
        if sorted(cpus) != ALL_CPUS:
            return cpus
    return None


# The ultra_critical tier's nice by default: the probe's own placement, not the housekeeping
# one every unclassified process gets first (which can also be clear of the hogs).
ULTRA_NICE = -10


def thread_nices(pid: int) -> set[int]:
    stats = (procfs.read_stat(PROC, pid, tid) for tid in procfs.list_tids(PROC, pid))
    return {st.nice for st in stats if st}


def hogs_clear(hogs: list[subprocess.Popen[bytes]], probe_cpus: frozenset[int]) -> bool:
    return all(not (cpus & probe_cpus) for h in hogs for cpus in allowed_cpus(h.pid))


def task_runtimes() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, tid) -> (comm, run time in ns) of every task on the host (schedstat)."""
    out: dict[tuple[int, int], tuple[str, int]] = {}
    for pid in procfs.list_pids(PROC):
        for tid in procfs.list_tids(PROC, pid):
            stat = procfs.read_stat(PROC, pid, tid)
            sched = procfs.read_schedstat(PROC, pid, tid)
            if stat is not None and sched is not None:
                out[(pid, tid)] = (stat.comm, sched.run_time_ns)
    return out


def sharers(before: dict[tuple[int, int], tuple[str, int]], cpus: frozenset[int],
            skip: set[int], top: int = 5) -> str:
    """The processes allowed on ``cpus`` that ran since ``before``, busiest first: who could
    have delayed a probe pinned there (the probe itself and ``skip`` left out)."""
    ran: dict[tuple[int, str], int] = {}
    for (pid, tid), (comm, was) in before.items():
        if pid in skip:
            continue
        sched = procfs.read_schedstat(PROC, pid, tid)
        status = procfs.read_status(PROC, pid, tid)
        if sched is None or status is None or sched.run_time_ns <= was:
            continue
        if cpus & set(cpulist_parse(status.cpus_allowed_list)):
            ran[(pid, comm)] = ran.get((pid, comm), 0) + sched.run_time_ns - was
    busiest = sorted(ran.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{comm}[{pid}] {ns / 1e6:.0f} ms" for (pid, comm), ns in busiest) or "none"


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def host_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cpus, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


@dataclass
class Run:
    case: str
    repeat: int
    samples: list[float]
    host_busy_pct: float
    corelane_cpu_pct: float | None
    placed_after_s: float | None = None  # corelane case: probe start -> isolated (polled)
    applied_after_s: float | None = None  # corelane case: probe start -> 'applied' in history
    note: str = ""
    sharers: str = ""  # corelane case: who else ran where the probe was pinned


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
        # whole host in scope, ``protect`` keeps it off this benchmark's own process (a
        # sleeper, it would be idled beside the hogs and its timing with it) and the
        # processes of cases a-c.
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
        api = self.env["CORELANE_API"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("corelane up exited:\n" + self.log_tail())
            try:
                health = httpx.get(f"http://{api}/api/v1/health", timeout=2).json()
                if health["parts"]["recorder"]["stats"]["batches"] >= 1 and \
                        health["parts"]["collector"]["stats"]["sweeps"] >= 2:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError("corelane did not start recording in time:\n" + self.log_tail())

    def log_tail(self) -> str:
        path = self.home / "corelane.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def broker_pid(self) -> int | None:
        try:
            return int((self.home / "kafka" / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def cpu_s(self) -> float:
        """CPU seconds of corelane and its broker together (what it costs the host)."""
        total = 0.0
        for pid in (self.proc.pid if self.proc else None, self.broker_pid()):
            if pid is not None:
                try:
                    total += cpu_seconds(pid)
                except OSError:
                    pass
        return total

    def applied_at(self, pid: int, after_epoch: float) -> float | None:
        """Wall time of the first 'applied' ultra_critical enforcement for ``pid``, from the
        history."""
        # The enforcement of its ultra_critical decision: its first one is usually the
        # housekeeping placement every unclassified process gets.
        sql = (f"SELECT epoch_ms(e.ts) AS ms FROM enforcements e JOIN decisions d "
               f"ON d.plan_seq = e.plan_seq AND d.pid = e.pid WHERE e.pid = {pid} "
               f"AND e.outcome = 'applied' AND d.tier = 'ultra_critical' "
               f"AND epoch_ms(e.ts) >= {int(after_epoch * 1000) - 1000} ORDER BY e.ts LIMIT 1")
        res = subprocess.run([sys.executable, "-m", "corelane", "query", "--format", "csv", sql],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            return None
        rows = list(csv.DictReader(io.StringIO(res.stdout)))
        return int(rows[0]["ms"]) / 1000 if rows else None

    def last_decisions(self, pids: list[int]) -> str:
        """The latest decision for each pid (plan, tier, cpus, reason), as CSV."""
        ids = ",".join(map(str, pids))
        sql = (f"SELECT plan_seq, pid, tier, cpus, nice, policy, reason FROM decisions "
               f"WHERE pid IN ({ids}) QUALIFY row_number() OVER "
               f"(PARTITION BY pid ORDER BY ts DESC, plan_seq DESC) = 1 ORDER BY pid")
        res = subprocess.run([sys.executable, "-m", "corelane", "query", "--format", "csv", sql],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        return (res.stdout or res.stderr).strip()

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
            try:
                os.kill(broker, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    plain: Launcher  # cases a-c: a token outside corelane's scope
    scoped: Launcher  # case d and reaction runs: the token in corelane's scope
    corelane: Corelane | None = None
    probe_no: int = 0

    def _probe_out(self) -> Path:
        self.probe_no += 1
        return self.tmp / f"p{self.probe_no}.bin"

    def wait_placed(self, probe: subprocess.Popen[bytes], hogs: list[subprocess.Popen[bytes]],
                    t_start: float, timeout_s: float) -> tuple[float | None, str]:
        """Seconds from ``t_start`` (monotonic) until the probe is isolated: every thread on
        one set of cpus that is not all of them and that no hog may use, at the
        ultra_critical tier's nice. Re-read on every
        poll: a new process is first placed with housekeeping (unclassified work, beside
        the hogs) and only moves to its own cores once it has been classified."""
        deadline = t_start + timeout_s
        while time.monotonic() < deadline:
            cpus = probe_pinned(probe.pid)
            if cpus is not None and hogs_clear(hogs, cpus) and thread_nices(probe.pid) == {ULTRA_NICE}:
                return time.monotonic() - t_start, ""
            time.sleep(0.05)
        hog_cpus = {h.pid: sorted(sorted(c) for c in allowed_cpus(h.pid)) for h in hogs}
        probe_cpus = sorted(sorted(c) for c in allowed_cpus(probe.pid))
        return None, (f"probe not isolated within {timeout_s:.0f} s: probe on {probe_cpus}, "
                      f"hogs on {hog_cpus}")

    def run_case(self, case: str, repeat: int) -> Run:
        a = self.args
        launcher = self.scoped if case == "corelane" else self.plain
        hogs = launcher.hogs(a.hogs) if case not in ("idle", "idle0") else []
        if case == "nice19":
            for hog in hogs:  # as a rule daemon would: after the fact, by pid
                os.setpriority(os.PRIO_PROCESS, hog.pid, 19)
        out = self._probe_out()
        t_wall = time.time()
        t_start = time.monotonic()
        probe = launcher.probe(a.interval_us, out)
        run = Run(case, repeat, [], 0.0, None)
        try:
            if case == "corelane":
                run.placed_after_s, run.note = self.wait_placed(probe, hogs, t_start, a.place_timeout)
            else:
                time.sleep(1.0)  # interpreter start-up and the hogs' first slices
            pinned = probe_pinned(probe.pid) if case == "corelane" else None
            tasks0 = task_runtimes() if pinned is not None else None
            busy0, cl0 = host_busy(), self.corelane.cpu_s() if self.corelane else None
            t_from = time.perf_counter_ns()
            time.sleep(a.seconds)
            t_to = time.perf_counter_ns()
            busy1, cl1 = host_busy(), self.corelane.cpu_s() if self.corelane else None
            if tasks0 is not None and pinned is not None:
                run.sharers = (f"cpus {sorted(pinned)}: "
                               + sharers(tasks0, pinned, {probe.pid, os.getpid()}))
        finally:
            launcher.stop(probe)
            for hog in hogs:
                launcher.stop(hog)
        run.samples = read_probe(out, t_from, t_to) if out.exists() else []
        out.unlink(missing_ok=True)
        span = a.seconds
        run.host_busy_pct = 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        if cl0 is not None and cl1 is not None:
            run.corelane_cpu_pct = 100 * (cl1 - cl0) / span
        if case == "corelane" and self.corelane is not None:
            applied = self.corelane.applied_at(probe.pid, t_wall)
            run.applied_after_s = None if applied is None else applied - t_wall
            if run.note:  # what corelane decided, to tell a planning fault from a slow one
                run.note += "\n" + self.corelane.last_decisions([probe.pid] + [h.pid for h in hogs])
        return run

    def reaction_extra(self, n: int) -> list[tuple[float | None, float | None, str]]:
        """``n`` more probe starts beside hogs that corelane has already placed: (isolated after,
        applied after, note) per start."""
        a = self.args
        assert self.corelane is not None
        hogs = self.scoped.hogs(a.hogs)
        out: list[tuple[float | None, float | None, str]] = []
        try:
            # Hogs first (classified and placed), so each start below times the probe alone.
            first = self.scoped.probe(a.interval_us, self._probe_out())
            self.wait_placed(first, hogs, time.monotonic(), a.place_timeout)
            self.scoped.stop(first)
            for _ in range(n):
                time.sleep(2.0)
                t_wall, t_start = time.time(), time.monotonic()
                probe = self.scoped.probe(a.interval_us, self._probe_out())
                try:
                    pinned, note = self.wait_placed(probe, hogs, t_start, a.place_timeout)
                    time.sleep(1.5)  # the recorder flushes every second
                finally:
                    self.scoped.stop(probe)
                applied = self.corelane.applied_at(probe.pid, t_wall)
                out.append((pinned, None if applied is None else applied - t_wall, note))
                print(f"  reaction start {len(out)}: isolated after "
                      f"{_fmt_s(pinned)}, applied (history) after "
                      f"{_fmt_s(out[-1][1])} {note}", flush=True)
        finally:
            for hog in hogs:
                self.scoped.stop(hog)
        return out


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def summarise(runs: list[Run]) -> dict[str, float]:
    pooled = sorted(x for r in runs for x in r.samples)
    p99s = [percentile(sorted(r.samples), 99) for r in runs if r.samples]
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
    ap.add_argument("--cases", default=",".join(CASES),
                    help="which of idle,hogs,nice19,corelane to run")
    ap.add_argument("--place-timeout", type=float, default=60,
                    help="seconds to wait for corelane to place a probe")
    ap.add_argument("--scope", choices=("bench", "all"), default="bench",
                    help="what corelane may change: this benchmark's processes (cases a-c "
                         "run outside it), or, as on its defaults, every process on the host "
                         "(all restored when it stops)")
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
        reaction: list[tuple[float | None, float | None, str]] = []
        corelane_home = tmp / "corelane"
        corelane_home.mkdir(exist_ok=True)
        try:
            # A reference idle run before corelane (and its broker) exist on the host.
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
            for rep in range(a.repeats):
                cases = tuple(c for c in CASES if c in a.cases.split(","))
                order = cases[rep % len(cases):] + cases[:rep % len(cases)]
                for case in order:
                    run = bench.run_case(case, rep)
                    runs.append(run)
                    s = summarise([run])
                    extra = ""
                    if case == "corelane":
                        extra = (f", isolated after {_fmt_s(run.placed_after_s)}, applied "
                                 f"(history) after {_fmt_s(run.applied_after_s)} {run.note}"
                                 f"\n    also ran on the probe's {run.sharers}")
                    print(f"repeat {rep + 1} {case:9s} n={s['n']} p50={s['p50']:.0f} "
                          f"p99={s['p99']:.0f} max={s['max']:.0f} µs, host busy "
                          f"{run.host_busy_pct:.0f}%{extra}", flush=True)
            extra_starts = max(0, a.reaction_starts - a.repeats)
            if extra_starts:
                print(f"reaction: {extra_starts} more probe starts beside placed hogs ...",
                      flush=True)
                reaction = bench.reaction_extra(extra_starts)
        finally:
            bench.plain.stop_all()
            bench.scoped.stop_all()
            if bench.corelane is not None:
                bench.corelane.stop()
        report(a, runs, reaction)


def report(a: argparse.Namespace, runs: list[Run],
           reaction: list[tuple[float | None, float | None, str]]) -> None:
    print(f"\nload average after: {loadavg()}")
    print(f"\nprobe: {a.interval_us} µs sleeps; {a.hogs} hogs on {len(ALL_CPUS)} cpus; "
          f"{a.repeats} x {a.seconds:g} s per case, pooled. Lateness in µs.\n")
    print("| case | wake-ups | p50 | p99 | p99.9 | max | p99 per repeat (min-max) "
          "| host busy | corelane+broker CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    stats: dict[str, dict[str, float]] = {}
    for case in ("idle0", *CASES):
        rs = [r for r in runs if r.case == case]
        if not rs:
            continue
        s = stats[case] = summarise(rs)
        busy = sum(r.host_busy_pct for r in rs) / len(rs)
        cl = [r.corelane_cpu_pct for r in rs if r.corelane_cpu_pct is not None]
        cl_txt = f"{sum(cl) / len(cl):.0f}% of a core" if cl else "not running"
        print(f"| {CASE_TITLES[case]} | {s['n']} | {s['p50']:.0f} | {s['p99']:.0f} | "
              f"{s['p999']:.0f} | {s['max']:.0f} | {s['p99_lo']:.0f}-{s['p99_hi']:.0f} | "
              f"{busy:.0f}% | {cl_txt} |")
    print()
    if all(c in stats for c in ("idle", "nice19", "corelane")):
        r1 = stats["corelane"]["p99"] / stats["idle"]["p99"]
        r2 = stats["nice19"]["p99"] / stats["corelane"]["p99"]
        print(f"corelane p99 / idle p99 = {r1:.2f} (target <= 1.5): "
              f"{'met' if r1 <= 1.5 else 'not met'}")
        if "idle0" in stats:
            r0 = stats["corelane"]["p99"] / stats["idle0"]["p99"]
            print(f"corelane p99 / idle-before-corelane p99 = {r0:.2f}")
        print(f"nice-19 p99 / corelane p99 = {r2:.2f} (target >= 3): "
              f"{'met' if r2 >= 3 else 'not met'}")
    notes = [f"repeat {r.repeat + 1}: {r.note}" for r in runs if r.note]
    for n in notes:
        print("corelane case:", n)

    pinned = [r.placed_after_s for r in runs if r.case == "corelane"] + [x[0] for x in reaction]
    applied = [r.applied_after_s for r in runs if r.case == "corelane"] + [x[1] for x in reaction]
    print(f"\nreaction time, probe start -> placed, {len(pinned)} starts "
          f"({a.repeats} in case d after the other cases ran, the rest back to back):")
    for label, vals in (("probe isolated: Cpus_allowed_list of every thread, disjoint from "
                         "every hog's, nice -10 (polled every 50 ms)", pinned),
                        ("its ultra_critical enforcement 'applied' in the history (ts)", applied)):
        got = sorted(v for v in vals if v is not None)
        missing = len(vals) - len(got)
        if got:
            print(f"  {label}: p50 {percentile(got, 50):.2f} s, p95 {percentile(got, 95):.2f} s, "
                  f"min {got[0]:.2f} s, max {got[-1]:.2f} s"
                  + (f"; {missing} never" if missing else "")
                  + f" (target p95 <= 3 s: {'met' if percentile(got, 95) <= 3 else 'not met'})")
        else:
            print(f"  {label}: none observed")


if __name__ == "__main__":
    main()
