"""A configuration reload: a bad file is refused whole; of a good one, the live keys take
effect in the shared settings and the rest is reported as waiting for a restart."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.alerting.book import AlertBook
from corelane.reload import ReloadRefused, changed_keys, is_live, prepare, take
from pipeline.settings import AlertRule, load_settings


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "corelane.yml"
    path.write_text(text)
    return path


def test_live_keys_take_effect_and_the_rest_waits_for_a_restart(tmp_path: Path) -> None:
    path = config(tmp_path, "allocator: {mode: balanced}\n")
    current = load_settings(path, env={})
    allocator_before = current.allocator
    path.write_text("allocator: {mode: power_save, thermal: {hot_c: 70, cool_c: 60}}\n"
                    "kafka: {partitions: 3}\n"
                    "alerts: {rules: [{name: hot, signal: core_temperature, above: 80}]}\n")
    reload = prepare(current)
    assert set(reload.live) == {"allocator.mode", "allocator.thermal.hot_c",
                                "allocator.thermal.cool_c", "alerts.rules"}
    assert reload.at_restart == ("kafka.partitions",)
    take(current, reload)
    assert current.allocator.mode == "power_save" and current.allocator.thermal.hot_c == 70
    assert current.allocator is not allocator_before
    assert [r.name for r in current.alerts.rules] == ["hot"]
    assert current.kafka.partitions == 1, "the broker's settings wait for a restart"


def test_a_bad_file_or_rules_file_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    path = config(tmp_path, "allocator: {mode: balanced}\n")
    current = load_settings(path, env={})
    path.write_text("allocator: {mode: turbo}\n")
    with pytest.raises(ReloadRefused, match=r"key 'allocator\.mode'"):
        prepare(current)
    path.write_text("classifier: {rules_file: /no/such/rules.yml}\n")
    with pytest.raises(ReloadRefused, match=r"/no/such/rules\.yml.*classifier\.rules_file"):
        prepare(current)
    assert current.allocator.mode == "balanced"


def test_changed_keys_and_what_is_live() -> None:
    a, b = load_settings(env={}), load_settings(env={})
    assert changed_keys(a, b) == []
    b.applier.cgroup_root = "elsewhere"
    b.applier.protected = ["^x$"]
    assert changed_keys(a, b) == ["applier.cgroup_root", "applier.protected"]
    assert is_live("applier.protected") and not is_live("applier.cgroup_root")
    assert is_live("allocator.policy.tiers.low.nice") and not is_live("allocatorx")


def test_a_changed_or_removed_rule_resolves_its_open_alerts() -> None:
    hot = AlertRule(name="hot", signal="core_temperature", above=90, for_s=0)
    busy = AlertRule(name="busy", signal="pool_load", above=90, for_s=0)
    book = AlertBook([hot, busy])
    book.check("h", {"core_temperature": {"cpu 0": 95.0}, "pool_load": {"low": 99.0}}, 1.0)
    assert len(book.open) == 2
    resolved = book.use_rules([busy, AlertRule(name="hot", signal="core_temperature",
                                                above=99, for_s=0)], 2.0)
    assert [(a.rule, a.state) for a in resolved] == [("hot", "resolved")]
    assert [a.rule for a in book.open] == ["busy"], "an unchanged rule keeps its alert"
