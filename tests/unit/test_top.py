"""`corelane top`'s screen, built from answers recorded from a `corelane up --dry-run` on a
2-CPU machine (a sleeper labelled critical; command lines shortened, a few process names
changed): pools with their load, each tier's members, the newest decisions, open alerts."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console

from corelane.cli.top import ALERTS, DECISIONS, PROCESSES, TIERS, Answers, frame, load_blocks

RECORDED = Path(__file__).resolve().parents[1] / "data" / "top" / "answers.json"


def recorded() -> Answers:
    return Answers(api="127.0.0.1:8710", at=1_764_700_000.0,
                   json=json.loads(RECORDED.read_text()))


def screen(answers: Answers, width: int = 140) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(frame(answers))
    return console.export_text()


def section(text: str, title: str, after: str) -> list[str]:
    """The lines of one table of the screen, between its title and the next one's."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(title)
    end = lines.index(after, start)
    return [line for line in lines[start + 1:end] if line]


def test_the_header_says_the_plan_in_force() -> None:
    first = screen(recorded()).splitlines()[0]
    tiers = recorded().get(TIERS)
    assert f"plan #{tiers['plan_seq']}" in first
    assert f"mode {tiers['mode']}" in first and f"strategy {tiers['strategy']}" in first


def test_each_pool_has_its_cpus_members_and_load() -> None:
    pools = section(screen(recorded()), "pools", "members")
    rows = {line.split()[0]: line.split()[1:] for line in pools}
    for tier in recorded().get(TIERS)["tiers"]:
        cpus, cores, members = rows[tier["tier"]][:3]
        assert (cpus, cores, members) == (tier["cpus"], str(tier["cores"]),
                                          str(tier["members"]))
    # CPU 1, the critical pool's, was 5.9% busy
    assert rows["critical"][-2:] == ["▁", "6%"]
    # the low tier's group holds 3 MiB (tier limits); the critical tier has no group
    assert "3.0 MiB" in " ".join(rows["low"]) and "MiB" not in " ".join(rows["critical"])


def test_each_tier_lists_its_busiest_members_and_counts_the_rest() -> None:
    members = section(screen(recorded()), "members", "newest decisions")
    items = recorded().get(PROCESSES)["items"]
    sleeper = next(p for p in items if p["tier"] == "critical")
    assert any(re.match(rf"critical\s+{sleeper['pid']}\s+python3\s", line) for line in members)
    background = sum(p["tier"] == "background" for p in items)
    assert any(f"… {background - 5} more" in line for line in members)
    # the low tier's two members are both shown, and nothing is counted for it
    low = [p["pid"] for p in items if p["tier"] == "low"]
    start = next(i for i, line in enumerate(members) if line.split()[:1] == ["low"])
    shown = [int(next(word for word in line.split() if word.isdigit()))
             for line in members[start:start + len(low)]]
    assert sorted(shown) == sorted(low)
    assert "more" not in members[start + len(low)]


def test_the_newest_decisions_show_their_reasons_and_alerts_their_messages() -> None:
    text = screen(recorded(), width=220)
    for d in recorded().get(DECISIONS)["items"]:
        assert d["reason"][:60] in text
    alert = recorded().get(ALERTS)["items"][0]
    assert alert["rule"] in text and alert["message"] in text


def test_a_refused_answer_is_said_and_the_rest_still_shows() -> None:
    answers = recorded()
    del answers.json[DECISIONS]
    answers.errors[DECISIONS] = "the history is not open yet"
    text = screen(answers)
    assert "/decisions?limit=8: the history is not open yet" in text
    assert "python3" in text and "pools" in text


def test_no_answers_yet_is_a_screen_too() -> None:
    text = screen(Answers(api="127.0.0.1:8710", at=0.0))
    assert "no plan yet" in text and "open alerts: none" in text


def test_load_blocks_are_one_per_cpu_and_their_mean() -> None:
    assert load_blocks([0.0, 50.0, 100.0]).plain == "▁▄█ 50%"
    assert load_blocks([]).plain == "-"
