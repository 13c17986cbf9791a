"""Combining labels, rules, the model and behaviour priors into one published class.

Precedence, highest first:
1. an explicit label;
2. an identity rule (a rule with a ``match``: who the process is);
3. a behaviour prior (a rule with only ``when``: what the process does);
4. the model, when its probability is at least ``min_model_confidence``;
5. the model below that confidence, only while nothing else has said anything.

Labels and identity rules are statements and apply at once. The model and the priors are
guesses about behaviour, so they feed one tracked "behaviour guess" per process: each window
offers at most one opinion (the matching prior, else a confident model vote), and the guess
only changes after ``hysteresis_windows`` consecutive windows agree on a new class. The same
count applies when the same class moves from a prior to the model or back, so neither the
class nor its source flaps when the model's confidence hovers around the threshold. A
window with no opinion counts neither for nor against a change. A below-confidence vote
never changes a guess; it only gives a process with no guess yet a first, weak one, which
the first real opinion replaces at once. The guess is tracked for every process, labelled
or not, so that removing a label falls back to a settled guess.

A ``Classification`` is emitted when a process first has a class, whenever its class,
tier or source changes, and again every ``heartbeat_s`` so a late reader (or an allocator
after a restart) learns the current state without replaying the past.

``Decider`` is the pure per-identity state machine (time is an argument). ``Classifier``
is the whole core for a stream of sweeps: windows, features, labels, rules, priors, model
(predict and learn) and the decider.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.classification.features import FEATURES, FeatureWindow, feature_vector
from agents.classification.model import Drift, OnlineModel
from agents.classification.rules import (
    CompiledRule, ContainerInfo, LabelBook, LabelHit, MatchContext, RuleHit, RuleSet,
    load_rules, system_user_name,
)
from pipeline.events import (Alert, Classification, ContainerSample, Label, ProcessSample,
                             open_alert, resolve_alert)
from pipeline.vocabulary import DEFAULT_TIER_OF, UNCLASSIFIED, check_class_map

# An open model_drift alert resolves after this long (sweep time) without another drift.
DRIFT_QUIET_S = 600.0
# A window in which nothing moved is voted on again by the model this often.
REVOTE_S = 10.0
_AGE = FEATURES.index("age_s")

# A model opinion: (class, probability, model tag such as "v7" or "v7+120").
ModelVote = tuple[str, float, str]
# One window's behaviour opinion: (class, tier, confidence, source, reason).
_Opinion = tuple[str, str, float, str, str]


@dataclass(frozen=True, slots=True)
class EarlyStage:
    """A first judgement into ``tiers`` from the newest ``min_samples`` over
    ``min_span_s``, before the full window is there."""
    min_samples: int
    min_span_s: float
    tiers: frozenset[str]


@dataclass(slots=True)
class DecisionState:
    """What is published for one identity, and the behaviour guess behind it."""
    cls: str | None = None
    tier: str | None = None
    confidence: float = 0.0
    source: str | None = None
    reason: str = ""
    last_emit: float | None = None
    guess_cls: str | None = None            # committed behaviour class (after hysteresis)
    guess_tier: str | None = None
    guess_conf: float = 0.0
    guess_source: str | None = None         # "model" or "rule" (a behaviour prior)
    guess_reason: str = ""
    guess_weak: bool = False                # from a below-confidence vote: gives way at once
    candidate: Any = None                   # a class (or class+source) being proposed
    streak: int = 0


class Decider:
    """Per-identity precedence, hysteresis and heartbeats. Keys are any hashable identity,
    e.g. ``(pid, start_time)`` or ``(host, pid, start_time)`` (the last two items of a
    tuple key are taken as pid and start time for the emitted Classification)."""

    def __init__(self, tier_of: Mapping[str, str] = DEFAULT_TIER_OF,
                 hysteresis_windows: int = 3, heartbeat_s: float = 60.0,
                 min_model_confidence: float = 0.0) -> None:
        if hysteresis_windows < 1:
            raise ValueError("hysteresis_windows must be at least 1")
        self.tier_of = check_class_map(dict(tier_of))
        self.hysteresis_windows = hysteresis_windows
        self.heartbeat_s = heartbeat_s
        self.min_model_confidence = min_model_confidence
        self._states: dict[Hashable, DecisionState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def current(self, key: Hashable) -> DecisionState | None:
        return self._states.get(key)

    def forget(self, key: Hashable) -> None:
        self._states.pop(key, None)

    def seed(self, key: Hashable, c: Classification, at: float, behaviour: bool) -> None:
        """Take ``c`` as the judgement in force (said at ``at``), e.g. a recorded class a
        replay starts from; ``behaviour`` says it came from the model or a prior, so it is
        the behaviour guess as well."""
        if c.cls not in self.tier_of:
            return
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = DecisionState()
        st.cls, st.tier, st.confidence, st.source = c.cls, c.tier, c.confidence, c.source
        st.reason, st.last_emit = c.reason, at
        if behaviour:
            self._commit(st, (c.cls, c.tier, c.confidence,
                              "model" if c.source == "model" else "rule", c.reason))

    def _opinion(self, model: ModelVote | None, prior: RuleHit | None
                 ) -> tuple[_Opinion | None, _Opinion | None]:
        """(this window's opinion, a below-confidence model vote) for the guess.

        A matching behaviour prior outranks the model (rules over the model): a model
        taught on a host of mostly idle processes is confidently wrong about the rare
        latency-critical one, which the prior recognises. The model speaks where no rule
        does.
        """
        if prior is not None and prior.cls is not None and prior.cls in self.tier_of:
            return (prior.cls, prior.tier or self.tier_of[prior.cls], prior.confidence,
                    "rule", f"rule {prior.name}"), None
        if model is not None and model[0] in self.tier_of:
            cls, p, tag = model
            reason = f"model {tag} p={p:.2f}"
            if p >= self.min_model_confidence:
                return (cls, self.tier_of[cls], p, "model", reason), None
            return None, (cls, self.tier_of[cls], p, "model",
                          f"{reason} (below {self.min_model_confidence:.2f})")
        return None, None

    @staticmethod
    def _commit(st: DecisionState, op: _Opinion, weak: bool = False) -> None:
        (st.guess_cls, st.guess_tier, st.guess_conf, st.guess_source,
         st.guess_reason) = op
        st.guess_weak = weak
        st.candidate, st.streak = None, 0

    def _track(self, st: DecisionState, model: ModelVote | None,
               prior: RuleHit | None) -> None:
        op, weak = self._opinion(model, prior)
        if op is None:
            if weak is not None and (st.guess_cls is None or (
                    st.guess_weak and weak[0] == st.guess_cls)):
                self._commit(st, weak, weak=True)
            return
        cls, _, _, source, _ = op
        if st.guess_cls is None or st.guess_weak:
            self._commit(st, op)
            return
        if cls == st.guess_cls and source == st.guess_source:
            # Agreement: refresh confidence and reason, and drop any pending change.
            self._commit(st, op)
            return
        # A new class, or the same class from the other source: both need N windows in a
        # row, so a model hovering at the threshold cannot bounce the source every window.
        key = cls if cls != st.guess_cls else (cls, source)
        if key == st.candidate:
            st.streak += 1
        else:
            st.candidate, st.streak = key, 1
        if st.streak >= self.hysteresis_windows:
            self._commit(st, op)

    def decide(self, key: Hashable, now: float, *, label: LabelHit | None = None,
               rule: RuleHit | None = None, prior: RuleHit | None = None,
               model: ModelVote | None = None) -> Classification | None:
        """Feed one window's opinions; returns a Classification when one is due.

        ``rule`` is the first matching identity rule, ``prior`` the first matching
        behaviour prior (a prior passed as ``rule`` is taken as the prior)."""
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = DecisionState()
        resolved = self._judge(st, label, rule, prior, model)
        if resolved is None:
            return None
        cls, tier, conf, source, reason = resolved
        changed = (cls, tier, source) != (st.cls, st.tier, st.source)
        due = st.last_emit is None or now - st.last_emit >= self.heartbeat_s
        st.confidence, st.reason = conf, reason
        if not changed and not due:
            return None
        st.cls, st.tier, st.source, st.last_emit = cls, tier, source, now
        pid, start_time = _pid_start(key)
        return Classification(pid=pid, start_time=start_time, cls=cls, tier=tier,
                              confidence=round(conf, 4), source=source, reason=reason)

    def first_tier(self, *, label: LabelHit | None = None, rule: RuleHit | None = None,
                   prior: RuleHit | None = None, model: ModelVote | None = None) -> str | None:
        """The tier a first judgement from these opinions would give; nothing is recorded."""
        resolved = self._judge(DecisionState(), label, rule, prior, model)
        return resolved[1] if resolved is not None else None

    def _judge(self, st: DecisionState, label: LabelHit | None, rule: RuleHit | None,
               prior: RuleHit | None, model: ModelVote | None
               ) -> tuple[str, str, float, str, str] | None:
        """Track this window's behaviour opinion on ``st``, then resolve by precedence."""
        if rule is not None and rule.prior:
            prior, rule = prior or rule, None
        self._track(st, model, prior)
        return self._resolve(st, label, rule)

    def _resolve(self, st: DecisionState, label: LabelHit | None,
                 rule: RuleHit | None) -> tuple[str, str, float, str, str] | None:
        """(class, tier, confidence, source, reason) by precedence, or None without any."""
        hit = label
        if hit is not None and (hit.cls in self.tier_of or hit.tier is not None):
            # A tier-only label pins the tier; the class stays the behaviour guess.
            cls = hit.cls if hit.cls in self.tier_of else (st.guess_cls or UNCLASSIFIED)
            tier = hit.tier or self.tier_of[cls]
            conf, source, reason = 1.0, "label", f"label {hit.label_id}"
        elif rule is not None and rule.cls is not None and rule.cls in self.tier_of:
            cls, conf, source = rule.cls, rule.confidence, "rule"
            tier = rule.tier or self.tier_of[cls]
            reason = f"rule {rule.name}"
        elif rule is not None and rule.tier is not None:
            # A tier-only rule pins the tier; the class stays the behaviour guess.
            cls = st.guess_cls or UNCLASSIFIED
            tier, conf, source = rule.tier, rule.confidence, "rule"
            reason = f"rule {rule.name} (tier only" + (
                f"; class from {st.guess_reason})" if st.guess_cls is not None else ")")
        elif st.guess_cls is not None:
            cls, tier, conf = st.guess_cls, st.guess_tier, st.guess_conf
            source, reason = st.guess_source, st.guess_reason
        else:
            return None
        return cls, tier, conf, source, reason


def _pid_start(key: Hashable) -> tuple[int, int]:
    if isinstance(key, tuple) and len(key) >= 2:
        return int(key[-2]), int(key[-1])
    raise TypeError(f"identity key {key!r} must be a tuple ending in (pid, start_time)")


@dataclass
class Explanation:
    """Why one process has the class it has: the judgement in force, what the behaviour
    guess is, and the features of its window."""
    pid: int
    start_time: int
    name: str
    cls: str | None
    tier: str | None
    confidence: float
    source: str | None
    reason: str
    guess: str | None                   # the behaviour class (model or prior) behind it
    guess_reason: str
    label: str | None                   # the id of the label that applies, if one does
    samples: int                        # samples in the window
    span_s: float                       # seconds the window covers
    features: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepResult:
    classifications: list[Classification] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    learned: int = 0          # labelled windows the model learned from in this sweep
    classified: int = 0       # windows with enough history that were considered


class Classifier:
    """The classifier's whole pure core for a stream of process sweeps.

    Feed ``sweep(ts, samples)`` (one sweep or one chunk of it, in time order per host; use
    one Classifier per host, or pass ``host`` so identities from several hosts never mix);
    apply ``Label`` events with ``apply_label`` and container samples with
    ``update_containers``. The model learns from labelled windows, and otherwise from the
    first matching identity rule, else behaviour prior, that has ``learn`` and a confidence
    at or above ``learn_min_rule_confidence`` (a prior teaches at most one window per
    process every ``prior_learn_interval_s``); drift alerts come back in the SweepResult.
    """

    def __init__(self, model: OnlineModel | None = None, rules: RuleSet | None = None,
                 labels: LabelBook | None = None,
                 tier_of: Mapping[str, str] = DEFAULT_TIER_OF, *, window_s: float = 20.0,
                 min_interval_s: float = 0.9,
                 min_samples: int = 5, min_span_s: float = 4.0, startup_s: float = 0.0,
                 early_min_samples: int = 2, early_min_span_s: float = 0.2,
                 early_tiers: Iterable[str] = ("ultra_critical",),
                 batch_early_min_samples: int = 4, batch_early_min_span_s: float = 1.0,
                 batch_early_tiers: Iterable[str] = (),
                 hysteresis_windows: int = 3,
                 heartbeat_s: float = 60.0, min_model_confidence: float = 0.5,
                 learn: bool = True, learn_min_rule_confidence: float = 0.9,
                 prior_learn_interval_s: float = 10.0, expire_s: float = 60.0,
                 boot_time: float | None = None,
                 user_name: Callable[[int], str | None] = system_user_name) -> None:
        self.tier_of = check_class_map(dict(tier_of))
        self.model = model if model is not None else OnlineModel()
        self.rules = rules if rules is not None else RuleSet()
        self.labels = labels if labels is not None else LabelBook(classes=self.tier_of)
        self.decider = Decider(self.tier_of, hysteresis_windows, heartbeat_s,
                               min_model_confidence)
        self.window_s, self.min_samples, self.min_span_s = window_s, min_samples, min_span_s
        self.min_interval_s = min_interval_s
        self.startup_s = startup_s
        # A new process whose first judgement puts it in an early tier (ultra_critical by
        # default) is judged from a shorter window: it waits for its cores on the
        # housekeeping ones until judged. On held-out data the early calls of that tier
        # were as right as the later ones (bench/classifier.py); early calls of the
        # critical tier took interactive processes for streams. Any other first judgement
        # waits for the full window.
        # Batch work (batch_early_tiers) is judged from a longer short window: it runs at
        # its own priority beside latency-critical work until judged, and over a second
        # of samples an interpreter's start-up no longer reads as batch work, where over
        # 0.2 s it does (bench/classifier.py).
        self.early_stages = tuple(stage for stage in (
            EarlyStage(early_min_samples, early_min_span_s, frozenset(early_tiers)),
            EarlyStage(batch_early_min_samples, batch_early_min_span_s,
                       frozenset(batch_early_tiers)))
            if stage.tiers and stage.min_samples < min_samples)
        self.learn, self.learn_min_rule_confidence = learn, learn_min_rule_confidence
        # Priors match nearly every process on every sweep: teaching the model each of
        # those (highly overlapping) windows would cost a learn step per process per
        # second. One window per process per interval teaches as much for a fraction.
        self.prior_learn_interval_s = prior_learn_interval_s
        self._prior_taught: dict[Hashable, float] = {}
        self._votes: dict[Hashable, tuple[Any, float]] = {}   # identity -> (vote, when)
        # not judged yet: each early stage's newest samples
        self._young: tuple[dict[Hashable, FeatureWindow], ...] = tuple(
            {} for _ in self.early_stages)
        self._vectors: dict[Hashable, tuple[list[float], float]] = {}  # last features, when
        self._open_drift: Alert | None = None
        self._last_drift = 0.0
        self.expire_s = expire_s
        self.boot_time = boot_time
        self._windows: dict[Hashable, FeatureWindow] = {}
        self._rule_cache: dict[Hashable, tuple[tuple, tuple[CompiledRule, ...]]] = {}
        self._names: dict[int, str] = {}
        self._containers: dict[str, ContainerInfo] = {}
        self._ctx = MatchContext(user_name=user_name, process_name=self._names.get,
                                 container=self._containers.get)
        self._last_expire: float | None = None

    @classmethod
    def from_settings(cls, settings: Any, model: OnlineModel | None = None,
                      rules: RuleSet | None = None, **kwargs: Any) -> Classifier:
        """Build from a ``ClassifierSettings`` (the ``classifier:`` config section). Without
        ``rules``, the section's ``rules_file`` is loaded (the shipped behaviour priors
        unless it says ``none``)."""
        s = settings
        if rules is None:
            path = getattr(s, "rules_path", None)
            rules = load_rules(path, classes=s.classes) if path is not None else RuleSet()
        return cls(model=model if model is not None else OnlineModel(
                       s.model, drift_delta=s.drift_delta),
                   rules=rules, tier_of=s.classes, window_s=s.window_s,
                   min_interval_s=s.min_interval_s,
                   min_samples=s.min_samples, min_span_s=s.min_span_s,
                   startup_s=getattr(s, "startup_s", 0.0),
                   early_min_samples=s.early_min_samples, early_min_span_s=s.early_min_span_s,
                   early_tiers=s.early_tiers,
                   batch_early_min_samples=getattr(s, "batch_early_min_samples", 4),
                   batch_early_min_span_s=getattr(s, "batch_early_min_span_s", 1.0),
                   batch_early_tiers=getattr(s, "batch_early_tiers", ()),
                   hysteresis_windows=s.hysteresis_windows, heartbeat_s=s.heartbeat_s,
                   min_model_confidence=s.min_model_confidence, learn=s.learn,
                   learn_min_rule_confidence=s.learn_min_rule_confidence,
                   prior_learn_interval_s=getattr(s, "prior_learn_interval_s", 10.0),
                   expire_s=s.expire_s, **kwargs)

    def __len__(self) -> int:
        return len(self._windows)

    def apply_label(self, label: Label, label_id: str) -> None:
        """Record an explicit label (raises LabelError for one that cannot apply)."""
        self.labels.apply(label, label_id)

    def update_containers(self, containers: Iterable[ContainerSample]) -> None:
        """Container names and labels for ``container:`` and ``container_label:`` rules."""
        changed = False
        for c in containers:
            info = ContainerInfo(c.name, c.labels)
            if self._containers.get(c.id) != info:
                self._containers[c.id] = info
                changed = True
        if changed:
            self._rule_cache.clear()

    def use_rules(self, rules: RuleSet) -> None:
        """Judge with ``rules`` from the next window on (a reloaded rules file)."""
        self.rules = rules
        self._rule_cache.clear()

    def explain(self, pid: int, start_time: int | None = None) -> Explanation | None:
        """The judgement of the newest identity with ``pid`` (or exactly ``pid`` and
        ``start_time``) and the features behind it; None when no window holds it."""
        keys = [k for k in self._windows if _pid_start(k)[0] == pid
                and (start_time is None or _pid_start(k)[1] == start_time)]
        if not keys:
            return None
        key = max(keys, key=lambda k: _pid_start(k)[1])
        window = self._windows[key]
        last = window.last
        st = self.decider.current(key) or DecisionState()
        hit = self.labels.lookup(last) if last is not None else None
        values = feature_vector(window, boot_time=self.boot_time)
        return Explanation(
            pid=pid, start_time=_pid_start(key)[1], name=last.name if last else "",
            cls=st.cls, tier=st.tier, confidence=st.confidence, source=st.source,
            reason=st.reason, guess=st.guess_cls, guess_reason=st.guess_reason,
            label=hit.label_id if hit is not None else None, samples=len(window),
            span_s=round(window.span, 3),
            features={n: round(v, 6) for n, v in zip(FEATURES, values)})

    def features_of(self, key: Hashable) -> list[float] | None:
        window = self._windows.get(key)
        return feature_vector(window, boot_time=self.boot_time) if window else None

    def sweep(self, ts: float, samples: Sequence[ProcessSample],
              host: str | None = None) -> SweepResult:
        result = SweepResult()
        names = self._names
        for s in samples:
            names[s.pid] = s.name
        # (identity, sample, features, the early stage judging it or None)
        ready: list[tuple[Hashable, ProcessSample, list[float], EarlyStage | None]] = []
        windows = self._windows
        decider = self.decider
        for s in samples:
            key = (s.pid, s.start_time) if host is None else (host, s.pid, s.start_time)
            window = windows.get(key)
            if window is None:
                window = windows[key] = FeatureWindow(self.window_s,
                                                      min_interval_s=self.min_interval_s,
                                                      boot_time=self.boot_time,
                                                      startup_s=self.startup_s)
            window.append(ts, s)
            if window.enough_history(self.min_samples, self.min_span_s):
                self._forget_young(key)
                ready.append((key, s, self._features(key, window, ts), None))
            elif self.early_stages and decider.current(key) is None:
                # A first judgement from the newest samples alone: what a new process does
                # once started, not its start-up (an interpreter's imports are a burst).
                for stage, young in zip(self.early_stages, self._young):
                    recent = young.get(key)
                    if recent is None:
                        recent = young[key] = FeatureWindow(stage.min_span_s * 1.25,
                                                            keep=stage.min_samples,
                                                            max_gap_s=self.window_s)
                    recent.append(ts, s)
                    if recent.enough_history(stage.min_samples, stage.min_span_s):
                        ready.append((key, s, feature_vector(recent, ts, self.boot_time),
                                      stage))
        result.classified = len(ready)
        if not ready:
            self._maybe_expire(ts)
            return result
        model = self.model
        # A window in which nothing moved keeps the model's last vote for up to REVOTE_S:
        # its features are the same, and most processes on a host sleep.
        kept = self._votes
        fresh = [i for i, (key, _, _, early) in enumerate(ready)
                 if early is not None or not windows[key].still or key not in kept
                 or ts - kept[key][1] >= REVOTE_S]
        new = model.predict_many([ready[i][2] for i in fresh]) if fresh else []
        votes = [kept[key][0] if key in kept else None for key, _, _, _ in ready]
        for i, vote in zip(fresh, new):
            votes[i] = vote
            kept[ready[i][0]] = (vote, ts)
        tag = model.tag
        priors = self.rules.priors
        min_conf = self.learn_min_rule_confidence
        for (key, s, vector, early), vote in zip(ready, votes):
            label = self.labels.lookup(s)
            rule = self._rule(key, s, vector)
            prior = None
            if priors:
                for compiled in priors:
                    if compiled.when_matches(vector):
                        prior = compiled.hit
                        break
            model_vote = (vote[0], vote[1], tag) if vote is not None else None
            if early is not None:
                # Short windows teach nothing, and only a first judgement into the stage's
                # tiers is made.
                # (judged by an earlier stage in this sweep: nothing more to say)
                if decider.current(key) is not None or decider.first_tier(
                        label=label, rule=rule, prior=prior,
                        model=model_vote) not in early.tiers:
                    result.classified -= 1
                    continue
                out = decider.decide(key, ts, label=label, rule=rule, prior=prior,
                                     model=model_vote)
                if out is not None:
                    result.classifications.append(out)
                    self._forget_young(key)
                continue
            teach = None
            if label is not None and label.cls is not None:
                teach = label.cls
            elif rule is not None and rule.cls is not None:
                if rule.learn and rule.confidence >= min_conf:
                    teach = rule.cls
            elif (prior is not None and prior.learn and prior.confidence >= min_conf
                  and (rule is None or rule.cls is None)):
                last = self._prior_taught.get(key)
                if last is None or ts - last >= self.prior_learn_interval_s:
                    teach = prior.cls
                    if self.learn:
                        self._prior_taught[key] = ts
            if teach is not None and self.learn:
                drifted = model.learn(vector, teach)
                result.learned += 1
                if drifted is not None:
                    result.alerts += self._drift_alerts(drifted, ts)
            out = decider.decide(key, ts, label=label, rule=rule, prior=prior, model=model_vote)
            if out is not None:
                result.classifications.append(out)
        if self._open_drift is not None and ts - self._last_drift >= DRIFT_QUIET_S:
            result.alerts.append(resolve_alert(
                self._open_drift, ts, f"no further drift of the classifier model for "
                                      f"{DRIFT_QUIET_S:.0f} s"))
            self._open_drift = None
        self._maybe_expire(ts)
        return result

    def _forget_young(self, key: Hashable) -> None:
        for young in self._young:
            young.pop(key, None)

    def _features(self, key: Hashable, window: FeatureWindow, ts: float) -> list[float]:
        """The window's features; a still window's are the last ones, a little older."""
        kept = self._vectors.get(key)
        if kept is not None and window.still and ts - kept[1] < REVOTE_S:
            vector = list(kept[0])
            if vector[_AGE]:
                vector[_AGE] += ts - kept[1]
            return vector
        vector = feature_vector(window, ts, self.boot_time)
        self._vectors[key] = (vector, ts)
        return vector

    def _drift_alerts(self, drifted: Drift, ts: float) -> list[Alert]:
        """A model_drift alert opens on the first drift; a later one, while it is open,
        keeps it open longer rather than opening another."""
        self._last_drift = ts
        if self._open_drift is not None:
            return []
        self._open_drift = open_alert(
            "model_drift", drifted.message, ts, details=drifted.details,
            alert_id=f"model_drift:{self.model.tag}:{self.model.n_learned}")
        return [self._open_drift]

    def _rule(self, key: Hashable, s: ProcessSample,
              vector: Sequence[float]) -> RuleHit | None:
        """The first identity rule that matches: which rules' ``match`` holds is cached per
        process (it depends on identity only); their ``when`` bounds are tested per window."""
        if not self.rules.identity_rules:
            return None
        fingerprint = (s.name, s.cmdline, s.uid, s.cgroup, s.container_id, s.ppid,
                       self._names.get(s.ppid))
        cached = self._rule_cache.get(key)
        if cached is not None and cached[0] == fingerprint:
            candidates = cached[1]
        else:
            candidates = self.rules.identity_candidates(s, self._ctx)
            self._rule_cache[key] = (fingerprint, candidates)
        return RuleSet.first_when(candidates, vector)

    def _maybe_expire(self, now: float) -> None:
        if self._last_expire is None:
            self._last_expire = now
        elif now - self._last_expire >= self.expire_s / 2:
            self.expire(now)
            self._last_expire = now

    def expire(self, now: float) -> int:
        """Forget identities with no sample for ``expire_s``; returns how many."""
        horizon = now - self.expire_s
        gone = [key for key, w in self._windows.items()
                if w.last_ts is not None and w.last_ts < horizon]
        for key in gone:
            del self._windows[key]
            self._rule_cache.pop(key, None)
            self._prior_taught.pop(key, None)
            self._votes.pop(key, None)
            self._forget_young(key)
            self._vectors.pop(key, None)
            self.decider.forget(key)
            pid, start = _pid_start(key)
            self.labels.forget(pid, start)
        if gone:
            alive = {key[-2] for key in self._windows}  # type: ignore[index]
            for pid in [p for p in self._names if p not in alive]:
                del self._names[pid]
        return len(gone)
