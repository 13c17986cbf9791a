"""How the workers' models meet: snapshots as plain numbers, merged by what each learned."""
from __future__ import annotations

import random

import msgspec

from agents.classification.model import OnlineModel
from agents.classification.sharing import export, merge, newest_per_origin
from pipeline import events as ev
from support.behaviours import behaviour_vector

vec = behaviour_vector


def learned(classes: list[str], n: int, seed: int) -> OnlineModel:
    rng, model = random.Random(seed), OnlineModel("logistic")
    for _ in range(n):
        cls = rng.choice(classes)
        model.learn(vec(rng, cls), cls)
    return model


def accuracy(model: OnlineModel, classes: list[str], seed: int = 99, n: int = 300) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(n):
        cls = rng.choice(classes)
        got = model.predict(vec(rng, cls))
        hits += got is not None and got[0] == cls
    return hits / n


def through_the_bus(snapshot: ev.ModelSnapshot) -> ev.ModelSnapshot:
    """What another worker reads: the JSON envelope decoded (no pickle on a topic)."""
    raw = ev.encode(ev.envelope(snapshot, host="w1", seq=1))
    assert msgspec.json.decode(raw)["data"]["classes"]       # plain JSON numbers
    return ev.decode(raw).data


def test_a_worker_that_learned_nothing_takes_the_others_model_as_it_is() -> None:
    teacher, fresh = learned(["compute_batch", "latency_critical"], 400, 1), OnlineModel()
    assert fresh.predict(vec(random.Random(0), "compute_batch")) is None
    snapshot = through_the_bus(export(teacher, "w1:1", teacher.n_learned))
    assert merge(fresh, 0, [snapshot]) == 1
    rng = random.Random(5)
    for _ in range(50):
        v = vec(rng, rng.choice(["compute_batch", "latency_critical"]))
        (want, p_want), (got, p_got) = teacher.predict(v), fresh.predict(v)
        assert got == want and abs(p_got - p_want) < 1e-9


def test_two_workers_that_learned_halves_agree_after_meeting_and_know_both_halves() -> None:
    both = ["compute_batch", "latency_critical"]
    a, b = learned(both, 300, 1), learned(both, 300, 2)
    snap_a, snap_b = export(a, "a", 300), export(b, "b", 300)
    assert merge(a, 300, [snap_b]) == merge(b, 300, [snap_a]) == 1
    rng = random.Random(7)
    for _ in range(30):
        v = vec(rng, rng.choice(both))
        assert a.predict(v)[0] == b.predict(v)[0]
        assert abs(a.predict(v)[1] - b.predict(v)[1]) < 1e-6
    assert accuracy(a, both) >= 0.95


def test_a_class_only_one_worker_saw_labelled_reaches_the_other() -> None:
    a = learned(["compute_batch", "latency_critical"], 400, 1)
    b = learned(["latency_critical", "io_batch"], 400, 2)
    assert accuracy(b, ["compute_batch"]) == 0.0                # b never saw a hog labelled
    merge(b, 400, [export(a, "a", 400)])
    assert "compute_batch" in b.classes
    assert accuracy(b, ["compute_batch", "latency_critical", "io_batch"]) >= 0.8


def test_weights_follow_what_each_learned_itself() -> None:
    both = ["compute_batch", "latency_critical"]
    a, b = learned(both, 300, 1), learned(both, 300, 2)
    w_a = a.estimator["OneVsRestClassifier"].classifiers["compute_batch"].intercept
    w_b = b.estimator["OneVsRestClassifier"].classifiers["compute_batch"].intercept
    merge(a, 300, [export(b, "b", 100)])                        # b learned a quarter
    merged = a.estimator["OneVsRestClassifier"].classifiers["compute_batch"].intercept
    assert abs(merged - (0.75 * w_a + 0.25 * w_b)) < 1e-9


def test_what_is_not_shared_and_whose_snapshot_is_merged() -> None:
    tree = learned(["compute_batch", "latency_critical"], 50, 1)
    tree_kind = OnlineModel("hoeffding")
    tree_kind.learn(vec(random.Random(0), "idle"), "idle")
    assert export(tree_kind, "t", 1) is None                    # a tree does not average
    assert export(OnlineModel(), "fresh", 0) is None            # nothing learned, nothing given
    snap = export(tree, "w2:7", 50)
    assert merge(tree_kind, 1, [snap]) == 0                     # another kind: kept its own
    assert merge(OnlineModel(), 0, [export(tree, "w2:7", 0)]) == 0   # a peer that learned nothing
    old, new, own = (msgspec.structs.replace(snap, version=v, origin=o)
                     for v, o in ((1, "w2:7"), (2, "w2:7"), (3, "me")))
    assert newest_per_origin([old, own, new], skip="me") == [new]
