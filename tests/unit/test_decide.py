"""Precedence, hysteresis and heartbeats; the whole core over a stream of sweeps."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from agents.classification.decide import Classifier, Decider
from agents.classification.features import FEATURES
from agents.classification.model import OnlineModel
from agents.classification.rules import LabelHit, RuleHit, parse_rules
from pipeline.events import Classification, ContainerSample, Label, ProcessSample

KEY = (42, 9000)
RULE = RuleHit("dbs", "latency_critical", None, 1.0, True)
TIER_RULE = RuleHit("slice", None, "low", 1.0, False)


def test_precedence_label_then_rule_then_model() -> None:
    d = Decider(heartbeat_s=1e9)
    first = d.decide(KEY, 0.0, label=LabelHit("io_batch", "L1"), rule=RULE,
                     model=("compute_batch", 0.9, "v3"))
    assert first == Classification(pid=42, start_time=9000, cls="io_batch", tier="low",
                                   confidence=1.0, source="label", reason="label L1")
    out = d.decide(KEY, 1.0, rule=RULE, model=("compute_batch", 0.9, "v3"))
    assert (out.cls, out.tier, out.source, out.reason) == (
        "latency_critical", "ultra_critical", "rule", "rule dbs")
    out = d.decide(KEY, 2.0, model=("compute_batch", 0.9, "v3"))
    assert (out.cls, out.tier, out.source) == ("compute_batch", "low", "model")
    assert out.reason == "model v3 p=0.90" and out.confidence == pytest.approx(0.9)


def test_tier_only_rule_pins_the_tier_and_keeps_the_model_class() -> None:
    d = Decider(heartbeat_s=1e9)
    out = d.decide(KEY, 0.0, rule=TIER_RULE)
    assert (out.cls, out.tier, out.source) == ("unclassified", "low", "rule")
    out = d.decide(KEY, 1.0, rule=TIER_RULE, model=("interactive", 0.8, "v1"))
    assert (out.cls, out.tier) == ("interactive", "low")
    assert "rule slice" in out.reason and "model v1 p=0.80" in out.reason


def test_alternating_predictions_never_flap_and_n_agreeing_windows_change() -> None:
    d = Decider(hysteresis_windows=3, heartbeat_s=1e9)
    assert d.decide(KEY, 0, model=("compute_batch", 0.9, "v1")).cls == "compute_batch"
    emitted = []
    for t in range(1, 21):
        cls = "io_batch" if t % 2 else "compute_batch"
        emitted.append(d.decide(KEY, t, model=(cls, 0.9, "v1")))
    assert emitted == [None] * 20
    assert d.current(KEY).cls == "compute_batch"
    assert d.decide(KEY, 21, model=("io_batch", 0.9, "v1")) is None
    assert d.decide(KEY, 22, model=("io_batch", 0.9, "v1")) is None
    changed = d.decide(KEY, 23, model=("io_batch", 0.8, "v1"))
    assert changed is not None and changed.cls == "io_batch" and changed.tier == "low"


def test_low_confidence_votes_neither_change_nor_reset() -> None:
    d = Decider(hysteresis_windows=2, heartbeat_s=1e9, min_model_confidence=0.6)
    assert d.decide(KEY, 0, model=("idle", 0.9, "v1")).cls == "idle"
    assert d.decide(KEY, 1, model=("background", 0.9, "v1")) is None
    assert d.decide(KEY, 2, model=("interactive", 0.2, "v1")) is None  # ignored
    assert d.decide(KEY, 3, model=("background", 0.9, "v1")).cls == "background"
    for t in range(4, 10):                                             # never a change
        assert d.decide(KEY, t, model=("interactive", 0.3, "v1")) is None
    assert d.current(KEY).cls == "background"


def test_a_hesitant_model_only_starts_a_guess_and_gives_way_at_once() -> None:
    d = Decider(hysteresis_windows=3, heartbeat_s=1e9, min_model_confidence=0.6)
    first = d.decide(KEY, 0, model=("idle", 0.3, "v1"))
    assert (first.cls, first.source) == ("idle", "model")
    assert first.reason == "model v1 p=0.30 (below 0.60)"
    assert d.decide(KEY, 1, model=("background", 0.4, "v1")) is None   # weak: no change
    out = d.decide(KEY, 2, prior=PRIOR_LAT)                            # a real opinion
    assert (out.cls, out.source, out.reason) == ("latency_critical", "rule",
                                                 "rule short-wakeups")


# --- behaviour priors -----------------------------------------------------------------

PRIOR_LAT = RuleHit("short-wakeups", "latency_critical", None, 0.95, True, prior=True)
PRIOR_HOG = RuleHit("wants-a-core", "compute_batch", None, 0.95, True, prior=True)
IO_RULE = RuleHit("backups", "io_batch", None, 1.0, True)


def test_full_precedence_order() -> None:
    d = Decider(heartbeat_s=1e9, min_model_confidence=0.5, hysteresis_windows=1)
    sure, unsure = ("interactive", 0.8, "v2"), ("interactive", 0.3, "v2")
    out = d.decide(KEY, 0, label=LabelHit("idle", "L1"), rule=IO_RULE, prior=PRIOR_LAT, model=sure)
    assert (out.cls, out.source) == ("idle", "label")
    out = d.decide(KEY, 1, rule=IO_RULE, prior=PRIOR_LAT, model=sure)
    assert (out.cls, out.source, out.reason) == ("io_batch", "rule", "rule backups")
    out = d.decide(KEY, 2, prior=PRIOR_LAT, model=sure)                # prior over model
    assert (out.cls, out.source, out.reason) == ("latency_critical", "rule",
                                                 "rule short-wakeups")
    assert out.tier == "ultra_critical" and out.confidence == pytest.approx(0.95)
    out = d.decide(KEY, 3, model=sure)                                 # model where no rule
    assert (out.cls, out.source) == ("interactive", "model")
    assert d.decide(KEY, 4, model=unsure) is None                      # unsure: no change


def test_a_prior_passed_as_rule_still_ranks_above_the_model() -> None:
    d = Decider(heartbeat_s=1e9, hysteresis_windows=1)
    out = d.decide(KEY, 0, rule=PRIOR_LAT, model=("compute_batch", 0.9, "v1"))
    assert (out.cls, out.source) == ("latency_critical", "rule")


def test_a_young_model_confidently_wrong_cannot_overrule_a_matching_prior() -> None:
    # Taught on a host of idle processes, a model calls everything background with a
    # high probability; the latency-critical process still comes out as such.
    d = Decider(heartbeat_s=1e9, hysteresis_windows=3, min_model_confidence=0.5)
    for t in range(10):
        out = d.decide(KEY, t, prior=PRIOR_LAT, model=("background", 0.95, "v1"))
        assert out is None or out.cls == "latency_critical"
    assert d.current(KEY).cls == "latency_critical"


def test_no_flapping_between_a_prior_and_the_model() -> None:
    d = Decider(heartbeat_s=1e9, hysteresis_windows=3, min_model_confidence=0.5)
    assert d.decide(KEY, 0, prior=PRIOR_HOG).cls == "compute_batch"
    # The prior matches every other window and a confident model says another class in
    # between: prior and model alternate. Nothing may be emitted.
    emitted = []
    for t in range(1, 22):                                             # ends on a prior
        prior = PRIOR_HOG if t % 2 else None
        emitted.append(d.decide(KEY, t, prior=prior, model=("realtime_stream", 0.7, "v1")))
    assert emitted == [None] * 21
    assert (d.current(KEY).cls, d.current(KEY).source) == ("compute_batch", "rule")
    # Three windows in a row with no rule and a confident model do change it, and then the
    # prior cannot change it back in fewer than three.
    outs = [d.decide(KEY, 22 + i, model=("realtime_stream", 0.7, "v1")) for i in range(3)]
    assert outs[:2] == [None, None] and outs[2].cls == "realtime_stream"
    assert outs[2].source == "model"
    outs = [d.decide(KEY, 25 + i, prior=PRIOR_HOG) for i in range(3)]
    assert outs[:2] == [None, None] and (outs[2].cls, outs[2].source) == (
        "compute_batch", "rule")


def test_same_class_moving_from_prior_to_model_needs_agreeing_windows_too() -> None:
    d = Decider(heartbeat_s=1e9, hysteresis_windows=2, min_model_confidence=0.5)
    assert d.decide(KEY, 0, prior=PRIOR_HOG).source == "rule"
    sure = ("compute_batch", 0.9, "v1")
    assert d.decide(KEY, 1, model=sure) is None                        # one window: no
    assert d.decide(KEY, 2, prior=PRIOR_HOG, model=sure) is None       # back: resets
    assert d.decide(KEY, 3, model=sure) is None
    out = d.decide(KEY, 4, model=sure)
    assert (out.cls, out.source, out.reason) == ("compute_batch", "model", "model v1 p=0.90")


def test_labels_apply_at_once_and_removing_one_falls_back_to_the_settled_model() -> None:
    d = Decider(hysteresis_windows=3, heartbeat_s=1e9)
    d.decide(KEY, 0, model=("compute_batch", 0.9, "v1"))
    out = d.decide(KEY, 1, label=LabelHit("latency_critical", "L1"), model=("compute_batch", 0.9, "v1"))
    assert out.cls == "latency_critical" and out.source == "label"
    out = d.decide(KEY, 2, model=("compute_batch", 0.9, "v1"))
    assert out.cls == "compute_batch" and out.source == "model"


def test_heartbeat_repeats_an_unchanged_class() -> None:
    d = Decider(heartbeat_s=10)
    vote = ("background", 0.9, "v2")
    times = [t for t in range(0, 35) if d.decide(KEY, float(t), model=vote) is not None]
    assert times == [0, 10, 20, 30]
    assert d.decide((1, 2), 5.0) is None            # no opinion at all: nothing to say


def test_keys_must_end_in_pid_and_start_time() -> None:
    d = Decider()
    out = d.decide(("host-a", 5, 77), 0.0, label=LabelHit("idle", "L1"))
    assert (out.pid, out.start_time) == (5, 77)
    with pytest.raises(TypeError, match="must be a tuple"):
        d.decide("nope", 0.0, label=LabelHit("idle", "L1"))


# --- the whole core -------------------------------------------------------------------

def proc(pid: int, k: int, kind: str, name: str = "w", **extra) -> ProcessSample:
    """Cumulative counters after k seconds of a busy or a wake-up-heavy process (with a
    little jitter: real rates are never constant, and a tree cannot split on constants)."""
    j = (k * 7 + pid) % 5 / 10                       # 0 .. 0.4, different per process
    if kind == "busy":
        counters = dict(cpu_time_s=0.8 * k + 0.1 * j, vol_ctx=5 * k, invol_ctx=int(300 * (k + j)),
                        run_time_ns=int(8e8 * k + 1e8 * j), timeslices=int(305 * (k + j)))
    else:
        counters = dict(cpu_time_s=0.1 * k + 0.05 * j, vol_ctx=int(5000 * (k + j)),
                        invol_ctx=2 * k, run_time_ns=int(1e8 * k + 5e7 * j),
                        timeslices=int(5002 * (k + j)))
    return ProcessSample(pid=pid, start_time=pid * 10, ppid=1, name=name, **counters, **extra)


def test_classifier_emits_once_the_window_is_ready_and_teaches_the_model() -> None:
    rules = parse_rules({"rules": [{"name": "spinners", "match": {"name": "^spin"},
                                    "class": "compute_batch"}]})
    clf = Classifier(model=OnlineModel(), rules=rules, min_samples=5, min_span_s=4,
                     heartbeat_s=1e9, user_name=lambda uid: None)
    clf.apply_label(Label(cls="latency_critical", match="^wake"), "L1")
    first_seen = {}
    for k in range(60):
        batch = [proc(1, k, "busy", "spin1"), proc(2, k, "wakey", "wake2")]
        if k >= 40:                                  # two new, unnamed processes
            batch += [proc(3, k - 40, "busy", "x3"), proc(4, k - 40, "wakey", "x4")]
        result = clf.sweep(1000.0 + k, batch)
        for c in result.classifications:
            first_seen.setdefault(c.pid, (k, c))
    assert first_seen[1][0] == 4 and first_seen[1][1].source == "rule"
    assert first_seen[2][1].source == "label" and first_seen[2][1].reason == "label L1"
    assert clf.model.n_learned > 0
    assert first_seen[3][1].cls == "compute_batch" and first_seen[3][1].source == "model"
    assert first_seen[4][1].cls == "latency_critical" and first_seen[4][1].source == "model"
    assert first_seen[4][1].reason.startswith("model v0+")


def test_only_an_early_tier_is_judged_from_a_short_window_and_it_teaches_nothing() -> None:
    rules = parse_rules({"rules": [
        {"name": "spinners", "match": {"name": "^spin"}, "class": "compute_batch"},
        {"name": "wakers", "match": {"name": "^wake"}, "class": "latency_critical",
         "learn": True}]})
    clf = Classifier(model=OnlineModel(), rules=rules, min_samples=5, min_span_s=4,
                     heartbeat_s=1e9, user_name=lambda uid: None)
    first_seen: dict[int, int] = {}
    for k in range(6):
        result = clf.sweep(1000.0 + k, [proc(1, k, "busy", "spin1"), proc(2, k, "wakey", "wake2")])
        for c in result.classifications:
            first_seen.setdefault(c.pid, k)
        if k < 4:
            assert clf.model.n_learned == 0           # short windows teach nothing
    assert first_seen == {2: 1, 1: 4}                 # ultra_critical at its second sample
    late = Classifier(model=OnlineModel(), rules=rules, min_samples=5, min_span_s=4,
                      early_tiers=(), heartbeat_s=1e9, user_name=lambda uid: None)
    seen = [k for k in range(6) if late.sweep(1000.0 + k, [proc(2, k, "wakey", "wake2")]).classifications]
    assert seen[0] == 4


def test_from_settings_loads_the_shipped_priors_unless_turned_off() -> None:
    from pipeline.settings import ClassifierSettings
    clf = Classifier.from_settings(ClassifierSettings())
    assert len(clf.rules.priors) >= 8 and clf.prior_learn_interval_s == 10
    assert len(Classifier.from_settings(ClassifierSettings(rules_file="none")).rules) == 0


def test_a_prior_teaches_the_model_which_then_classifies_what_no_prior_covers() -> None:
    rules = parse_rules({"rules": [
        {"name": "hog", "when": {"cpu_mean": {"min": 0.6}}, "class": "compute_batch"},
        {"name": "wakey", "when": {"wakeups_s": {"min": 4000}}, "class": "latency_critical"},
        {"name": "unsure", "when": {"cpu_mean": {"max": 0.01}}, "class": "idle",
         "confidence": 0.5},                        # below learn_min_rule_confidence
    ]})
    clf = Classifier(model=OnlineModel(), rules=rules, heartbeat_s=1e9,
                     prior_learn_interval_s=0, user_name=lambda uid: None)
    assert clf.model.predict([0.0] * len(FEATURES)) is None      # a fresh model knows nothing
    seen = {}
    for k in range(40):
        result = clf.sweep(float(k), [proc(1, k, "busy", "a.out"), proc(2, k, "wakey", "a.out")])
        for c in result.classifications:
            seen.setdefault(c.pid, c)
    assert (seen[1].cls, seen[1].source, seen[1].reason) == ("compute_batch", "rule",
                                                             "rule hog")
    assert (seen[2].cls, seen[2].reason) == ("latency_critical", "rule wakey")
    assert clf.model.n_learned == 2 * 36
    assert clf.model.classes == {"compute_batch", "latency_critical"}
    # The same behaviours, each just outside its prior's bound: no prior matches, and
    # the model, taught only by the priors, still tells them apart.
    busy, wakey = clf.features_of((1, 10)), clf.features_of((2, 20))
    busy[FEATURES.index("cpu_mean")] = 0.5
    wakey[FEATURES.index("wakeups_s")] = 3000.0
    assert rules.match_prior(busy) is None and rules.match_prior(wakey) is None
    assert clf.model.predict(busy)[0] == "compute_batch"
    assert clf.model.predict(wakey)[0] == "latency_critical"


def test_priors_teach_one_window_per_process_per_interval() -> None:
    rules = parse_rules({"rules": [{"name": "hog", "when": {"cpu_mean": {"min": 0.6}},
                                    "class": "compute_batch"}]})
    clf = Classifier(rules=rules, prior_learn_interval_s=10, user_name=lambda uid: None)
    learned = sum(clf.sweep(float(k), [proc(1, k, "busy")]).learned for k in range(35))
    assert learned == 4                              # windows ready at 4, 14, 24, 34


def test_identity_rule_and_label_teach_instead_of_the_prior() -> None:
    rules = parse_rules({"rules": [
        {"name": "hog", "when": {"cpu_mean": {"min": 0.6}}, "class": "compute_batch"},
        {"name": "named", "match": {"name": "^spin$"}, "class": "io_batch"},
    ]})
    clf = Classifier(rules=rules, prior_learn_interval_s=0, heartbeat_s=1e9,
                     user_name=lambda uid: None)
    out = []
    for k in range(8):
        out += clf.sweep(float(k), [proc(1, k, "busy", "spin")]).classifications
    assert [(c.cls, c.reason) for c in out] == [("io_batch", "rule named")]
    assert clf.model.classes == {"io_batch"}


def test_container_rules_and_expiry() -> None:
    cid = "c" * 64
    rules = parse_rules({"rules": [{"name": "gold", "match": {"container": "^gold-"},
                                    "class": "interactive", "learn": False}]})
    clf = Classifier(rules=rules, min_samples=2, min_span_s=1, expire_s=10,
                     user_name=lambda uid: None)
    for k in range(3):
        assert not clf.sweep(float(k), [proc(1, k, "busy", container_id=cid)]).classifications
    clf.update_containers([ContainerSample(id=cid, name="gold-1")])
    out = clf.sweep(3.0, [proc(1, 3, "busy", container_id=cid)])
    assert [c.cls for c in out.classifications] == ["interactive"]
    assert clf.model.n_learned == 0                  # learn: false
    assert len(clf) == 1
    clf.sweep(30.0, [proc(2, 0, "busy")])
    assert len(clf) == 1 and clf.decider.current((1, 10)) is None


def test_a_still_window_keeps_its_vote_until_it_moves_or_revote_is_due() -> None:
    from agents.classification.decide import REVOTE_S

    class Counting(OnlineModel):
        asked = 0

        def predict_many(self, vectors):  # type: ignore[no-untyped-def]
            Counting.asked += len(vectors)
            return super().predict_many(vectors)

    c = Classifier(model=Counting(), learn=False, heartbeat_s=1e9, window_s=5,
                   min_samples=3, min_span_s=2)
    asleep = dict(pid=7, start_time=70, ppid=1, name="s", cpu_time_s=1.0, vol_ctx=5)
    for t in range(8):                      # 8 s: the 5 s window fills with still intervals
        c.sweep(1000.0 + t, [ProcessSample(**asleep)])
    before = Counting.asked
    for t in range(8, 11):                  # judged first at 1 s (early), so due at 11 s
        c.sweep(1000.0 + t, [ProcessSample(**asleep)])
    assert Counting.asked == before                     # still: the last vote holds
    c.sweep(1011.0, [ProcessSample(**{**asleep, "vol_ctx": 6})])
    assert Counting.asked == before + 1                 # it moved: voted again
    for t in range(12, 12 + int(REVOTE_S) + 8):
        c.sweep(1000.0 + t, [ProcessSample(**{**asleep, "vol_ctx": 6})])
    assert Counting.asked >= before + 1 + 4             # voted while its window refilled,
    assert Counting.asked < before + 1 + int(REVOTE_S) + 8   # and at most every REVOTE_S after


def test_a_new_process_sampled_fast_is_judged_on_what_it_does_after_its_start_up() -> None:
    from pipeline.settings import ClassifierSettings
    clf = Classifier.from_settings(ClassifierSettings())
    judged_at = None
    for k in range(30):                       # 10 Hz, as the collector samples a new process
        t = k / 10
        cpu = min(t, 0.1) * 0.9 + max(t - 0.1, 0) * 0.01    # 90 ms of imports, then sleeps
        s = ProcessSample(pid=5, start_time=50, ppid=1, name="x", cpu_time_s=round(cpu, 4),
                          vol_ctx=int(max(t - 0.1, 0) * 1000), run_time_ns=int(cpu * 1e9),
                          timeslices=int(max(t - 0.1, 0) * 1000) + 5)
        out = clf.sweep(1000.0 + t, [s]).classifications
        if out and judged_at is None:
            judged_at = t
            assert out[0].tier == "ultra_critical", out
    assert judged_at is not None and judged_at <= 0.4, judged_at


def test_a_tier_label_pins_the_tier_and_keeps_the_judged_class() -> None:
    d = Decider()
    sure = ("compute_batch", 0.9, "v1")
    out = d.decide(KEY, 0.0, label=LabelHit(None, "L1", "critical"), model=sure)
    assert (out.cls, out.tier, out.source, out.reason) == (
        "compute_batch", "critical", "label", "label L1")
    out = d.decide(KEY, 1.0, label=LabelHit("idle", "L2", "low"), model=sure)
    assert (out.cls, out.tier) == ("idle", "low")


def test_a_shell_asleep_after_its_start_up_is_judged_asleep_once_its_age_is_known() -> None:
    """Two wake-ups while a shell starts read as a light timer (background) over a short
    window, unless the host's boot time says that they happened during its start-up."""
    from agents.classification.hosts import HostClassifiers
    from pipeline.events import HostSample, ProcessSamples, envelope
    from pipeline.settings import ClassifierSettings
    boot, born = 1_000_000.0, 1_000_000.0 + 50 / 100

    def judged(with_boot: bool) -> str:
        hosts = HostClassifiers(ClassifierSettings(), OnlineModel(),
                                Classifier.from_settings(ClassifierSettings()).rules)
        if with_boot:
            hosts.on_host_sample(envelope(HostSample(
                cpu_percent=[0.0], cpu_freq_khz=[None], load=(0.0, 0.0, 0.0),
                mem_total_bytes=1, mem_available_bytes=1, boot_time=boot), "h", 1, ts=born))
        classes = []
        for k in range(12):                   # at its fork, then at 2 Hz
            t = born + 0.02 + k * 0.5
            s = ProcessSample(pid=7, start_time=50, ppid=1, name="bash",
                              vol_ctx=0 if k == 0 else 2, timeslices=0 if k == 0 else 3)
            out = hosts.on_samples(envelope(ProcessSamples(batch=f"b{k}", samples=[s]),
                                            "h", 2 + k, ts=t))
            classes += [c.cls for c in out.classifications]
        assert classes, "never judged"
        return classes[0]

    assert judged(with_boot=False) == "background"
    assert judged(with_boot=True) == "idle"


