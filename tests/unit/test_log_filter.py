"""A library that repeats itself during an outage is said once, then reminded with a count."""
from __future__ import annotations

import logging

from corelane.cli.context import RepeatFilter


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
