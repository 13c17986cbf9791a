"""Combining labels, rules and the model into one published class per process.

Precedence: an explicit label, then the first matching rule, then the model. Labels and
rules are statements and apply at once. The model is a guess, so its class for a process
only changes after ``hysteresis_windows`` consecutive windows agree on the new class, and
a prediction below ``min_model_confidence`` counts neither for nor against a change: an
alternating or hesitant model never flips a process. The model's class is tracked for
every process, labelled or not, so that removing a label falls back to a settled guess.

A ``Classification`` is emitted when a process first has a class, whenever its class,
tier or source changes, and again every ``heartbeat_s`` so a late reader (or an allocator
after a restart) learns the current state without replaying the past.

``Decider`` is the pure per-identity state machine (time is an argument). ``Classifier``
is the whole core for a stream of sweeps: windows, features, labels, rules, model
(predict and learn) and the decider.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.classification.classes import DEFAULT_TIER_OF, UNCLASSIFIED, check_class_map
from agents.classification.features import FeatureWindow, feature_vector
from agents.classification.model import OnlineModel
from agents.classification.rules import (
    ContainerInfo, LabelBook, MatchContext, RuleHit, RuleSet, system_user_name,
)
from pipeline.events import Alert, Classification, ContainerSample, Label, ProcessSample

# A model opinion: (class, probability, model tag such as "v7" or "v7+120").
ModelVote = tuple[str, float, str]


@dataclass(slots=True)
class DecisionState:
    """What is published for one identity, and the model's settled guess behind it."""
    cls: str | None = None
    tier: str | None = None
    confidence: float = 0.0
    source: str | None = None
    reason: str = ""
    last_emit: float | None = None
    model_cls: str | None = None            # the model's committed class (after hysteresis)
    model_p: float = 0.0
    model_tag: str = ""
    candidate: str | None = None            # a different class the model keeps proposing
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

    def _track_model(self, st: DecisionState, vote: ModelVote | None) -> None:
        if vote is None:
            return
        cls, p, tag = vote
        if p < self.min_model_confidence or cls not in self.tier_of:
            return
        if st.model_cls is None or cls == st.model_cls:
            st.model_cls, st.model_p, st.model_tag = cls, p, tag
            st.candidate, st.streak = None, 0
            return
        if cls == st.candidate:
            st.streak += 1
        else:
            st.candidate, st.streak = cls, 1
        if st.streak >= self.hysteresis_windows:
            st.model_cls, st.model_p, st.model_tag = cls, p, tag
            st.candidate, st.streak = None, 0

    def decide(self, key: Hashable, now: float, *, label: tuple[str, str] | None = None,
               rule: RuleHit | None = None, model: ModelVote | None = None
               ) -> Classification | None:
        """Feed one window's opinions; returns a Classification when one is due."""
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = DecisionState()
        self._track_model(st, model)
        model_reason = (f"model {st.model_tag} p={st.model_p:.2f}"
                        if st.model_cls is not None else "")
        if label is not None and label[0] in self.tier_of:
            cls, label_id = label
            tier, conf, source, reason = self.tier_of[cls], 1.0, "label", f"label {label_id}"
        elif rule is not None and rule.cls is not None and rule.cls in self.tier_of:
            cls, conf, source = rule.cls, rule.confidence, "rule"
            tier = rule.tier or self.tier_of[cls]
            reason = f"rule {rule.name}"
        elif rule is not None and rule.tier is not None:
            # A tier-only rule pins the tier; the class stays the model's guess.
            cls = st.model_cls or UNCLASSIFIED
            tier, conf, source = rule.tier, rule.confidence, "rule"
            reason = f"rule {rule.name} (tier only" + (
                f"; class from {model_reason})" if model_reason else ")")
        elif st.model_cls is not None:
            cls, tier, conf, source = (st.model_cls, self.tier_of[st.model_cls], st.model_p,
                                       "model")
            reason = model_reason
        else:
            return None
        changed = (cls, tier, source) != (st.cls, st.tier, st.source)
        due = st.last_emit is None or now - st.last_emit >= self.heartbeat_s
        st.confidence, st.reason = conf, reason
        if not changed and not due:
            return None
        st.cls, st.tier, st.source, st.last_emit = cls, tier, source, now
        pid, start_time = _pid_start(key)
        return Classification(pid=pid, start_time=start_time, cls=cls, tier=tier,
                              confidence=round(conf, 4), source=source, reason=reason)


