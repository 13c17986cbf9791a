"""Typed stats: what each part of corelane counts, one description per field, read the same
way by ``/health`` (JSON) and ``/metrics`` (Prometheus).

A part's stats are a dataclass deriving from ``Stats`` whose fields are made with
``counter``, ``gauge``, ``labelled`` (counts by a label), ``labelled_gauge`` (figures by a
label) or ``note``. ``to_json`` turns any of them into a plain
dict, and ``StatsExporter`` into metric families named ``corelane_<part>_<field>`` with the
field's description as help (as scx_layered derives JSON, OpenMetrics and text from one
stats struct): adding a field is all it takes to see it in both places.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Kind = Literal["counter", "gauge", "labelled", "labelled_gauge", "note"]
# What a Prometheus metric name may hold; a part's name may hold more (``shadow-calm``).
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")


def counter(help: str) -> Any:
    """A count that only grows (events handled, rows written)."""
    return field(default=0, metadata={"help": help, "kind": "counter"})


def gauge(help: str, default: float | int | None = None) -> Any:
    """A figure that goes up and down (processes seen, seconds a sweep took, a timestamp)."""
    return field(default=default, metadata={"help": help, "kind": "gauge"})


def labelled(help: str, label: str) -> Any:
    """Counts by one label, e.g. events published by type: ``{"decisions": 3}``."""
    return field(default_factory=dict, metadata={"help": help, "kind": "labelled",
                                                 "label": label})


def labelled_gauge(help: str, label: str) -> Any:
    """Figures by one label that go up and down, e.g. the cores of each pool:
    ``{"critical": 2}``. A label missing from the dict is gone from the metric too."""
    return field(default_factory=dict, metadata={"help": help, "kind": "labelled_gauge",
                                                 "label": label})


def note(help: str, default: Any = None, factory: Callable[[], Any] | None = None) -> Any:
    """Anything for a person to read in /health (the last errors); not a metric."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, "kind": "note"})
    return field(default=default, metadata={"help": help, "kind": "note"})


@dataclass(frozen=True)
class StatField:
    name: str
    kind: Kind
    help: str
    label: str | None = None


@dataclass
class Stats:
    """The base of every part's stats."""
    lag_s: float | None = gauge("how far behind now the part's work is (s), as /health says: "
                                "for an agent, how old the last event it handled is")

    @classmethod
    def fields(cls) -> list[StatField]:
        out = []
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if "kind" not in meta:
                raise TypeError(f"{cls.__name__}.{f.name} needs counter(), gauge(), labelled(), "
                                f"labelled_gauge() or note() with a description")
            out.append(StatField(f.name, meta["kind"], meta["help"], meta.get("label")))
        return out

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metric_name(part: str, field_name: str) -> str:
    """The metric family of one field of a part's stats."""
    return _NOT_IN_NAME.sub("_", f"corelane_{part}_{field_name}")


def metric_families(part: str, stats: Stats) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """One part's stats as Prometheus metric families."""
    for f in stats.fields():
        value = getattr(stats, f.name)
        name = metric_name(part, f.name)
        if f.kind == "counter":
            yield CounterMetricFamily(name, f.help, value=value)
        elif f.kind == "gauge":
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)):
                yield GaugeMetricFamily(name, f.help, value=value)
        elif f.kind in ("labelled", "labelled_gauge"):
            make = CounterMetricFamily if f.kind == "labelled" else GaugeMetricFamily
            family = make(name, f.help, labels=[f.label or "label"])
            for key, figure in sorted(value.items()):
                family.add_metric([str(key)], figure)
            yield family


class StatsExporter(Collector):
    """A Prometheus collector over every part's stats, read at each scrape."""

    def __init__(self, parts: Callable[[], Mapping[str, Stats]]) -> None:
        self._parts = parts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for part, stats in self._parts().items():
            yield from metric_families(part, stats)
