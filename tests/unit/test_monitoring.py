"""The shipped Prometheus configuration and Grafana dashboard, checked against what corelane
exports: every metric a panel asks for is one some part's stats (or prometheus-client's
process collectors) make, and Prometheus scrapes the API where the default configuration
serves it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from agents.allocator import AllocatorAgent, AllocatorStats
from agents.applier import ApplierAgent, ApplierStats
from agents.classifier import ClassifierAgent, ClassifierStats
from agents.recorder import Recorder, RecorderStats
from agents.tuner import TunerAgent, TunerStats
from api.paths import METRICS_PATH
from api.server import metrics_registry
from pipeline.bus.publisher import BusStats
from pipeline.collectors.collector import CollectorStats
from pipeline.stats import Stats, metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Each part as `corelane up` names it (corelane/runtime.py) and the stats it keeps.
PARTS: dict[str, type[Stats]] = {
    "collector": CollectorStats, "bus": BusStats, Recorder.name: RecorderStats,
    ClassifierAgent.name: ClassifierStats, AllocatorAgent.name: AllocatorStats,
    ApplierAgent.name: ApplierStats, TunerAgent.name: TunerStats,
}
# What in a PromQL expression is not a metric name: label matchers, groupings, ranges,
# offsets, and words that are keywords rather than selectors.
_NOT_NAMES = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring)\s*\([^)]*\)|\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf",
             "nan"}


def every_field_set(stats: Stats) -> Stats:
    """The stats with every metric field holding a value (an unset gauge is not exported)."""
    for f in stats.fields():
        if f.kind == "gauge":
            setattr(stats, f.name, 1.0)
        elif f.kind in ("labelled", "labelled_gauge"):
            setattr(stats, f.name, {"some": 1})
    return stats


def exported_names() -> set[str]:
    """Every sample name a running corelane can show at /metrics."""
    names = {sample.name for part, cls in PARTS.items()
             for family in metric_families(part, every_field_set(cls()))
             for sample in family.samples}
    return names | {sample.name for family in metrics_registry({}).collect()
                    for sample in family.samples}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    bare = _NOT_NAMES.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _KEYWORDS}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "corelane.json").read_text())


def test_the_expression_reader_finds_names_and_only_names() -> None:
    assert metric_names('sum by (tier) (rate(corelane_allocator_decisions_by_tier_total'
                        '{tier!="x"}[$__rate_interval]))') == {
        "corelane_allocator_decisions_by_tier_total"}
    assert metric_names("process_resident_memory_bytes / on (job) up") == {
        "process_resident_memory_bytes", "up"}


def test_every_metric_the_dashboard_asks_for_is_exported() -> None:
    exported = exported_names()
    assert "corelane_allocator_pool_cores" in exported            # the derivation sees fields
    asked = {panel["title"]: {name for target in panel["targets"]
                              for name in metric_names(target["expr"])}
             for panel in dashboard()["panels"]}
    assert all(asked.values()), [title for title, names in asked.items() if not names]
    unknown = {title: names - exported for title, names in asked.items() if names - exported}
    assert not unknown, unknown


def test_the_dashboard_has_the_panels_an_operator_needs_on_the_provisioned_source() -> None:
    doc = dashboard()
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                             "corelane.yml").read_text())["datasources"][0]
    asked = " ".join(t["expr"] for p in doc["panels"] for t in p["targets"])
    for agent in ("classifier", "allocator", "applier", "tuner"):
        assert f"corelane_{agent}_lag_s" in asked and f"corelane_{agent}_events_total" in asked
    for wanted in ("pool_cores", "decisions_by_tier", "outcomes", "last_sweep_s",
                   "recorder_rows", "process_cpu_seconds", "process_resident_memory"):
        assert wanted in asked, wanted
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_scrapes_the_default_api_address() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    default = yaml.safe_load((ROOT / "config" / "default.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"].rstrip("/") == METRICS_PATH
    assert job["static_configs"][0]["targets"] == [default["api"]["listen"]]


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" /
                               "corelane.yml").read_text())["providers"][0]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"]
                  if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                             "corelane.yml").read_text())["datasources"][0]
    listen = next(a for a in compose["services"]["prometheus"]["command"]
                  if a.startswith("--web.listen-address="))
    assert source["url"] == f"http://{listen.split('=', 1)[1]}"
