"""What a process sweep costs, against the /proc floor and against psutil.

    python bench/collector.py [--procs 1000] [--rounds 21] [--mt-procs 20] [--mt-threads 50]

Starts ``--procs`` idle single-threaded processes of its own (``sleep``), then, in the same
run and interleaved round by round so that drift on a noisy host hits all three alike:

  floor   listdir /proc, then read and split /proc/PID/stat, status and schedstat of
          every process, nothing else (os.open/os.read, the cheapest way from Python)
  ours    ProcessSampler.sweep(), warm (identities known), thread_detail="all"
  psutil  psutil.process_iter() asking for the same fields

Every method covers every process on the host, not only the ones started here; the count
is printed and per-process figures divide by it. Then the per-thread cost: ``--mt-procs``
processes with ``--mt-threads`` sleeping threads each, swept with thread_detail "all" and
"leader". Every process started here is stopped by its own pid at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from pipeline.collectors.process import ProcessSampler  # noqa: E402
from pipeline.hostpaths import LIVE  # noqa: E402

PROC = "/proc"
O_RDONLY = os.O_RDONLY

# psutil's nearest equivalent of our sample. It has no schedstat: cpu_times stands in for
# run time, num_ctx_switches (leader thread only) for timeslices; run delay has no
# equivalent. It reads no cgroup either (we read it once per process).
PSUTIL_ATTRS = ["name", "ppid", "status", "cmdline", "uids", "cpu_times", "memory_info",
                "num_threads", "num_ctx_switches", "io_counters", "cpu_num", "nice",
                "cpu_affinity", "create_time"]

THREADED_CHILD = """
import threading, time
def nap():
    while True:
        time.sleep(0.5)
