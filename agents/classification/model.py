"""The online model: learns classes from feature vectors, predicts a class and a probability.

It learns from explicit labels and confident rule matches only; everything it predicts is
about processes nobody labelled. Its input is the behaviour part of ``FEATURES``: age,
whether a process is in a container and how much history the window holds describe where
and when a process runs, not what it does, and would let the model learn the accidents of
the host it was trained on. Heavy-tailed rates (bytes/s, switches/s) enter as log1p so one
busy process does not stretch a feature's whole range.

Learning is test-then-train: each labelled window is first predicted, its error (0 or 1)
feeds an ADWIN detector, then the model learns it. A significant rise in that error means
the behaviour of labelled work changed under the model, and ``learn`` returns a ``Drift``
(the classifier opens a ``model_drift`` alert from it).

The default is a standard scaler feeding one-vs-rest logistic regression. On the recorded
workload data sets (bench/classifier.py, bench/README.md) it reached macro-F1 0.998 on a
held-out run after one pass over 2,300 labelled windows, where a Hoeffding adaptive tree
scored 0.18 (0.97 after four passes) and Gaussian naive Bayes 0.45: on log-scaled
behaviour features the classes are close to linearly separable, and a live host has few
labelled processes, so the model that learns most from few examples wins. It is also the
fastest to predict. The trees stay available (``classifier.model``) for hosts with many
labels and classes that a line does not separate.

Snapshots are pickles tagged with a version (one more on every save) and the input offset
the model learned up to, so a restart or a replay resumes from exactly that state.
"""
from __future__ import annotations

import math
import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from river import drift, forest, linear_model, multiclass, naive_bayes, preprocessing, tree

from agents.classification.features import FEATURES

ModelKind = Literal["hoeffding_adaptive", "hoeffding", "logistic", "naive_bayes", "forest"]
MODEL_KINDS: Final[tuple[str, ...]] = ("hoeffding_adaptive", "hoeffding", "logistic",
                                        "naive_bayes", "forest")

# Features the model sees, and which of them enter as log1p (x >= 0) or signed log.
_LINEAR: Final[tuple[str, ...]] = (
    "cpu_mean", "cpu_std", "cpu_peak", "cpu_cv", "cpu_busy_frac", "cpu_active_frac",
    "cpu_per_thread", "wakeup_cv", "vol_ratio",
)
_LOG: Final[tuple[str, ...]] = (
    "wakeups_s", "invol_s", "delay_ms_s", "delay_us_slice", "run_us_slice", "slices_s",
    "read_bps", "write_bps", "rchar_bps", "wchar_bps", "threads", "rss_mb",
)
_SIGNED_LOG: Final[tuple[str, ...]] = ("rss_growth_mb_s",)
MODEL_FEATURES: Final[tuple[str, ...]] = _LINEAR + _LOG + _SIGNED_LOG

_INDEX = {name: i for i, name in enumerate(FEATURES)}
_LIN_IDX = tuple((name, _INDEX[name]) for name in _LINEAR)
_LOG_IDX = tuple((name, _INDEX[name]) for name in _LOG)
_SLOG_IDX = tuple((name, _INDEX[name]) for name in _SIGNED_LOG)

SNAPSHOT_FORMAT: Final[str] = "corelane-model/1"
_log1p = math.log1p


@dataclass(frozen=True)
class Drift:
    """The model's error on labelled windows rose significantly (ADWIN)."""
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ModelSnapshotError(Exception):
    """A snapshot that cannot be read back; the message names the file and the problem."""


def model_input(vector: Sequence[float]) -> dict[str, float]:
    """The model's input dict from a ``feature_vector`` (FEATURES order)."""
    x = {name: vector[i] for name, i in _LIN_IDX}
    for name, i in _LOG_IDX:
        v = vector[i]
        x[name] = _log1p(v) if v > 0 else 0.0
    for name, i in _SLOG_IDX:
        v = vector[i]
        x[name] = math.copysign(_log1p(abs(v)), v)
    return x


def build_estimator(kind: str = "logistic", seed: int = 0) -> Any:
    """A fresh river classifier of one of ``MODEL_KINDS``."""
    if kind == "hoeffding_adaptive":
        # Naive-Bayes-adaptive leaves (river's default): a leaf answers with naive Bayes
        # until majority class does better, so a young tree with a handful of labelled
        # processes already predicts well (a majority-class leaf knows only the mode).
        # river's default split confidence (delta 1e-7, tie threshold 0.05) never split in
        # 8,000 windows here: many features separate the classes about equally well, so
        # the best and second-best split tie until ~30,000 samples. A looser test splits
        # within a few hundred.
        return tree.HoeffdingAdaptiveTreeClassifier(grace_period=50, delta=1e-3, tau=0.1,
                                                    seed=seed)
    if kind == "hoeffding":
        return tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3, tau=0.1,
                                            leaf_prediction="mc")
    if kind == "logistic":
        return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression())
    if kind == "naive_bayes":
        return naive_bayes.GaussianNB()
    if kind == "forest":
        return forest.ARFClassifier(n_models=5, grace_period=50, delta=1e-3, tau=0.1,
                                    leaf_prediction="mc", seed=seed)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")


