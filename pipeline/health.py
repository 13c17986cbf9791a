"""The health document: per part of corelane, a state, a reason and a lag.

``/health`` serves it (and later API endpoints build on it). Each part that runs reports
its own ``PartHealth`` through the ``Reporting`` protocol; the document's status is the
worst of its parts'.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from pipeline.stats import Stats

State = Literal["ok", "degraded", "down"]
_ORDER: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}


class PartHealth(BaseModel):
    state: State = Field(description="ok: working; degraded: working, with a problem; "
                                      "down: not working")
    reason: str = Field("", description="why, when the state is not ok")
    lag_s: float | None = Field(None, description="how far behind now the part's work is, "
                                                  "in seconds (None where it has no lag)")


class PartReport(PartHealth):
    stats: dict[str, Any] = Field(default_factory=dict,
                                  description="the part's counters and gauges")


class HealthDocument(BaseModel):
    status: State = Field(description="the worst state of any part")
    live: bool = Field(True, description="the instance answers (always true in an answer)")
    ready: bool = Field(description="every part runs: none is down")
    host: str
    role: str = Field("all", description="the role this process runs (all, edge, worker, "
                                         "recorder): its parts are this process's own, and "
                                         "other roles answer for theirs")
    uptime_s: float
    parts: dict[str, PartReport]


class Reporting(Protocol):
    """A part of a running corelane: its stats, and its health at ``now``."""
    stats: Stats

    def health(self, now: float) -> PartHealth: ...


def ok(lag_s: float | None = None) -> PartHealth:
    return PartHealth(state="ok", lag_s=lag_s)


def degraded(reason: str, lag_s: float | None = None) -> PartHealth:
    return PartHealth(state="degraded", reason=reason, lag_s=lag_s)


def down(reason: str) -> PartHealth:
    return PartHealth(state="down", reason=reason)


def part_health(part: Reporting, now: float) -> PartHealth:
    """A part's health at ``now``; its lag goes into its stats too, for /metrics."""
    h = part.health(now)
    part.stats.lag_s = h.lag_s
    return h


def current_stats(parts: Mapping[str, Reporting], now: float) -> dict[str, Stats]:
    """Each part's stats, with its lag as of ``now``."""
    for part in parts.values():
        part_health(part, now)
    return {name: part.stats for name, part in parts.items()}


def health_document(host: str, uptime_s: float, parts: Mapping[str, Reporting],
                    now: float, role: str = "all") -> HealthDocument:
    reports = {}
    for name, part in parts.items():
        h = part_health(part, now)
        reports[name] = PartReport(**h.model_dump(), stats=part.stats.to_json())
    status = max((r.state for r in reports.values()), key=_ORDER.__getitem__, default="ok")
    return HealthDocument(status=status, ready=status != "down", host=host, role=role,
                          uptime_s=round(uptime_s, 3), parts=reports)