def _first_judgement(clf: Classifier, cpu_at: Callable[[float], float]
                     ) -> tuple[float | None, str | None]:
    """(when, tier) of a new process's first judgement within 8 s, sampled at 10 Hz, whose
    CPU time at ``t`` is ``cpu_at(t)``; (None, None) when there is none."""
    for k in range(80):
        t = k / 10
        cpu = cpu_at(t)
        s = ProcessSample(pid=6, start_time=60, ppid=1, name="y", cpu_time_s=round(cpu, 4),
                          run_time_ns=int(cpu * 1e9), invol_ctx=int(t * 250),
                          timeslices=int(t * 250) + 1)
        out = clf.sweep(2000.0 + t, [s]).classifications
        if out:
            return t, out[0].tier
    return None, None


def test_batch_work_is_judged_from_a_second_and_a_start_up_burst_is_not() -> None:
    from pipeline.settings import ClassifierSettings
    hog = lambda t: t * 0.99                                          # noqa: E731
    when, tier = _first_judgement(Classifier.from_settings(ClassifierSettings()), hog)
    assert tier == "low" and when is not None and when <= 1.5, (when, tier)
    off = ClassifierSettings(batch_early_tiers=[])
    late, tier = _first_judgement(Classifier.from_settings(off), hog)
    assert tier == "low" and late is not None and late >= 3.5, late    # the full window
    # 0.4 s of imports, then a light steady load: not batch work
    burst = lambda t: min(t, 0.4) * 0.95 + max(t - 0.4, 0) * 0.05     # noqa: E731
    _, tier = _first_judgement(Classifier.from_settings(ClassifierSettings()), burst)
    assert tier != "low", tier


