"""Typed stats as /metrics shows them: each kind's family, its help, its labels, and the lag
that /health computes."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.health import PartHealth, current_stats, health_document, ok
from pipeline.stats import (Stats, StatsExporter, counter, gauge, labelled, labelled_gauge,
                            metric_name, note)


@dataclass
class PoolStats(Stats):
    plans: int = counter("plans made")
    last_plan_s: float | None = gauge("seconds the last plan took")
    by_tier: dict[str, int] = labelled("decisions by tier", "tier")
    cores: dict[str, int] = labelled_gauge("cores of each pool", "pool")
    last_error: str | None = note("what the last error said")


class Part:
    def __init__(self, lag_s: float | None) -> None:
        self.stats, self.lag_s = PoolStats(), lag_s

    def health(self, now: float) -> PartHealth:
        return ok(self.lag_s)


def scrape(parts: dict[str, Part]) -> dict[str, object]:
    registry = CollectorRegistry()
    registry.register(StatsExporter(lambda: current_stats(parts, now=100.0)))
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_a_labelled_gauge_is_a_gauge_per_label_and_a_label_gone_is_gone() -> None:
    part = Part(lag_s=None)
    part.stats.cores = {"critical": 2, "housekeeping": 6}
    family = scrape({"allocator": part})["corelane_allocator_cores"]
    assert family.type == "gauge" and family.documentation == "cores of each pool"
    assert {s.labels["pool"]: s.value for s in family.samples} == {"critical": 2.0,
                                                                    "housekeeping": 6.0}
    part.stats.cores = {"housekeeping": 8}       # the critical pool is gone from the plan
    family = scrape({"allocator": part})["corelane_allocator_cores"]
    assert [(s.labels["pool"], s.value) for s in family.samples] == [("housekeeping", 8.0)]


def test_each_kind_has_its_family_and_notes_stay_out() -> None:
    part = Part(lag_s=None)
    part.stats.plans, part.stats.last_plan_s = 3, 0.25
    part.stats.by_tier = {"low": 4}
    part.stats.last_error = "nothing"
    families = scrape({"allocator": part})
    assert families["corelane_allocator_plans"].type == "counter"
    assert families["corelane_allocator_last_plan_s"].samples[0].value == 0.25
    (low,) = families["corelane_allocator_by_tier"].samples
    assert (low.name, low.labels, low.value) == ("corelane_allocator_by_tier_total",
                                                 {"tier": "low"}, 4.0)
    assert "corelane_allocator_last_error" not in families
    assert all(f.documentation for f in families.values())


def test_the_lag_health_computes_is_a_gauge_and_a_part_without_one_has_none() -> None:
    families = scrape({"classifier": Part(lag_s=1.5), "bus": Part(lag_s=None)})
    assert families["corelane_classifier_lag_s"].samples[0].value == 1.5
    assert "corelane_bus_lag_s" not in families


def test_the_health_document_and_the_stats_say_the_same_lag() -> None:
    part = Part(lag_s=2.0)
    doc = health_document("h", 1.0, {"classifier": part}, now=100.0)
    assert doc.parts["classifier"].lag_s == doc.parts["classifier"].stats["lag_s"] == 2.0


def test_a_part_name_a_metric_name_cannot_hold_is_made_one() -> None:
    assert metric_name("shadow-calm", "plans") == "corelane_shadow_calm_plans"
