"""Exactly once in the history, through SIGKILL: every message on every topic is one set of
rows in its table, however often corelane is killed while it records."""
from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline import events as ev
from storage.schema import TABLE_OF_TYPE
from support.corelane_instance import Instance
from support.history_check import ROW_KEY, inject, topic_ids

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
async def test_exactly_once_through_sigkill(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"e2e-rec-{random.randrange(10**6)}."
    rng = random.Random()
    corelane = Instance(tmp_path, kafka_bootstrap, prefix,
                        collector="{interval_s: 0.2, containers: false}",
                        storage="{flush_interval_s: 0.3, flush_rows: 500}")
    good_label = ev.envelope(ev.Label(cls="idle", pid=1, start_time=1), host="test", seq=1)

    for round_no in range(3):
        corelane.start()
        corelane.wait_recording()
        if round_no == 0:
            # A readable event and two unreadable ones, recorded across the kills too.
            await inject(kafka_bootstrap, prefix + "labels",
                         [b"{broken", ev.encode(good_label), b"\xff\xfe"])
        await asyncio.sleep(rng.uniform(0.2, 2.0))  # kill it at an arbitrary moment
        corelane.kill()

    corelane.start()
    corelane.wait_recording()
    await asyncio.sleep(1.0)
    # While it runs it owns the file: the query goes through its API.
    asked = subprocess.run(
        [sys.executable, "-m", "corelane", "query", "--format", "csv",
         "SELECT count(*) > 0 AS recorded FROM process_samples"],
        cwd=ROOT, env=corelane.env, capture_output=True, text=True, timeout=60)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.splitlines() == ["recorded", "true"]
    corelane.terminate()

    con = duckdb.connect(str(corelane.db), read_only=True)
    try:
        for event_type, table in TABLE_OF_TYPE.items():
            on_topic = await topic_ids(kafka_bootstrap, ev.topic_name(event_type, prefix))
            if event_type == "label":
                assert len(on_topic) == 3
            recorded = [r[0] for r in con.execute(
                f"SELECT DISTINCT event_id FROM {table}").fetchall()]
            readable = [i for i in on_topic if not i.startswith("unreadable@")]
            # Unreadable messages went to the dead-letter topic instead of their table.
            assert sorted(recorded) == sorted(readable), table
            assert len(set(readable)) == len(readable), f"{table}: an id twice on the topic"
            key = ROW_KEY.get(table, "event_id")
            total, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
            assert total == distinct, f"{table}: a row twice"
        assert con.execute("SELECT count(*) FROM deadletter WHERE topic = ?",
                           [prefix + "labels"]).fetchone()[0] >= 2
        assert con.execute("SELECT count(*) FROM labels WHERE event_id = ?",
                           [good_label.id]).fetchone()[0] == 1
        sweeps = con.execute("SELECT count(DISTINCT batch) FROM process_samples").fetchone()[0]
        assert sweeps >= 8
    finally:
        con.close()
