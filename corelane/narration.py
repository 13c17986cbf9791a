"""What `corelane up` tells its terminal: one line per change that matters, and a summary
every minute.

A change that matters is a process placed somewhere new (with what it was judged and what
it is told), a host's mode or strategy switching, an operator's command and an alert
opening or resolving. The narrator reads the same events as the live view, after it
(``api.live.LiveState``), so the names and classes it quotes are the live view's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agents.allocation import action
from api.live import HostState, LiveState, Plan
from pipeline.events import Alert, Decision, Envelope
from pipeline.vocabulary import HOUSEKEEPING, TIERS

log = logging.getLogger("corelane")

# A plan that moves more processes than this is told in this many lines and a count (the
# first plan of a host places everything).
MAX_LINES_PER_PLAN = 8


def _told(d: Decision) -> str:
    bits = [f"cpu {d.cpus}"]
    if d.nice is not None:
        bits.append(f"nice {d.nice}")
    if d.policy is not None and d.policy != "other":
        bits.append(f"policy {d.policy}")
    if d.ioclass is not None:
        bits.append(f"io {d.ioclass}" + (f" {d.iolevel}" if d.iolevel is not None else ""))
    if d.cgroup:
        bits.append(f"group {d.cgroup}")
    return ", ".join(bits)


def plan_lines(before: Plan | None, after: Plan, h: HostState,
               limit: int = MAX_LINES_PER_PLAN) -> list[str]:
    """One line per process the new plan places or tells otherwise than the one before
    (housekeeping, which corelane leaves as it is, left out), then the mode and strategy
    if they changed."""
    lines: list[str] = []
    changed = []
    for key, d in sorted(after.processes.items()):
        if d.tier == HOUSEKEEPING:
            continue
        old = before.processes.get(key) if before else None
        if old is not None and action(old) == action(d) and old.tier == d.tier:
            continue
        changed.append((key, d))
    for key, d in changed[:limit]:
        sample, judged = h.samples.get(key), h.classes.get(key)
        name = f" ({sample.name})" if sample else ""
        verdict = f"judged {judged.cls}, " if judged else ""
        lines.append(f"pid {key[0]}{name} {verdict}tier {d.tier} → {_told(d)}")
    if len(changed) > limit:
        lines.append(f"… and {len(changed) - limit} more in plan {after.seq} "
                     f"(`corelane status` lists every tier)")
    if before is None or before.mode != after.mode:
        lines.append(f"mode → {after.mode}" + (f" (was {before.mode})" if before else ""))
    if after.strategy and (before is None or before.strategy != after.strategy):
        lines.append(f"strategy → {after.strategy}")
    return lines


def summary_line(h: HostState, open_alerts: int) -> str | None:
    """Processes per tier, the cores of each tier, the mode and strategy, the alerts."""
    plan = h.plan
    if plan is None:
        return None
    members: dict[str, int] = {}
    cores: dict[str, str] = {}
    for d in plan.processes.values():
        members[d.tier] = members.get(d.tier, 0) + 1
        cores.setdefault(d.tier, d.cpus)
    tiers = ", ".join(f"{t} {members[t]} on cpu {cores[t]}"
                      for t in (*TIERS, HOUSEKEEPING) if members.get(t))
    return (f"plan {plan.seq}: {tiers or 'no process'}; mode {plan.mode}, strategy "
            f"{plan.strategy or '-'}; {open_alerts} alert(s) open")


def event_lines(event: Envelope) -> list[str]:
    """The lines an operator's command, a strategy choice or an alert is worth."""
    data: Any = event.data
    if event.type == "command":
        args = ", ".join(f"{k} {v}" for k, v in sorted(data.args.items()) if v not in (None, ""))
        return [f"command {data.name}" + (f" ({args})" if args else "")]
    if event.type == "strategy" and data.state != "trial":
        return [f"strategy {data.state}: {data.strategy}" + (f" ({data.reason})" if data.reason
                                                              else "")]
    if event.type == "alert":
        alert: Alert = data
        return [f"alert {'resolved' if alert.state == 'resolved' else 'opened'} "
                f"[{alert.severity}]: {alert.message}"]
    return []


class Narrator:
    """Folds events into lines for ``say`` (the log at info by default); hosts other than
    ``own_host`` are named in each line."""

    def __init__(self, live: LiveState, own_host: str,
                 say: Callable[[str], None] = log.info) -> None:
        self.live, self.own_host, self.say = live, own_host, say
        self._told: dict[str, Plan] = {}

    def on_event(self, event: Envelope) -> None:
        lines = event_lines(event)
        if event.type == "decisions":
            plan = self.live.host(event.host).plan
            before = self._told.get(event.host)
            if plan is not None and (before is None or plan.batch != before.batch):
                lines = plan_lines(before, plan, self.live.host(event.host))
                self._told[event.host] = plan
        prefix = "" if event.host == self.own_host else f"{event.host}: "
        for line in lines:
            self.say(prefix + line)

    def summarise(self) -> None:
        for host, h in sorted(self.live.hosts.items()):
            opened = sum(1 for where, _ in self.live.open_alerts.values() if where == host)
            line = summary_line(h, opened)
            if line:
                self.say(("" if host == self.own_host else f"{host}: ") + line)
