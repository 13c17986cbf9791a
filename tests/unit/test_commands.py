"""Commands are checked before they become events, and times read as people write them."""
from __future__ import annotations

import os
from datetime import datetime

import pytest

from pipeline import commands
from pipeline.times import TimeError, parse_when
from pipeline.vocabulary import DEFAULT_TIER_OF

CLASSES = tuple(DEFAULT_TIER_OF)


def test_a_pid_label_reads_the_identity_now() -> None:
    label = commands.label(CLASSES, cls="idle", pid=os.getpid(), author="me")
    assert label.start_time is not None and label.author == "me"
    tier_only = commands.label(CLASSES, tier="critical", match="^nginx$")
    assert (tier_only.cls, tier_only.tier, tier_only.start_time) == (None, "critical", None)


@pytest.mark.parametrize("kwargs, says", [
    ({}, "give a class"), ({"cls": "gold", "match": "x"}, "unknown class 'gold'"),
    ({"tier": "gold", "match": "x"}, "unknown tier 'gold'"),
    ({"cls": "idle", "pid": 1, "match": "x"}, "exactly one"),
    ({"cls": "idle", "pid": 0}, "no process 0"),
    ({"cls": "idle", "match": "(a"}, "match '(a'"),
])
def test_bad_labels_say_what_to_give(kwargs: dict, says: str) -> None:
    with pytest.raises(commands.CommandError) as caught:
        commands.label(CLASSES, **kwargs)
    assert says in str(caught.value)


def test_other_commands() -> None:
    assert commands.mode("emergency", ["h"]).args == {"mode": "emergency", "hosts": ["h"]}
    with pytest.raises(commands.CommandError, match="unknown mode 'turbo'"):
        commands.mode("turbo")
    with pytest.raises(commands.CommandError, match="unknown tier"):
        commands.container_priority("abc", "gold", "h")
    with pytest.raises(commands.CommandError, match="container id"):
        commands.container_priority(" ", "low", "h")
    assert commands.shutdown("h", "why").args == {"host": "h", "reason": "why"}


NOW = datetime(2026, 12, 1, 12, 0, 0)


@pytest.mark.parametrize("text, expected", [
    ("now", NOW), ("-15m", datetime(2026, 12, 1, 11, 45)), ("-1h", datetime(2026, 12, 1, 11)),
    ("-2d", datetime(2026, 11, 29, 12)), ("-30s", datetime(2026, 12, 1, 11, 59, 30)),
    ("2026-12-01T09:00", datetime(2026, 12, 1, 9)),              # UTC without an offset
    ("2026-12-01T09:00+01:00", datetime(2026, 12, 1, 8)),
    ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9)),
    ("0", datetime(1970, 1, 1)),
])
def test_times_as_people_write_them(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-1y", "2026-13-01", "", "99999999999999"])
def test_unreadable_times_say_which_forms_work(text: str) -> None:
    with pytest.raises(TimeError, match="ISO 8601"):
        parse_when(text, NOW)
