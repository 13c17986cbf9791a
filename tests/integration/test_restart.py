"""A restarted corelane carries on where the last run stopped: plans go on being numbered
per host, `status` shows the new run's plan as soon as there is one, and the history never
joins one run's decisions with another run's enforcements."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from support.corelane_instance import Instance
from support.waiting import wait_for as wait

pytestmark = pytest.mark.integration


def query(corelane: Instance, sql: str) -> list[list]:
    done = corelane.run("query", "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["rows"]


def status(corelane: Instance) -> list[dict]:
    done = corelane.run("status", "--format", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    return [dict(zip(plan["columns"], row)) for row in plan["rows"]]




def test_plans_go_on_across_a_restart_and_status_shows_the_new_run(kafka_bootstrap: str,
                                                                   tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-restart-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        allocator="{interval_s: 0.5, heartbeat_s: 2}")
    corelane.start()
    try:
        corelane.wait_recording()
        # A few plans (a heartbeat every 2 s), so that a run numbered from 1 again would
        # collide with the first run's numbers.
        wait("three plans", lambda: query(corelane, "SELECT max(plan_seq) FROM decisions")[0][0]
             and query(corelane, "SELECT max(plan_seq) FROM decisions")[0][0] >= 3)
    finally:
        corelane.terminate()
    restarted = time.time()
    corelane.start()
    try:
        corelane.wait_recording()
        before = query(corelane, "SELECT max(plan_seq), count(DISTINCT batch) FROM decisions "
                                 f"WHERE epoch(ts) < {restarted}")[0]
        first_last = before[0]
        new_plans = wait("a plan of the new run", lambda: query(
            corelane, "SELECT plan_seq, batch FROM decisions "
                      f"WHERE epoch(ts) >= {restarted} "
                      "GROUP BY ALL ORDER BY min(ts)"))
        first_new = new_plans[0][0]
        # The numbering went on from the previous run's last plan.
        assert first_new == first_last + 1, (first_last, new_plans)
        # status shows the newest plan at once: the new run's, never the previous run's.
        shown = status(corelane)
        assert shown and len({row["plan"] for row in shown}) == 1, shown
        assert shown[0]["plan"] >= first_new, (shown, first_last, first_new)
        # Every enforcement names the plan it applied, and joins only that plan's rows.
        mixed = query(corelane, """
            SELECT count(*) FROM decision_outcomes o JOIN enforcements e
              ON o.enforcement_event_id = e.event_id
            WHERE e.plan_id <> (SELECT any_value(batch) FROM decisions d
                                WHERE d.event_id = o.decision_event_id)""")
        assert mixed == [[0]]
        named = query(corelane, "SELECT count(*), count(*) FILTER (WHERE plan_id = '') "
                                "FROM enforcements WHERE plan_seq IS NOT NULL")
        assert named[0][0] > 0 and named[0][1] == 0
    finally:
        corelane.terminate()