class OnlineModel:
    """A river classifier with drift detection, a version and the offset it learned up to.

    ``predict`` returns ``None`` until the model has learned something (never raises for
    lack of data). ``version`` goes up by one on every ``save``; ``tag`` says how far the
    live model has moved past its last snapshot (``v7`` or ``v7+120``).
    """

    def __init__(self, kind: str = "logistic", seed: int = 0,
                 drift_delta: float = 0.002, drift_min_learned: int = 500) -> None:
        self.kind = kind
        self.seed = seed
        self.estimator = build_estimator(kind, seed)
        self.drift_delta = drift_delta
        self.drift_min_learned = drift_min_learned
        self.detector = drift.ADWIN(delta=drift_delta)
        self.version = 0
        self.offset: int | None = None         # input offset learned up to (last save)
        self.learned_until: float | None = None  # time of the last input at the last save
        self.n_learned = 0
        self._learned_at_save = 0
        self.classes: set[str] = set()

    @property
    def tag(self) -> str:
        extra = self.n_learned - self._learned_at_save
        return f"v{self.version}" if extra == 0 else f"v{self.version}+{extra}"

    @property
    def ready(self) -> bool:
        return self.n_learned > 0

    def predict(self, vector: Sequence[float]) -> tuple[str, float] | None:
        """(class, probability) for one feature vector, or None before any learning."""
        if not self.n_learned:
            return None
        proba = self.estimator.predict_proba_one(model_input(vector))
        if not proba:
            return None
        cls = max(proba, key=proba.__getitem__)
        return cls, float(proba[cls])

    def predict_many(self, vectors: Sequence[Sequence[float]]
                     ) -> list[tuple[str, float] | None]:
        if not self.n_learned:
            return [None] * len(vectors)
        predict = self.estimator.predict_proba_one
        out: list[tuple[str, float] | None] = []
        for vector in vectors:
            proba = predict(model_input(vector))
            if proba:
                cls = max(proba, key=proba.__getitem__)
                out.append((cls, float(proba[cls])))
            else:
                out.append(None)
        return out

    def learn(self, vector: Sequence[float], cls: str) -> Drift | None:
        """Learn one labelled window; returns the drift when the error rate jumped."""
        x = model_input(vector)
        alert = None
        if self.n_learned:
            predicted = self.estimator.predict_one(x)
            before = self.detector.estimation
            self.detector.update(0.0 if predicted == cls else 1.0)
            if (self.detector.drift_detected and self.n_learned >= self.drift_min_learned
                    and self.detector.estimation > before):
                alert = Drift(
                    message=(f"classifier model {self.tag} ({self.kind}): error on labelled "
                             f"windows rose from {before:.0%} to "
                             f"{self.detector.estimation:.0%}; the behaviour of labelled "
                             f"work changed, and predictions lag until it relearns"),
                    details={"version": self.version, "tag": self.tag, "kind": self.kind,
                             "n_learned": self.n_learned, "error_before": round(before, 4),
                             "error_now": round(self.detector.estimation, 4),
                             "window": int(self.detector.width)})
        self.estimator.learn_one(x, cls)
        self.classes.add(cls)
        self.n_learned += 1
        return alert

    # --- snapshots -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], offset: int | None,
             learned_until: float | None = None) -> int:
        """Write a snapshot atomically (temp file, then rename); returns the new version.
        ``offset`` and ``learned_until`` say which input it has learned up to: the offset
        and the time (seconds since the epoch) of the last one."""
        self.version += 1
        self.offset = offset
        self.learned_until = learned_until
        self._learned_at_save = self.n_learned
        state = {"format": SNAPSHOT_FORMAT, "version": self.version, "offset": offset,
                 "learned_until": learned_until,
                 "kind": self.kind, "seed": self.seed, "n_learned": self.n_learned,
                 "classes": sorted(self.classes), "drift_delta": self.drift_delta,
                 "drift_min_learned": self.drift_min_learned,
                 "estimator": self.estimator, "detector": self.detector}
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                pickle.dump(state, out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.version

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineModel:
        """Read a snapshot written by ``save``; raises ModelSnapshotError saying why not."""
        try:
            with open(path, "rb") as inp:
                state = pickle.load(inp)
        except OSError as exc:
            raise ModelSnapshotError(f"cannot read model snapshot {path}: {exc.strerror}") \
                from None
        except Exception as exc:  # a truncated or foreign file fails in many ways
            raise ModelSnapshotError(
                f"model snapshot {path} is damaged or not a corelane snapshot "
                f"({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ModelSnapshotError(f"model snapshot {path} has format {found!r}; this "
                                     f"version reads {SNAPSHOT_FORMAT!r}")
        model = cls.__new__(cls)
        model.kind = state["kind"]
        model.seed = state["seed"]
        model.estimator = state["estimator"]
        model.detector = state["detector"]
        model.drift_delta = state["drift_delta"]
        model.drift_min_learned = state["drift_min_learned"]
        model.version = state["version"]
        model.offset = state["offset"]
        model.learned_until = state.get("learned_until")   # absent before versioned shelves
        model.n_learned = model._learned_at_save = state["n_learned"]
        model.classes = set(state["classes"])
        return model
