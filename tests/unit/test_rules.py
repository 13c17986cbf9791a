"""Rules: every match key, behaviour bounds, first-match precedence, errors for people;
labels."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.classification.features import FEATURES
from agents.classification.rules import (
    LabelHit, 
    ContainerInfo, LabelBook, LabelError, MatchContext, RuleSet, RulesError, load_rules,
    parse_rules,
)
from config import CONFIG_DIR
from pipeline.events import Label, ProcessSample

CID = "ab" * 32


def sample(**fields) -> ProcessSample:
    base = dict(pid=42, start_time=9000, ppid=7, name="postgres",
                cmdline="/usr/lib/postgresql/16/bin/postgres -D /data", uid=999,
                cgroup="/system.slice/postgresql.service", container_id=CID)
    base.update(fields)
    return ProcessSample(**base)


CTX = MatchContext(
    user_name={999: "postgres", 0: "root"}.get,
    process_name={7: "systemd", 1: "init"}.get,
    container={CID: ContainerInfo("db-1", {"tier": "gold", "app": "pg"})}.get,
)


def one(match: dict, **extra) -> RuleSet:
    return parse_rules({"rules": [{"name": "r", "match": match, "class": "latency_critical",
                                   **extra}]})


@pytest.mark.parametrize("match, hits", [
    ({"name": "^postgres$"}, True), ({"name": "^mysqld$"}, False),
    ({"cmdline": r"-D /data"}, True), ({"cmdline": "--replica"}, False),
    ({"exe": r"/postgres$"}, True), ({"exe": "^postgres$"}, False),
    ({"user": 999}, True), ({"user": "999"}, True), ({"user": 0}, False),
    ({"user": "postgres"}, True), ({"user": "root"}, False),
    ({"cgroup": r"postgresql\.service"}, True), ({"cgroup": "docker"}, False),
    ({"container": "^db-"}, True), ({"container": "^ab"}, True), ({"container": "web"}, False),
    ({"container_label": {"tier": "^gold$"}}, True),
    ({"container_label": {"tier": "silver"}}, False),
    ({"container_label": {"missing": "."}}, False),
    ({"parent_name": "^systemd$"}, True), ({"parent_name": "^sshd$"}, False),
    ({"parent_pid": 7}, True), ({"parent_pid": 1}, False),
    ({"name": "^postgres$", "user": "postgres", "parent_pid": 7}, True),
    ({"name": "^postgres$", "user": "root"}, False),            # every key must match
])
def test_each_match_key(match: dict, hits: bool) -> None:
    assert (one(match).match(sample(), CTX) is not None) is hits


def test_container_keys_never_match_outside_a_container() -> None:
    assert one({"container": "."}).match(sample(container_id=None), CTX) is None


def test_first_matching_rule_wins_and_carries_its_settings() -> None:
    rules = parse_rules({"rules": [
        {"name": "specific", "match": {"name": "^pg$"}, "class": "interactive"},
        {"name": "db", "match": {"name": "postgres"}, "class": "latency_critical",
         "tier": "critical", "confidence": 0.8, "learn": False},
        {"name": "any", "match": {"name": "."}, "class": "background"},
    ]})
    hit = rules.match(sample(), CTX)
    assert hit is not None and hit.name == "db"
    assert (hit.cls, hit.tier, hit.confidence, hit.learn) == (
        "latency_critical", "critical", 0.8, False)
    assert rules.match(sample(name="bash"), CTX).name == "any"
    assert rules.match(sample(name="pg"), CTX).name == "specific"


def test_tier_only_rule_and_renamed_classes() -> None:
    rules = parse_rules({"rules": [{"name": "slice", "match": {"cgroup": "batch"},
                                    "tier": "low"}]})
    hit = rules.match(sample(cgroup="/batch.slice/x"), CTX)
    assert hit is not None and hit.cls is None and hit.tier == "low"
    custom = parse_rules({"rules": [{"name": "x", "match": {"name": "."}, "class": "gpu"}]},
                         classes=["gpu"])
    assert custom.match(sample(), CTX).cls == "gpu"


def test_shipped_example_loads_and_matches() -> None:
    rules = load_rules(CONFIG_DIR / "rules" / "example.yml")
    assert len(rules) >= 5
    hit = rules.match(sample(name="postgres"), CTX)
    assert hit is not None and hit.name == "databases" and hit.tier == "critical"


@pytest.mark.parametrize("text, expected", [
    ("rules:\n  - name: a\n    match: {nmae: x}\n    class: idle\n",
     ["rule 1 ('a')", "key 'match.nmae'", "unknown key"]),
    ("rules:\n  - name: a\n    match: {name: x}\n    class: idle\n"
     "  - name: b\n    match: {name: '(['}\n    class: idle\n",
     ["rule 2 ('b')", "key 'match.name'", "not a valid regular expression"]),
    ("rules:\n  - name: a\n    match: {name: x}\n    class: speedy\n",
     ["rule 1 ('a')", "key 'class'", "unknown class 'speedy'"]),
    ("rules:\n  - name: a\n    match: {name: x}\n    tier: platinum\n",
     ["rule 1 ('a')", "key 'tier'", "unknown tier 'platinum'"]),
    ("rules:\n  - name: a\n    match: {name: x}\n",
     ["rule 1 ('a')", "neither 'class' nor 'tier'"]),
    ("rules:\n  - name: a\n    match: {}\n    class: idle\n",
     ["rule 1 ('a')", "key 'match'", "matches nothing"]),
    ("rules:\n  - match: {name: x}\n    class: idle\n",
     ["rule 1", "key 'name'", "required key is missing"]),
    ("rules:\n  - name: a\n    match: {name: x}\n    class: idle\n    confidence: 2\n",
     ["rule 1 ('a')", "key 'confidence'", "less than or equal to 1"]),
    ("rules:\n  - name: a\n    match: {name: x}\n    class: idle\n"
     "  - name: a\n    match: {name: y}\n    class: idle\n",
     ["rule name 'a' is used more than once"]),
    ("rules:\n  - name: a\n    match: {name: [x\n", ["not valid YAML at line"]),
    ("- a\n", ["expected a mapping with a 'rules' list"]),
])
def test_bad_rule_files_name_file_rule_and_key(tmp_path: Path, text: str,
                                               expected: list[str]) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message
    assert "Traceback" not in message and "pydantic" not in message


def test_missing_rule_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rule file .*nope.yml"):
        load_rules(tmp_path / "nope.yml")


# --- labels ---------------------------------------------------------------------------

def test_pid_label_targets_only_that_identity() -> None:
    book = LabelBook()
    book.apply(Label(cls="latency_critical", pid=42, start_time=9000), "L1")
    assert book.lookup(sample()) == LabelHit("latency_critical", "L1")
    assert book.lookup(sample(start_time=9500)) is None      # the pid reused later
    assert book.lookup(sample(pid=43)) is None


def test_pid_label_without_start_time_binds_to_the_first_process_seen() -> None:
    book = LabelBook()
    book.apply(Label(cls="interactive", pid=42), "L1")
    assert book.lookup(sample(start_time=9000)) == LabelHit("interactive", "L1")
    assert book.lookup(sample(start_time=9000)) == LabelHit("interactive", "L1")
    assert book.lookup(sample(start_time=12000)) is None      # a new process, same pid


def test_regex_label_matches_name_or_cmdline_and_newest_wins() -> None:
    book = LabelBook()
    book.apply(Label(cls="compute_batch", match="^postgres$"), "L1")
    assert book.lookup(sample()) == LabelHit("compute_batch", "L1")
    assert book.lookup(sample(name="x", cmdline="run postgres")) is None
    book.apply(Label(cls="io_batch", match="-D /data"), "L2")          # cmdline, newer
    assert book.lookup(sample()) == LabelHit("io_batch", "L2")
    book.apply(Label(cls="background", match="^postgres$"), "L3")      # replaces L1
    assert book.lookup(sample()) == LabelHit("background", "L3")
    book.apply(Label(cls="interactive", pid=42, start_time=9000), "L4")
    assert book.lookup(sample()) == LabelHit("interactive", "L4")
    book.apply(Label(cls="latency_critical", pid=42, start_time=9000), "L5")
    assert book.lookup(sample()) == LabelHit("latency_critical", "L5")         # newer replaces


def test_auto_removes_a_label() -> None:
    book = LabelBook()
    book.apply(Label(cls="idle", pid=42, start_time=9000), "L1")
    book.apply(Label(cls="idle", match="postgres"), "L2")
    book.apply(Label(cls="auto", pid=42, start_time=9000), "L3")
    assert book.lookup(sample()) == LabelHit("idle", "L2")
    book.apply(Label(cls="auto", match="postgres"), "L4")
    assert book.lookup(sample()) is None


@pytest.mark.parametrize("label, expected", [
    (Label(cls="speedy", pid=1), "unknown class 'speedy'"),
    (Label(cls="idle"), "either a pid or a match regex, not neither"),
    (Label(cls="idle", pid=1, match="x"), "not both"),
    (Label(cls="idle", match="(["), "not a valid regular expression"),
])
def test_bad_labels_say_why(label: Label, expected: str) -> None:
    with pytest.raises(LabelError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        LabelBook().apply(label, "L9")


# --- behaviour conditions (`when`) ----------------------------------------------------

def vec(**values: float) -> list[float]:
    v = [0.0] * len(FEATURES)
    for name, value in values.items():
        v[FEATURES.index(name)] = value
    return v


PROBE = vec(wakeups_s=900, vol_ratio=0.99, run_us_slice=20, cpu_mean=0.02)
HOG = vec(cpu_demand=1.0, vol_ratio=0.0, cpu_mean=0.5)


def test_when_bounds_are_inclusive_and_all_must_hold() -> None:
    rules = parse_rules({"rules": [{"name": "lat", "class": "latency_critical", "when": {
        "wakeups_s": {"min": 200}, "vol_ratio": {"min": 0.7}, "run_us_slice": {"max": 50}}}]})
    hit = rules.match_prior(PROBE)
    assert hit is not None and hit.name == "lat" and hit.prior is True
    assert rules.match_prior(vec(wakeups_s=200, vol_ratio=0.7, run_us_slice=50)) is not None
    assert rules.match_prior(vec(wakeups_s=199.9, vol_ratio=0.99, run_us_slice=20)) is None
    assert rules.match_prior(vec(wakeups_s=900, vol_ratio=0.99, run_us_slice=50.1)) is None
    assert rules.match_prior(HOG) is None
    assert rules.match_prior(None) is None          # no window yet: no behaviour to test
    # ``match`` without features never fires a rule that has bounds.
    assert rules.match(sample(), CTX) is None
    assert rules.match(sample(), CTX, PROBE).name == "lat"


def test_identity_rules_come_before_priors_whatever_the_file_order() -> None:
    rules = parse_rules({"rules": [
        {"name": "hog", "when": {"cpu_demand": {"min": 0.9}}, "class": "compute_batch"},
        {"name": "pg-busy", "match": {"name": "^postgres$"},
         "when": {"cpu_demand": {"min": 0.9}}, "class": "io_batch"},
        {"name": "pg", "match": {"name": "^postgres$"}, "class": "latency_critical"},
    ]})
    assert [r.hit.name for r in rules.identity_rules] == ["pg-busy", "pg"]
    assert [r.hit.name for r in rules.priors] == ["hog"]
    assert rules.match_identity(sample(), CTX, HOG).name == "pg-busy"
    assert rules.match_identity(sample(), CTX, PROBE).name == "pg"   # bounds fail: next
    assert rules.match_identity(sample(name="x"), CTX, HOG) is None
    hit = rules.match_identity(sample(), CTX, HOG)
    assert hit.prior is False                        # a `match` makes it an identity rule
    assert rules.match_prior(HOG).name == "hog"


@pytest.mark.parametrize("text, expected", [
    ("rules:\n  - name: a\n    when: {wakeup_s: {min: 1}}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when.wakeup_s'", "unknown feature 'wakeup_s'",
      "did you mean 'wakeups_s'", "cpu_demand"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: {minimum: 1}}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when.cpu_mean.minimum'", "unknown key"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: {min: 2, max: 1}}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when.cpu_mean'", "min 2 is above max 1"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: {}}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when.cpu_mean'", "give 'min', 'max' or both"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: 0.5}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when.cpu_mean'"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: {max: .inf}}\n    class: idle\n",
     ["rule 1 ('a')", "finite"]),
    ("rules:\n  - name: a\n    when: {}\n    class: idle\n",
     ["rule 1 ('a')", "key 'when'", "tests nothing"]),
    ("rules:\n  - name: a\n    class: idle\n",
     ["rule 1 ('a')", "neither 'match'", "nor 'when'"]),
    ("rules:\n  - name: a\n    when: {cpu_mean: {max: 0.1}}\n    tier: low\n",
     ["rule 1 ('a')", "behaviour prior", "must set a 'class'"]),
])
def test_bad_when_names_file_rule_and_key(tmp_path: Path, text: str,
                                          expected: list[str]) -> None:
    path = tmp_path / "priors.yml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message
    assert "pydantic" not in message


def test_example_file_has_a_combined_rule_and_a_prior() -> None:
    rules = load_rules(CONFIG_DIR / "rules" / "example.yml")
    java = sample(name="java", cmdline="/usr/bin/java -jar svc.jar")
    assert rules.match_identity(java, CTX, HOG).name == "busy-jvm"
    assert rules.match_identity(java, CTX, PROBE) is None
    assert rules.match_prior(PROBE).cls == "latency_critical"


def test_a_label_may_name_a_tier_alone_or_with_a_class() -> None:
    book = LabelBook()
    book.apply(Label(tier="critical", pid=42, start_time=9000), "L1")
    assert book.lookup(sample()) == LabelHit(None, "L1", "critical")
    book.apply(Label(cls="idle", tier="low", match="postgres"), "L2")
    assert book.lookup(sample()) == LabelHit("idle", "L2", "low")
    with pytest.raises(LabelError, match="unknown tier 'gold'"):
        book.apply(Label(tier="gold", pid=42), "L3")
    with pytest.raises(LabelError, match="give a class or a tier"):
        book.apply(Label(pid=42), "L4")
