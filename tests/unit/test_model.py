"""The online model: cold start, learning, drift alerts, snapshots."""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from agents.classification.model import (
    Drift,
    MODEL_KINDS, ModelSnapshotError, OnlineModel, model_input,
)
from agents.classification.features import FEATURES
from agents.classification.snapshots import ModelShelf
from support.behaviours import IDX, behaviour_vector

vec = behaviour_vector


def stream(n: int, seed: int, swap: bool = False):
    rng = random.Random(seed)
    for _ in range(n):
        cls = rng.choice(["compute_batch", "latency_critical"])
        truth = cls
        if swap:
            truth = "latency_critical" if cls == "compute_batch" else "compute_batch"
        yield vec(rng, cls), truth


def test_cold_start_predicts_none_without_error() -> None:
    model = OnlineModel()
    v = [0.0] * len(FEATURES)
    assert model.predict(v) is None
    assert model.predict_many([v, v]) == [None, None]
    assert not model.ready and model.tag == "v0"


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_learns_a_separable_problem(kind: str) -> None:
    model = OnlineModel(kind, seed=3)
    for v, cls in stream(800, seed=1):
        model.learn(v, cls)
    test = list(stream(300, seed=2))
    right = 0
    for v, cls in test:
        got = model.predict(v)
        assert got is not None and 0.0 <= got[1] <= 1.0
        right += got[0] == cls
    assert right / len(test) >= 0.95
    assert [p[0] for p in model.predict_many([v for v, _ in test[:20]])] == \
        [model.predict(v)[0] for v, _ in test[:20]]


def test_drift_is_detected_on_an_abrupt_change_and_reported_as_an_alert() -> None:
    model = OnlineModel(drift_min_learned=200)
    stable = [model.learn(v, c) for v, c in stream(1500, seed=1)]
    assert not any(stable), "no drift while behaviour is stable"
    after = [model.learn(v, c) for v, c in stream(400, seed=5, swap=True)]
    alerts = [a for a in after if a is not None]
    assert alerts, "swapping every label must raise a drift alert"
    first = alerts[0]
    assert isinstance(first, Drift) and "error on labelled windows rose" in first.message
    assert first.details["error_now"] > first.details["error_before"]
    assert after.index(first) < 200                  # found quickly, not at the very end


def test_snapshot_round_trip_keeps_predictions_version_and_offset(tmp_path: Path) -> None:
    model = OnlineModel()
    for v, c in stream(500, seed=1):
        model.learn(v, c)
    assert model.tag == "v0+500"
    path = tmp_path / "models" / "classifier.pkl"
    assert model.save(path, offset=1234) == 1
    assert model.tag == "v1"
    probe = [v for v, _ in stream(50, seed=9)]
    loaded = OnlineModel.load(path)
    assert (loaded.version, loaded.offset, loaded.tag, loaded.n_learned) == (1, 1234, "v1", 500)
    assert loaded.predict_many(probe) == model.predict_many(probe)
    loaded.learn(probe[0], "compute_batch")
    assert loaded.tag == "v1+1"
    assert loaded.save(path, offset=2000) == 2
    assert OnlineModel.load(path).offset == 2000
    assert not list(path.parent.glob("*.pkl.*")), "no temp files left behind"


def test_bad_snapshots_say_why(tmp_path: Path) -> None:
    with pytest.raises(ModelSnapshotError, match="cannot read model snapshot"):
        OnlineModel.load(tmp_path / "none.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ModelSnapshotError, match="damaged or not a corelane snapshot"):
        OnlineModel.load(junk)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"format": "something-else"}))
    with pytest.raises(ModelSnapshotError, match="has format 'something-else'"):
        OnlineModel.load(other)


def test_model_input_scales_heavy_tails_and_drops_context() -> None:
    v = [0.0] * len(FEATURES)
    v[IDX["read_bps"]] = 1e9
    v[IDX["age_s"]] = 1e6
    v[IDX["rss_growth_mb_s"]] = -100.0
    x = model_input(v)
    assert "age_s" not in x and "in_container" not in x and "samples" not in x
    assert 20 < x["read_bps"] < 21                 # log1p(1e9) ~ 20.7
    assert x["rss_growth_mb_s"] < 0


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'svm'"):
        OnlineModel("svm")


def test_the_shelf_keeps_versions_and_finds_the_one_in_force_at_a_time(tmp_path: Path) -> None:
    shelf = ModelShelf(tmp_path / "models")
    assert shelf.latest() is None and shelf.at(1e9) is None
    model = OnlineModel()
    learned = iter(stream(900, seed=3))
    for until in (100.0, 200.0, 300.0):
        for _ in range(300):
            model.learn(*next(learned))
        shelf.save(model, offset=int(until), learned_until=until)
    assert shelf.versions() == [1, 2, 3]
    assert shelf.latest().version == 3
    assert shelf.at(99.0) is None                       # nothing had been learned yet
    assert (shelf.at(250.0).version, shelf.at(250.0).n_learned) == (2, 600)
    assert shelf.at(300.0).learned_until == 300.0
    # A model loaded from an older version saves as the next one, never over another.
    old = shelf.at(150.0)
    assert shelf.save(old, offset=400, learned_until=400.0) == 4


def test_pruning_keeps_the_version_in_force_at_the_horizon(tmp_path: Path) -> None:
    shelf = ModelShelf(tmp_path)
    model = OnlineModel()
    for v, c in stream(10, seed=1):
        model.learn(v, c)
    for until in (100.0, 200.0, 300.0, 400.0):
        shelf.save(model, offset=None, learned_until=until)
    # Horizon 310: v1 and v2 go; v3 stays, in force from 300 until v4.
    assert shelf.prune(keep_s=150.0, now=460.0) == 2
    assert shelf.versions() == [3, 4]
    assert shelf.at(320.0).version == 3