def test_a_pid_label_for_a_host_judged_elsewhere_is_there_when_the_host_is_taken_over() -> None:
    """A worker of a group keeps the labels of hosts another worker judges: when a host's
    partition moves to it, the host's labels move with it."""
    from agents.classification.hosts import HostClassifiers
    from pipeline.events import envelope
    from pipeline.settings import ClassifierSettings
    hosts = HostClassifiers(ClassifierSettings(), OnlineModel(),
                            Classifier.from_settings(ClassifierSettings()).rules)
    hosts.on_label(envelope(Label(pid=7, start_time=70, cls="latency_critical"), "h2", 1))
    assert "h2" not in hosts.hosts                         # not judged here: only kept
    hosts.on_label(envelope(Label(pid=8, start_time=80, cls="no_such_class"), "h2", 2))
    taken = hosts.classifier_for("h2")                     # the host is taken over
    hit = taken.labels.lookup(ProcessSample(pid=7, start_time=70, ppid=1, name="x"))
    assert hit is not None and hit.cls == "latency_critical", hit
    assert taken.labels.lookup(ProcessSample(pid=8, start_time=80, ppid=1, name="y")) is None
    hosts.forget_hosts(["h2"])                             # handed on, and back again
    again = hosts.classifier_for("h2").labels.lookup(
        ProcessSample(pid=7, start_time=70, ppid=1, name="x"))
    assert again is not None and again.cls == "latency_critical"
