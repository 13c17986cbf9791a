"""Labelled data sets: real collector sweeps of the workload generator's processes.

    python bench/dataset.py --seconds 60 --seed 1 --out /tmp/x.jsonl [--count CLASS=N ...]
                            [--interval 1.0] [--phases 1] [--thread-detail all|leader]

Runs a mix from ``bench/workloads.py`` and sweeps it with the real ``ProcessSampler`` at a
fixed interval. Each sweep writes one JSON line per labelled process, matched by
(pid, start_time), and nothing about any other process on the host:

    {"run": "...", "seed": 1, "t": 12.0, "label": "interactive", "role": "main",
     "sample": {<ProcessSample as msgspec.to_builtins gives it>}}

``t`` is seconds since the recording started. Counters in ``sample`` are cumulative, so
rates come from differences between a process's consecutive lines. The first sweep of each
phase only primes the sampler (every cpu_share on a first sight is 0) and is not written.
``role`` is "main", or "feed"/"client" for a stream's sender and an interactive server's
client (labelled with their workload's class; drop them for the cleanest labels).

With ``phases`` > 1 the time is split and each phase runs a fresh mix (new processes,
names and parameters drawn from the seed and the phase number): more processes per class
in one data set without running them all at once on a small host.

A ``.gz`` suffix writes gzip. Beside the data set, ``<out>.meta.json`` records the run,
the mix, the host and every process's parameters. Data sets are generated, never
committed: the default folder is ``/tmp/corelane-datasets``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from bench.workloads import DEFAULT_COUNTS, parse_counts, start_mix  # noqa: E402
from pipeline.collectors.process import ProcessSampler, ThreadDetail  # noqa: E402
from pipeline.events import ProcessSample  # noqa: E402

DEFAULT_DIR = Path("/tmp/corelane-datasets")


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


@dataclass
class Summary:
    """What one recording wrote."""
    run: str
    out: Path
    meta: Path
    sweeps: int = 0
    identities: dict[str, int] = field(default_factory=dict)   # label -> processes
    samples: dict[str, int] = field(default_factory=dict)      # label -> lines


def record(mix: Mapping[str, int] | None, seconds: float, interval_s: float = 1.0,
           thread_detail: ThreadDetail = "all", out: Path | None = None, *, seed: int = 1,
           phases: int = 1, cpu_threads_budget: int = 2, run_id: str | None = None,
           overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Summary:
    """Run ``mix`` (class -> count per phase; one of each if None) for ``seconds`` in all,
    sweeping every ``interval_s``, and write the labelled data set to ``out``."""
    if seconds <= 0 or interval_s <= 0 or phases < 1:
        raise ValueError("seconds and interval_s must be positive and phases at least 1")
    run = run_id or f"s{seed}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out = Path(out) if out is not None else DEFAULT_DIR / f"{run}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary(run=run, out=out, meta=meta_path(out))
    counts = dict(DEFAULT_COUNTS if mix is None else mix)
    meta: dict[str, Any] = {
        "run": run, "seed": seed, "counts_per_phase": counts, "phases": phases,
        "seconds": seconds, "interval_s": interval_s, "thread_detail": thread_detail,
        "cpu_threads_budget": cpu_threads_budget, "host": platform.node(),
        "kernel": platform.release(), "cpus": os.cpu_count(), "started": time.time(),
        "workloads": [],
    }
    encode = msgspec.json.Encoder().encode
    phase_s = seconds / phases
    t0 = time.monotonic()
    with _open(out, "w") as f:
        for phase in range(phases):
            # The phase's own seed: fresh parameters and names, reproducible from the seed.
            phase_seed = seed if phase == 0 else seed * 1000 + phase
            with start_mix(counts, phase_seed, cpu_threads_budget=cpu_threads_budget,
                           overrides=overrides) as wset:
                ids = wset.identities()
                for w in wset:
                    meta["workloads"].append(dict(w.describe(), phase=phase))
                    summary.identities[w.label] = summary.identities.get(w.label, 0) + 1
                sampler = ProcessSampler(thread_detail=thread_detail)
                sampler.sweep()                       # primes rates; not written
                start = time.monotonic()
                end = start + phase_s
                n = 1
                while (due := start + n * interval_s) <= end + 1e-6:
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    n += 1
                    samples = sampler.sweep()
                    t = round(time.monotonic() - t0, 3)
                    summary.sweeps += 1
                    for s in samples:
                        w = ids.get((s.pid, s.start_time))
                        if w is None:
                            continue
                        line = {"run": run, "seed": seed, "t": t, "label": w.label,
                                "role": w.role, "sample": msgspec.to_builtins(s)}
                        f.write(encode(line).decode())
                        f.write("\n")
                        summary.samples[w.label] = summary.samples.get(w.label, 0) + 1
    meta["identities"] = summary.identities
    meta["samples"] = summary.samples
    meta["sweeps"] = summary.sweeps
    summary.meta.write_text(json.dumps(meta, indent=1))
    return summary


class Track(msgspec.Struct):
    """One process's samples in time order: one (run, pid, start_time) identity."""
    run: str
    label: str
    role: str
    pid: int
    start_time: int
    t: list[float]
    samples: list[ProcessSample]
    seed: int | None = None
    params: dict[str, Any] | None = None      # from the meta file, when it is there


