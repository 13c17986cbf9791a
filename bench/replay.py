"""How fast a replay runs, and whether its memory stays flat in the window's length.

    .venv/bin/python bench/replay.py [--procs 200 1000] [--minutes 60 10]

For each fleet size, a synthetic host (``bench.synthetic.Fleet``: ``--procs`` processes
sampled at 1 Hz) is recorded as a live corelane would have recorded it (samples, host
samples with its topology, the classes and plans of corelane's own classifier and
planner), into a DuckDB file, with a model version saved every minute. Then each replay
runs in a process of its own pinned to one core, and the bench prints, per window:

- the replay's speed as a multiple of real time (window seconds / replay seconds), with
  the model version in force (no learning) and with ``--fresh-model`` (learning as it
  goes);
- its peak resident memory, for a 10-minute and a whole window.

Targets: 100x real time or more for 200 processes with the recorded model; peak memory
about the same for 10 and 60 minutes (the window is streamed, never loaded whole).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.classification.snapshots import ModelShelf  # noqa: E402
from agents.replay.run import ReplayRequest, replay  # noqa: E402
from bench.synthetic import Fleet, live_history  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.topology import load_profile  # noqa: E402
from storage.history import HistoryStore  # noqa: E402

HOST = "fleet-host"
WARM_S = 60          # recorded before the window: the feature windows and a model version


def record(home: Path, procs: int, minutes: float, t0: float) -> Path:
    settings = load_settings(env={"CORELANE_HOME": str(home), "CORELANE_HOST": HOST})
    shelf = ModelShelf(home / "models")
    db = home / "history.duckdb"
    seconds = int(minutes * 60) + WARM_S + 5
    batch = []
    with HistoryStore(db, settings.storage) as store:
        events = live_history(settings, Fleet(procs, seed=7), t0, seconds,
                              load_profile("apple-m4-max"), host=HOST,
                              save_model=lambda model, ts: shelf.save(model, None, ts))
        for offset, event in enumerate(events):
            batch.append(("bench", 0, offset, event))
            if len(batch) >= 5000:
                store.write(batch)
                batch = []
        store.write(batch)
    return db


def child(home: str, t_from: float, t_to: float, fresh: bool) -> None:
    """One replay, on one core; prints its figures as JSON."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    settings = load_settings(env={"CORELANE_HOME": home, "CORELANE_HOST": HOST})
    settings.storage.raw_retention_h = 1e6           # the synthetic history is dated
    with HistoryStore.open_readonly(Path(home) / "history.duckdb", settings.storage) as store:
        began = time.perf_counter()
        report = replay(store.cursor, settings, ReplayRequest(t_from, t_to, fresh_model=fresh),
                        now=t_to + 60)
        elapsed = time.perf_counter() - began
    print(json.dumps({"elapsed_s": elapsed, "samples": report["samples"],
                      "sweeps": report["sweeps"], "model": report["model"],
                      "differences": report["difference_count"],
                      "unexplained": report["unexplained"],
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: that one
    carries the parent's peak across fork and exec, and the parent has just recorded."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(home: Path, t_from: float, minutes: float, fresh: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(home), str(t_from),
                          str(t_from + minutes * 60), "fresh" if fresh else "recorded"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the replay failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--minutes", type=float, nargs="+", default=[60.0, 10.0],
                        help="the window of each fleet size (the last one for the rest)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        home, t_from, t_to, mode = args.child
        child(home, float(t_from), float(t_to), mode == "fresh")
        return
    t0 = 1_780_000_000.0
    for i, procs in enumerate(args.procs):
        minutes = args.minutes[min(i, len(args.minutes) - 1)]
        with tempfile.TemporaryDirectory(prefix="corelane-bench-replay-") as tmp:
            began = time.monotonic()
            record(Path(tmp), procs, minutes, t0)
            print(f"{procs} processes, {minutes:g} min recorded in "
                  f"{time.monotonic() - began:.0f} s", flush=True)
            t_from = t0 + WARM_S
            windows = sorted({10.0, minutes}) if minutes > 10 else [minutes]
            for window in windows:
                for fresh in (False, True):
                    r = measure(Path(tmp), t_from, window, fresh)
                    speed = window * 60 / r["elapsed_s"]
                    print(f"  {procs} procs, {window:g} min window, "
                          f"{'fresh model' if fresh else 'recorded model'}: "
                          f"{r['elapsed_s']:.1f} s = {speed:.0f}x real time, "
                          f"{r['samples'] / r['elapsed_s']:,.0f} samples/s, peak RSS "
                          f"{r['peak_rss_mb']:.0f} MB, {r['differences']} differences "
                          f"({r['unexplained']} unexplained); {r['model']}", flush=True)


if __name__ == "__main__":
    main()
