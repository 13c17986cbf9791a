"""A library that repeats itself during an outage is said once, then reminded with a count;
what it logs as an error in the normal course of a consumer group is held back."""
from __future__ import annotations

import asyncio
import logging

from corelane.cli.context import RepeatFilter, TransientFilter


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_are_held_back_and_counted() -> None:
    now = [0.0]
    f = RepeatFilter(prefixes=("aiokafka",), every_s=30.0, clock=lambda: now[0])
    line = "Unable connect to node with id %s: %s"
    assert f.filter(record("aiokafka.conn", line, 1, "refused"))
    passed = sum(f.filter(record("aiokafka.conn", line, 1, "refused")) for _ in range(7000))
    assert passed == 0
    assert f.filter(record("aiokafka.consumer", "another line"))      # another line passes
    assert f.filter(record("corelane.runtime", line, 1, "x"))          # corelane's own, always
    now[0] = 31.0
    reminder = record("aiokafka.conn", line, 1, "refused")
    assert f.filter(reminder) and "7000 more like it" in reminder.getMessage()


def test_a_group_forming_and_a_rebalance_restart_are_not_errors_at_the_default_level() -> None:
    held = TransientFilter()
    assert not held.filter(record("aiokafka.consumer.group_coordinator",
                                  "Group Coordinator Request failed: %s", "[Error 15]"))
    assert not held.filter(record("faust.agents.agent", "[^-Agent]: Crashed reason=%r",
                                  asyncio.CancelledError()))
    # a real crash, and corelane's own lines, always show
    assert held.filter(record("faust.agents.agent", "[^-Agent]: Crashed reason=%r",
                              ValueError("bad")))
    assert held.filter(record("corelane.runtime", "Group Coordinator Request failed: %s", "x"))
