"""`corelane top`: a live screen of a running instance, through its API: each pool's cores
and their load, the members of each tier, the newest decisions with their reasons, and the
open alerts; refreshed every ``--interval`` seconds until `q` or Ctrl-C.

``frame`` builds the screen from the API's answers alone (a pure function, tested on
recorded answers); ``fetch`` and the loop around them are the shell.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import typer
from pydantic import ByteSize
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from corelane.cli.context import context
from pipeline.settings import Settings
from pipeline.topology import cpulist_parse

NAME = "top"

# What one frame asks of the API (paths under /api/v1).
TOPOLOGY, TIERS, LOAD = "/topology", "/tiers", "/core-utilization"
PROCESSES, DECISIONS, ALERTS = "/processes?limit=1000", "/decisions?limit=8", "/alerts?state=open"
PATHS = (TOPOLOGY, TIERS, LOAD, PROCESSES, DECISIONS, ALERTS)
# Members shown per tier; the rest are counted.
MEMBERS_SHOWN = 5
_BLOCKS = " ▁▂▃▄▅▆▇█"      # 0 to 8 eighths
_SEVERITY = {"critical": "bold red", "warning": "yellow"}


@dataclass
class Answers:
    """What the API answered for one frame: each path's JSON, or why it has none."""
    api: str
    at: float
    json: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, path: str) -> Any:
        return self.json.get(path)


# --- the screen, from the answers ------------------------------------------------------------

def _clock(iso: str | None) -> str:
    """An API time as this machine's wall clock, HH:MM:SS."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")


def load_blocks(percents: list[float]) -> Text:
    """One block per CPU, as tall as it is busy, then their mean."""
    if not percents:
        return Text("-", style="dim")
    # the lowest block for an idle CPU too, so that every CPU shows
    blocks = "".join(_BLOCKS[max(1, min(8, round(p / 12.5)))] for p in percents)
    mean = sum(percents) / len(percents)
    style = "red" if mean >= 90 else "yellow" if mean >= 60 else "green"
    return Text.assemble((blocks, style), f" {mean:.0f}%")


def _header(answers: Answers) -> Text:
    tiers = answers.get(TIERS) or {}
    bits = [("corelane top", "bold"), f" · {tiers.get('host') or '?'}"]
    if tiers.get("plan_seq") is not None:
        bits += [f" · plan #{tiers['plan_seq']} at {_clock(tiers.get('planned_at'))}",
                 f" · mode {tiers.get('mode')} · strategy {tiers.get('strategy')}"]
    else:
        bits.append((" · no plan yet", "yellow"))
    bits.append((f" · {answers.api} at {datetime.fromtimestamp(answers.at):%H:%M:%S}"
                 f" · q quits", "dim"))
    return Text.assemble(*bits)


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = (),
           free: str | None = None) -> Table:
    """A table of this screen: compact, numbers right-aligned, ``free`` cut to fit."""
    table = Table(title=title, title_justify="left", title_style="bold", expand=True,
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for name in columns:
        if name == free:
            table.add_column(name, overflow="ellipsis", no_wrap=True, ratio=1)
        else:
            table.add_column(name, justify="right" if name in right else "left",
                             no_wrap=True)
    return table


def _memory(used: int | None) -> str:
    """A tier group's memory (tier limits), or nothing where the tier has no group."""
    return "" if used is None else ByteSize(used).human_readable(separator=" ")


def _pools(answers: Answers) -> Table:
    topology = answers.get(TOPOLOGY) or {}
    load = {c["cpu"]: c["percent"] for c in (answers.get(LOAD) or {}).get("live", [])}
    kinds = {c["cpu"]: c.get("core_type") for c in topology.get("cpus", [])}
    table = _table("pools", ("pool", "cpus", "cores", "members", "demand", "delay ms/s",
                             "memory", "load"),
                   right=("cores", "members", "demand", "delay ms/s", "memory"), free="cpus")
    placed: set[int] = set()
    for tier in (answers.get(TIERS) or {}).get("tiers", []):
        cpus = cpulist_parse(tier["cpus"]) if tier["cpus"] else []
        placed.update(cpus)
        types = sorted({kinds[c] for c in cpus if kinds.get(c)})
        table.add_row(tier["tier"], tier["cpus"] + (f" ({'/'.join(types)})" if types else ""),
                      str(tier["cores"]), str(tier["members"]),
                      f"{tier['demand_cores']:.2f}", f"{tier['run_delay_ms_s']:.1f}",
                      _memory(tier.get("memory_bytes")),
                      load_blocks([load[c] for c in cpus if c in load]))
    spare = sorted(set(kinds) - placed)
    if spare:
        table.add_row(Text("in no pool", style="dim"), ",".join(map(str, spare)), "", "", "",
                      "", "", load_blocks([load[c] for c in spare if c in load]))
    return table