def load(path: str | Path) -> Iterator[Track]:
    """Every identity of a data set (gzip or not), its samples in time order, with its
    parameters when ``<path>.meta.json`` is beside it."""
    path = Path(path)
    params: dict[tuple[int, int], dict] = {}
    if meta_path(path).exists():
        meta = json.loads(meta_path(path).read_text())
        params = {(w["pid"], w["start_time"]): w["params"] for w in meta.get("workloads", [])}
    tracks: dict[tuple[str, int, int], Track] = {}
    decode = msgspec.json.Decoder().decode
    with _open(path, "r") as f:
        for text in f:
            if not text.strip():
                continue
            row = decode(text)
            sample = msgspec.convert(row["sample"], ProcessSample)
            key = (row["run"], sample.pid, sample.start_time)
            track = tracks.get(key)
            if track is None:
                track = tracks[key] = Track(
                    run=row["run"], label=row["label"], role=row.get("role", "main"),
                    pid=sample.pid, start_time=sample.start_time, t=[], samples=[],
                    seed=row.get("seed"), params=params.get((sample.pid, sample.start_time)))
            track.t.append(row["t"])
            track.samples.append(sample)
    for track in tracks.values():
        if any(b < a for a, b in zip(track.t, track.t[1:])):
            order = sorted(range(len(track.t)), key=track.t.__getitem__)
            track.t = [track.t[i] for i in order]
            track.samples = [track.samples[i] for i in order]
        yield track


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output file (.jsonl or .jsonl.gz); default under {DEFAULT_DIR}")
    parser.add_argument("--count", action="append", metavar="CLASS=N",
                        help="processes of a class per phase (repeatable); given any, only "
                             "those classes run; default one of each")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between sweeps")
    parser.add_argument("--phases", type=int, default=1,
                        help="split the time into this many fresh mixes (default 1)")
    parser.add_argument("--thread-detail", choices=["all", "leader"], default="all")
    parser.add_argument("--cpu-threads", type=int, default=2,
                        help="most burning compute threads at once (default 2)")
    args = parser.parse_args(argv)
    try:
        counts = parse_counts(args.count)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    summary = record(counts, args.seconds, args.interval, args.thread_detail, args.out,
                     seed=args.seed, phases=args.phases, cpu_threads_budget=args.cpu_threads)
    print(f"{summary.out}  (run {summary.run}, {summary.sweeps} sweeps; meta {summary.meta})")
    for label in sorted(summary.identities):
        print(f"  {label:<17} {summary.identities[label]:>3} processes "
              f"{summary.samples.get(label, 0):>6} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
