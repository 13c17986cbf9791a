"""Faults at random moments under a running corelane, and then: is every message once in the
history, did anything crash, and did health say so while it lasted?

    .venv/bin/python bench/faults.py [--rounds 10] [--seed S] [--faults kill,broker,...]

A real broker of its own, a real `corelane up --dry-run` (its history on a 64 MB tmpfs when
run as root, for the full-disk fault), and rounds of: a few quiet seconds, then one fault
drawn at random:

- ``kill``: SIGKILL of corelane, started again;
- ``broker``: SIGKILL of the broker, started again on the same ports and data;
- ``poison``: unreadable messages of every kind (random bytes, 900 KB of them, empty,
  not an envelope, the wrong type for the topic) on a random topic each;
- ``disk``: the history's disk filled for 10 s (root only);
- ``hang``: the broker SIGSTOPped for 20 s, a hung broker rather than a dead one.

After each fault it waits for recording to go on and notes what health said meanwhile.
At the end corelane is stopped, and each table is checked against its topic: the same
event ids, no row twice. Prints one line per round and a summary; exits 1 on a failed
check.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import duckdb  # noqa: E402
import httpx  # noqa: E402

from bench.harness import running_broker  # noqa: E402
from pipeline import events as ev  # noqa: E402
from storage.schema import TABLE_OF_TYPE  # noqa: E402
from support.corelane_instance import Instance  # noqa: E402
from support.history_check import ROW_KEY, inject, topic_ids  # noqa: E402

FAULTS = ("kill", "broker", "poison", "disk", "hang")
PREFIX = "faults."


class HealthWatch(threading.Thread):
    """Polls /health every half second and keeps the states each part was seen in."""

    def __init__(self, api: str) -> None:
        super().__init__(daemon=True)
        self.api, self.seen, self.running = api, Counter(), True
        self.lock = threading.Lock()

    def run(self) -> None:
        while self.running:
            try:
                doc = httpx.get(f"http://{self.api}/api/v1/health", timeout=2,
                                trust_env=False).json()
                with self.lock:
                    for name, part in doc["parts"].items():
                        self.seen[(name, part["state"])] += 1
            except (httpx.HTTPError, ValueError, KeyError):
                with self.lock:
                    self.seen[("api", "unreachable")] += 1
            time.sleep(0.5)

    def take(self) -> Counter:
        with self.lock:
            seen, self.seen = self.seen, Counter()
        return seen


def poison(bootstrap: str, rng: random.Random) -> str:
    topics = [ev.topic_name(t, PREFIX) for t in ev.EVENT_TYPES if t != "deadletter"]
    wrong = ev.encode(ev.envelope(ev.Label(cls="idle", match="x"), "intruder", 1))
    kinds = {"random bytes": os.urandom(2000), "900 KB of random bytes": os.urandom(900_000),
             "empty": b"", "not an envelope": b'{"hello": "world"}', "wrong type": wrong}
    for value in kinds.values():
        topic = rng.choice([t for t in topics if not t.endswith(".labels")] or topics) \
            if value is wrong else rng.choice(topics)
        asyncio.run(inject(bootstrap, topic, [value]))
    return f"{len(kinds)} messages"


def fill(disk: Path, seconds: float) -> str:
    pad = disk / "pad"
    subprocess.run(["dd", "if=/dev/zero", f"of={pad}", "bs=64k"], capture_output=True)
    time.sleep(seconds)
    pad.unlink()
    return f"full for {seconds:.0f} s"


def check_history(bootstrap: str, db: Path) -> list[str]:
    """Every table against its topic; returns the problems found."""
    problems = []
    con = duckdb.connect(str(db), read_only=True)
    try:
        for event_type, table in TABLE_OF_TYPE.items():
            on_topic = asyncio.run(topic_ids(bootstrap, ev.topic_name(event_type, PREFIX)))
            readable = [i for i in on_topic if not i.startswith("unreadable@")]
            recorded = {r[0] for r in con.execute(
                f"SELECT DISTINCT event_id FROM {table}").fetchall()}
            if event_type == "deadletter":
                recorded = {i for i in recorded if ":" not in i}   # kept by the recorder
            missing, extra = set(readable) - recorded, recorded - set(readable)
            if missing or extra:
                problems.append(f"{table}: {len(missing)} on the topic and not recorded, "
                                f"{len(extra)} recorded and not on the topic")
            key = ROW_KEY.get(table, "event_id")
            total, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
            twice_on_topic = len(readable) - len(set(readable))
            if total != distinct and not twice_on_topic:
                problems.append(f"{table}: {total - distinct} rows twice")
    finally:
        con.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10 ** 6)
    rng = random.Random(seed)
    wanted = [f for f in args.faults.split(",") if f]
    if os.geteuid() != 0:
        wanted = [f for f in wanted if f != "disk"]
    print(f"seed {seed}; faults {', '.join(wanted)}", flush=True)

    with running_broker("corelane-bench-faults-") as bench:
        bootstrap = bench.env["CORELANE_KAFKA"]
        disk = bench.tmp / "disk"
        disk.mkdir()
        mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)]).returncode == 0
        corelane = Instance(bench.tmp, bootstrap, PREFIX,
                            collector="{interval_s: 0.5, containers: false}",
                            storage="{write_retry_s: 1}", closed_loop="{enabled: false}")
        corelane.db = disk / "history.duckdb"
        corelane.env["CORELANE_DB"] = str(corelane.db)
        corelane.start()
        watch = HealthWatch(corelane.api)
        crashes = 0
        summary: Counter = Counter()
        try:
            corelane.wait_recording(120)
            watch.start()
            for round_no in range(1, args.rounds + 1):
                time.sleep(rng.uniform(3, 10))
                fault = rng.choice(wanted)
                watch.take()
                started = time.monotonic()
                if fault == "kill":
                    corelane.kill()
                    corelane.start()
                    what = "corelane SIGKILLed and started again"
                elif fault == "broker":
                    pid = bench.broker.read_pid()
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(3)
                    bench.broker.start(timeout=180)
                    what = "broker SIGKILLed and started again"
                elif fault == "poison":
                    what = poison(bootstrap, rng)
                elif fault == "disk":
                    what = fill(disk, 10)
                else:
                    pid = bench.broker.read_pid()
                    assert pid is not None
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(20)
                    os.kill(pid, signal.SIGCONT)
                    what = "broker hung for 20 s"
                if corelane.proc is not None and corelane.proc.poll() is not None:
                    crashes += 1
                    print(f"  corelane exited ({corelane.proc.returncode}); starting it again")
                    corelane.start()
                corelane.wait_recording(180)
                recovered = time.monotonic() - started
                seen = watch.take()
                said = sorted({f"{part} {state}" for (part, state) in seen
                               if state not in ("ok",)})
                summary[fault] += 1
                print(f"round {round_no:2d} {fault:7s} {what}; recording again after "
                      f"{recovered:.1f} s; health said: {', '.join(said) or 'ok throughout'}",
                      flush=True)
            watch.running = False
            corelane.terminate()
        finally:
            watch.running = False
            if corelane.proc is not None and corelane.proc.poll() is None:
                corelane.kill()
        problems = check_history(bootstrap, corelane.db)
        if mounted:
            subprocess.run(["umount", "-l", str(disk)])
    print(f"\n{sum(summary.values())} faults ({dict(summary)}); unexpected exits: {crashes}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    print("history against topics: " + ("every message once" if not problems
                                         else f"{len(problems)} problems"))
    return 1 if problems or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