def _members(answers: Answers, shown: int) -> Table:
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for p in (answers.get(PROCESSES) or {}).get("items", []):
        if p.get("tier"):
            by_tier.setdefault(p["tier"], []).append(p)
    table = _table("members", ("tier", "pid", "name", "class", "cpu %", "delay ms/s",
                               "policy"), right=("pid", "cpu %", "delay ms/s"), free="name")
    order = [t["tier"] for t in (answers.get(TIERS) or {}).get("tiers", [])]
    order += sorted(set(by_tier) - set(order))
    for tier in order:
        members = sorted(by_tier.get(tier, []), key=lambda p: (-p["cpu_share"], p["pid"]))
        for i, p in enumerate(members[:shown]):
            delay = p.get("run_delay_ms_s")
            table.add_row(tier if i == 0 else "", str(p["pid"]), p["name"],
                          p.get("class") or "-", f"{100 * p['cpu_share']:.1f}",
                          "-" if delay is None else f"{delay:.1f}", p["policy"])
        if len(members) > shown:
            table.add_row("", "", Text(f"… {len(members) - shown} more", style="dim"))
    return table


def _decisions(answers: Answers) -> Table:
    table = _table("newest decisions", ("at", "tier", "target", "cpus", "reason"),
                   free="reason")
    for d in (answers.get(DECISIONS) or {}).get("items", []):
        target = {"process": f"pid {d.get('pid')}", "cpu": f"cpu {d.get('cpus')}",
                  "container": f"container {(d.get('container_id') or '')[:12]}",
                  }.get(d["target"], d["target"])
        table.add_row(_clock(d["ts"]), d["tier"], target, d["cpus"], d.get("reason") or "")
    return table


def _alerts(answers: Answers) -> RenderableType:
    items = (answers.get(ALERTS) or {}).get("items", [])
    if not items:
        return Text("open alerts: none", style="green")
    table = _table("open alerts", ("severity", "rule", "since", "message"), free="message")
    for a in items:
        table.add_row(Text(a["severity"], style=_SEVERITY.get(a["severity"], "")), a["rule"],
                      _clock(a.get("opened_at")), a["message"])
    return table


def frame(answers: Answers, members_shown: int = MEMBERS_SHOWN) -> Group:
    """The whole screen for one set of answers."""
    parts: list[RenderableType] = [_header(answers)]
    parts += [Text(f"{path}: {why}" if path else why, style="red")
              for path, why in answers.errors.items()]
    parts += [_pools(answers), _members(answers, members_shown), _decisions(answers),
              _alerts(answers)]
    return Group(*parts)


# --- the shell: the API, the keyboard, the loop ----------------------------------------------

def fetch(settings: Settings) -> Answers | None:
    """One frame's answers from the instance at ``api.listen``; None when nothing listens
    there. A path the instance refuses (no history open yet, say) keeps its message."""
    from api.client import CommandRefused, get_json

    answers = Answers(api=settings.api.listen, at=time.time())
    for path in PATHS:
        try:
            got = get_json(settings, path)
        except CommandRefused as exc:
            answers.errors[path] = str(exc)
            continue
        if got is None:
            return None
        answers.json[path] = got
    return answers


class Keys:
    """Single key presses from a terminal (none from a pipe), without echo or Enter."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno() if sys.stdin.isatty() else None

    @contextlib.contextmanager
    def reading(self) -> Iterator[Keys]:
        if self._fd is None:
            yield self
            return
        saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)          # Ctrl-C still interrupts
        try:
            yield self
        finally:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, saved)

    def wait(self, seconds: float) -> str | None:
        """The key pressed within ``seconds``, if any."""
        if self._fd is None:
            time.sleep(seconds)
            return None
        ready, _, _ = select.select([self._fd], [], [], seconds)
        return os.read(self._fd, 1).decode(errors="replace") if ready else None


def run(ctx: typer.Context,
        interval: float = typer.Option(2.0, "--interval", "-n", min=0.2,
                                       help="seconds between refreshes"),
        once: bool = typer.Option(False, "--once", help="print one frame and exit")) -> None:
    """A live screen of the running instance: pools and their load, tier members, the newest
    decisions and open alerts. `q` or Ctrl-C quits."""
    cli = context(ctx)
    settings = cli.settings()
    answers = fetch(settings)
    if answers is None:
        cli.fail(f"no corelane answers at {settings.api.listen} (api.listen / CORELANE_API); "
                 f"start one with `corelane up`")
    if once:
        cli.out.print(frame(answers))
        return
    keys = Keys()
    try:
        with keys.reading(), Live(frame(answers), console=cli.out, screen=True,
                                  auto_refresh=False, vertical_overflow="crop") as live:
            while keys.wait(interval) not in ("q", "Q"):
                # an instance that went away: its last answers stay, said to be old
                answers = fetch(settings) or Answers(
                    api=answers.api, at=answers.at, json=answers.json,
                    errors={"": f"corelane at {settings.api.listen} does not answer since "
                                f"{datetime.fromtimestamp(answers.at):%H:%M:%S}; trying "
                                f"again every {interval:g} s"})
                live.update(frame(answers), refresh=True)
    except KeyboardInterrupt:
        pass
