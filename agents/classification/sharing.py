"""How the workers' models meet: each learns, and each blends in the others' (pure).

Every worker of a group learns from the labelled windows of the hosts it owns, so no one
worker sees every label. Each publishes its model as plain numbers (``ModelSnapshot``) at
every snapshot, and merges the newest snapshot of every other worker into its own, weighted
by how many windows each learned itself since it started (federated averaging): the
scalers' means and variances pool, and each class's linear model averages over the models
that know that class, so a class only one worker has seen labelled is kept whole. A worker
that has learned nothing itself (one that just joined or took hosts over) takes the
others' model as it is. Repeated, the models agree on what every worker learned while each
keeps learning in between.

Only the logistic model (the default) averages; a tree cannot, and with another
``classifier.model`` each worker keeps its own.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agents.classification.model import OnlineModel
from pipeline.events import ModelSnapshot

SHAREABLE = "logistic"


def _parts(model: OnlineModel) -> tuple[Any, Any]:
    return model.estimator["StandardScaler"], model.estimator["OneVsRestClassifier"]


def export(model: OnlineModel, origin: str, learned: int) -> ModelSnapshot | None:
    """``model`` as a snapshot to publish; None where it cannot be shared (another kind) or
    has nothing to give (it learned nothing)."""
    if model.kind != SHAREABLE or not model.n_learned:
        return None
    scaler, ovr = _parts(model)
    return ModelSnapshot(
        origin=origin, kind=model.kind, learned=learned, n_learned=model.n_learned,
        version=model.version,
        scaler={f: [scaler.counts[f], scaler.means[f], scaler.vars[f]] for f in scaler.counts},
        classes={str(c): {"intercept": float(lr.intercept), "weights": lr._weights.to_dict()}
                 for c, lr in ovr.classifiers.items()})


def newest_per_origin(snapshots: Iterable[ModelSnapshot], skip: str) -> list[ModelSnapshot]:
    """The last snapshot of each worker but ``skip`` (this one), in the order read."""
    newest: dict[str, ModelSnapshot] = {}
    for snapshot in snapshots:
        if snapshot.origin != skip:
            newest[snapshot.origin] = snapshot
    return list(newest.values())


def merge(model: OnlineModel, own_weight: float, peers: Sequence[ModelSnapshot]) -> int:
    """Blend ``peers`` into ``model`` in place, ``model`` counting ``own_weight`` (what it
    learned itself) and each peer what it learned itself. Returns how many peers were
    merged (those of another kind, or that learned nothing, are not)."""
    peers = [p for p in peers if p.kind == model.kind == SHAREABLE and p.learned > 0]
    if not peers:
        return 0
    scaler, ovr = _parts(model)
    mine = export(model, "", 0)
    own_scaler = mine.scaler if mine is not None else {}
    own_classes = mine.classes if mine is not None else {}
    sides = [(float(own_weight), own_scaler, own_classes)] + [
        (float(p.learned), p.scaler, p.classes) for p in peers]

    for feature in {f for _, sc, _ in sides for f in sc}:
        held = [(w, *sc[feature]) for w, sc, _ in sides if feature in sc]
        total = sum(w for w, *_ in held)
        if total <= 0:
            continue                           # only this model has it, at weight 0: as is
        mean = sum(w * m for w, _, m, _ in held) / total
        var = sum(w * (v + (m - mean) ** 2) for w, _, m, v in held) / total
        # the count is the most any side saw, not their sum: merged again and again, a sum
        # would grow without end and the scaler would stop following the data
        scaler.counts[feature] = max(int(c) for _, c, _, _ in held)
        scaler.means[feature], scaler.vars[feature] = mean, var

    for cls in {c for _, _, cl in sides for c in cl}:
        held_c = [(w, cl[cls]) for w, _, cl in sides if cls in cl]
        total = sum(w for w, _ in held_c)
        if total <= 0:
            continue
        features = {f for _, c in held_c for f in c["weights"]}
        weights = {f: sum(w * c["weights"].get(f, 0.0) for w, c in held_c) / total
                   for f in features}
        lr = ovr.classifiers.get(cls)
        if lr is None:                         # a class only the peers have seen labelled
            lr = ovr.classifiers[cls] = ovr.classifier.clone()
            model.classes.add(cls)
        lr.intercept = sum(w * c["intercept"] for w, c in held_c) / total
        lr._weights.clear()
        lr._weights.update(weights)
    # A model that had learned nothing predicts from here on with what it was given.
    model.n_learned = max(model.n_learned, max(p.n_learned for p in peers))
    return len(peers)