def _pid_start(key: Hashable) -> tuple[int, int]:
    if isinstance(key, tuple) and len(key) >= 2:
        return int(key[-2]), int(key[-1])
    raise TypeError(f"identity key {key!r} must be a tuple ending in (pid, start_time)")


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
    ``update_containers``. The model learns from labelled windows and from rule matches at
    or above ``learn_min_rule_confidence``; drift alerts come back in the SweepResult.
    """

    def __init__(self, model: OnlineModel | None = None, rules: RuleSet | None = None,
                 labels: LabelBook | None = None,
                 tier_of: Mapping[str, str] = DEFAULT_TIER_OF, *, window_s: float = 20.0,
                 min_samples: int = 5, min_span_s: float = 4.0, hysteresis_windows: int = 3,
                 heartbeat_s: float = 60.0, min_model_confidence: float = 0.5,
                 learn: bool = True, learn_min_rule_confidence: float = 0.9,
                 expire_s: float = 60.0, boot_time: float | None = None,
                 user_name: Callable[[int], str | None] = system_user_name) -> None:
        self.tier_of = check_class_map(dict(tier_of))
        self.model = model if model is not None else OnlineModel()
        self.rules = rules if rules is not None else RuleSet()
        self.labels = labels if labels is not None else LabelBook(classes=self.tier_of)
        self.decider = Decider(self.tier_of, hysteresis_windows, heartbeat_s,
                               min_model_confidence)
        self.window_s, self.min_samples, self.min_span_s = window_s, min_samples, min_span_s
        self.learn, self.learn_min_rule_confidence = learn, learn_min_rule_confidence
        self.expire_s = expire_s
        self.boot_time = boot_time
        self._windows: dict[Hashable, FeatureWindow] = {}
        self._rule_cache: dict[Hashable, tuple[tuple, RuleHit | None]] = {}
        self._names: dict[int, str] = {}
        self._containers: dict[str, ContainerInfo] = {}
        self._ctx = MatchContext(user_name=user_name, process_name=self._names.get,
                                 container=self._containers.get)
        self._last_expire: float | None = None

    @classmethod
    def from_settings(cls, settings: Any, model: OnlineModel | None = None,
                      rules: RuleSet | None = None, **kwargs: Any) -> Classifier:
        """Build from a ``ClassifierSettings`` (the ``classifier:`` config section)."""
        s = settings
        return cls(model=model if model is not None else OnlineModel(
                       s.model, drift_delta=s.drift_delta),
                   rules=rules, tier_of=s.classes, window_s=s.window_s,
                   min_samples=s.min_samples, min_span_s=s.min_span_s,
                   hysteresis_windows=s.hysteresis_windows, heartbeat_s=s.heartbeat_s,
                   min_model_confidence=s.min_model_confidence, learn=s.learn,
                   learn_min_rule_confidence=s.learn_min_rule_confidence,
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

    def features_of(self, key: Hashable) -> list[float] | None:
        window = self._windows.get(key)
        return feature_vector(window, boot_time=self.boot_time) if window else None

    def sweep(self, ts: float, samples: Sequence[ProcessSample],
              host: str | None = None) -> SweepResult:
        result = SweepResult()
        names = self._names
        for s in samples:
            names[s.pid] = s.name
        ready: list[tuple[Hashable, ProcessSample, list[float]]] = []
        windows = self._windows
        for s in samples:
            key = (s.pid, s.start_time) if host is None else (host, s.pid, s.start_time)
            window = windows.get(key)
            if window is None:
                window = windows[key] = FeatureWindow(self.window_s)
            window.append(ts, s)
            if window.enough_history(self.min_samples, self.min_span_s):
                ready.append((key, s, feature_vector(window, ts, self.boot_time)))
        result.classified = len(ready)
        if not ready:
            self._maybe_expire(ts)
            return result
        model = self.model
        votes = model.predict_many([vector for _, _, vector in ready])
        tag = model.tag
        for (key, s, vector), vote in zip(ready, votes):
            label = self.labels.lookup(s)
            rule = self._rule(key, s)
            teach = None
            if label is not None:
                teach = label[0]
            elif (rule is not None and rule.cls is not None and rule.learn
                  and rule.confidence >= self.learn_min_rule_confidence):
                teach = rule.cls
            if teach is not None and self.learn:
                alert = model.learn(vector, teach)
                result.learned += 1
                if alert is not None:
                    result.alerts.append(alert)
            out = self.decider.decide(
                key, ts, label=label, rule=rule,
                model=(vote[0], vote[1], tag) if vote is not None else None)
            if out is not None:
                result.classifications.append(out)
        self._maybe_expire(ts)
        return result

    def _rule(self, key: Hashable, s: ProcessSample) -> RuleHit | None:
        if not len(self.rules):
            return None
        fingerprint = (s.name, s.cmdline, s.uid, s.cgroup, s.container_id, s.ppid,
                       self._names.get(s.ppid))
        cached = self._rule_cache.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        hit = self.rules.match(s, self._ctx)
        self._rule_cache[key] = (fingerprint, hit)
        return hit

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
            self.decider.forget(key)
            pid, start = _pid_start(key)
            self.labels.forget(pid, start)
        if gone:
            alive = {key[-2] for key in self._windows}  # type: ignore[index]
            for pid in [p for p in self._names if p not in alive]:
                del self._names[pid]
        return len(gone)