for _ in range({n}):
    threading.Thread(target=nap, daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def floor_sweep() -> int:
    """Read and split the three files of every process; the count of processes read."""
    n = 0
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        base = f"{PROC}/{name}/"
        try:
            fd = os.open(base + "stat", O_RDONLY)
            try:
                data = os.read(fd, 1024)
            finally:
                os.close(fd)
            data[data.rindex(b")") + 2:].split()
            fd = os.open(base + "status", O_RDONLY)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            data.split(b"\n")
            fd = os.open(base + "schedstat", O_RDONLY)
            try:
                data = os.read(fd, 256)
            finally:
                os.close(fd)
            data.split()
        except (OSError, ValueError):
            continue
        n += 1
    return n


def psutil_sweep() -> int:
    n = 0
    for _ in psutil.process_iter(PSUTIL_ATTRS, ad_value=None):
        n += 1
    return n


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    count = fn()
    return time.perf_counter() - t0, count


def summary(values: list[float]) -> str:
    """median [min..max] and the interquartile range as a share of the median."""
    med = statistics.median(values)
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return (f"{med:8.2f}  [{min(values):7.2f} .. {max(values):7.2f}]  "
            f"IQR ±{(q[2] - q[0]) / 2 / med * 100 if med else 0:4.1f}%")


def start_sleepers(count: int) -> list[subprocess.Popen]:
    procs = []
    for _ in range(count):
        procs.append(subprocess.Popen(["sleep", "86400"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def start_threaded(count: int, threads: int) -> list[subprocess.Popen]:
    procs = []
    for _ in range(count):
        procs.append(subprocess.Popen([sys.executable, "-c", THREADED_CHILD.format(n=threads)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      text=True))
    for p in procs:                 # every thread running before we measure
        if p.stdout is not None:
            p.stdout.readline()
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill what we started, by pid (Popen.kill signals its own child only)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if p.stdout is not None:
            p.stdout.close()


def bench_main(rounds: int) -> None:
    ours = ProcessSampler(LIVE, thread_detail="all")
    full = ProcessSampler(LIVE, thread_detail="all")
    full.reuse_unchanged = False            # every file read and parsed on every sweep
    first_t, first_n = timed(lambda: len(ours.sweep()))   # first sight: cmdline, cgroup
    full.sweep()
    psutil_sweep()                                          # psutil's own cache warm too
    floor_sweep()
    print(f"first sweep (every identity new): {first_t / first_n * 1e6:.2f} µs/process")

    methods: dict[str, Callable[[], int]] = {
        "floor": floor_sweep,
        "ours": lambda: len(ours.sweep()),
        "ours-full": lambda: len(full.sweep()),
        "psutil": psutil_sweep,
    }
    per_proc: dict[str, list[float]] = {k: [] for k in methods}
    counts: dict[str, list[int]] = {k: [] for k in methods}
    paired: dict[str, list[float]] = {"ours/floor": [], "ours-full/floor": [],
                                      "psutil/ours": [], "psutil/ours-full": []}
    order = list(methods)
    for r in range(rounds):
        this_round = {}
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:   # rotate: no method always goes first
            dt, n = timed(methods[name])
            this_round[name] = dt / n * 1e6
            per_proc[name].append(dt / n * 1e6)
            counts[name].append(n)
        for key in paired:
            a, b = key.split("/")
            paired[key].append(this_round[a] / this_round[b])

    print("processes per sweep (whole host): " + ", ".join(
        f"{k} {statistics.median(v):.0f}" for k, v in counts.items()))
    print(f"{rounds} rounds, µs per process: median  [min .. max]  IQR")
    for name in methods:
        print(f"  {name:10s}{summary(per_proc[name])}")
    med = {k: statistics.median(v) for k, v in per_proc.items()}
    print("ratios: of the medians; median of the same-round ratios [min .. max]")
    targets = {"ours/floor": ("<=", 1.5), "psutil/ours": (">=", 2.5),
               "ours-full/floor": ("<=", 1.5), "psutil/ours-full": (">=", 2.5)}
    for key, values in paired.items():
        a, b = key.split("/")
        op, target = targets[key]
        r_med = statistics.median(values)
        ok = r_med <= target if op == "<=" else r_med >= target
        print(f"  {key:17s} {med[a] / med[b]:5.2f}; {r_med:5.2f} [{min(values):5.2f} .. "
              f"{max(values):5.2f}]  target {op} {target}: {'met' if ok else 'NOT met'}")
    print("  ours = default sweep (an idle process's unchanged stat is not re-parsed and its\n"
          "  io not re-read); ours-full = every file read and parsed on every sweep.\n"
          "  psutil has no run delay; its context switches are the leader thread's only.")


def bench_threads(rounds: int, nprocs: int, nthreads: int) -> None:
    started = start_threaded(nprocs, nthreads)
    try:
        pids = {p.pid for p in started}
        samplers = {"all": ProcessSampler(LIVE, "all"), "leader": ProcessSampler(LIVE, "leader"),
                    "all-full": ProcessSampler(LIVE, "all")}
        samplers["all-full"].reuse_unchanged = False    # every thread's files every sweep
        for s in samplers.values():
            s.sweep()
        times: dict[str, list[float]] = {k: [] for k in samplers}
        extra_threads = 0
        total = 0
        for r in range(rounds):
            names = list(samplers)
            for name in names[r % 3:] + names[:r % 3]:
                t0 = time.perf_counter()
                samples = samplers[name].sweep()
                times[name].append((time.perf_counter() - t0) * 1e3)
                if name == "all":
                    total = len(samples)
                    extra_threads = sum(s.threads - 1 for s in samples if s.threads > 1)
                    ours_seen = sum(1 for s in samples if s.pid in pids)
        a = statistics.median(times["all"])
        b = statistics.median(times["leader"])
        print(f"\nper-thread cost: {nprocs} processes x {nthreads} threads started "
              f"({ours_seen} seen); host: {total} processes, "
              f"{extra_threads} non-leader threads in multi-threaded processes")
        print(f"  sweep, thread_detail='all'    ms: {summary(times['all'])}")
        print(f"  sweep, thread_detail='leader' ms: {summary(times['leader'])}")
        print(f"  sweep, 'all', reuse off       ms: {summary(times['all-full'])}")
        c = statistics.median(times["all-full"])
        if extra_threads:
            print(f"  extra per non-leader thread: {(a - b) * 1e3 / extra_threads:.2f} µs "
                  f"(idle threads' status not re-read); "
                  f"{(c - b) * 1e3 / extra_threads:.2f} µs with every file re-read")
    finally:
        stop(started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=1000, help="idle processes to start")
    ap.add_argument("--rounds", type=int, default=21, help="measured rounds per method")
    ap.add_argument("--mt-procs", type=int, default=20, help="multi-threaded processes")
    ap.add_argument("--mt-threads", type=int, default=50, help="threads in each of them")
    args = ap.parse_args()

    started: list[subprocess.Popen] = []
    try:
        t0 = time.perf_counter()
        started = start_sleepers(args.procs)
        print(f"started {len(started)} idle processes in {time.perf_counter() - t0:.1f} s "
              f"on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
              f"psutil {psutil.__version__}")
        bench_main(args.rounds)
        if args.mt_procs > 0 and args.mt_threads > 0:
            bench_threads(args.rounds, args.mt_procs, args.mt_threads)
    finally:
        stop(started)


if __name__ == "__main__":
    main()
