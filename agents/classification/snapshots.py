"""The model's snapshots as versions on a shelf (a folder), so a replay can load the model
that stood at any time.

Each save writes ``model-v000007.pkl``: the model as it was, tagged with its version and
the offset and time of the last input it learned from. The newest is the one a restart
loads; ``at(t)`` is the newest that had learned only from input before ``t``. Versions
older than the history's raw retention are pruned, keeping the newest of them, which is
the one still in force at the retention's edge.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from agents.classification.model import ModelSnapshotError, OnlineModel
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^model-v(\d+)\.pkl$")
LEGACY_NAME = "model.pkl"        # one snapshot, overwritten: the layout before versions


@dataclass(frozen=True)
class SnapshotInfo:
    version: int
    path: Path
    learned_until: float | None      # None: not known (a legacy file)
    offset: int | None


class ModelShelf:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_of(self, version: int) -> Path:
        return self.folder / f"model-v{version:06d}.pkl"

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, model: OnlineModel, offset: int | None,
             learned_until: float | None) -> int:
        """A new version of ``model``; returns its number."""
        newest = max(self.versions(), default=0)
        model.version = max(model.version, newest)   # versions only go up on a shelf
        target = self.path_of(model.version + 1)
        version = model.save(target, offset, learned_until)
        assert target == self.path_of(version)
        return version

    def latest(self) -> OnlineModel | None:
        """The newest version (or a legacy single snapshot); None on an empty shelf.
        Raises ModelSnapshotError for one that cannot be read."""
        versions = self.versions()
        if versions:
            return OnlineModel.load(self.path_of(versions[-1]))
        legacy = self.folder / LEGACY_NAME
        return OnlineModel.load(legacy) if legacy.exists() else None

    def at(self, t: float) -> OnlineModel | None:
        """The newest version that learned only from input before ``t``; None if none did.
        A version that cannot be read is passed over with a warning."""
        for version in reversed(self.versions()):
            try:
                model = OnlineModel.load(self.path_of(version))
            except ModelSnapshotError as exc:
                log.warning("%s; passed over", exc)
                continue
            if model.learned_until is not None and model.learned_until <= t:
                return model
        return None

    def prune(self, keep_s: float, now: float | None = None) -> int:
        """Remove versions that stopped learning more than ``keep_s`` ago, except the newest
        of those (in force at the horizon) and the newest of all. Returns how many went."""
        horizon = (time.time() if now is None else now) - keep_s
        versions = self.versions()
        old = []
        for version in versions[:-1]:
            try:
                until = OnlineModel.load(self.path_of(version)).learned_until
            except ModelSnapshotError:
                until = None
            if until is not None and until < horizon:
                old.append(version)
        gone = old[:-1]
        for version in gone:
            self.path_of(version).unlink(missing_ok=True)
        return len(gone)


def model_shelf(settings: Settings) -> ModelShelf:
    """Where the model's versions are kept (``classifier.snapshot_dir``, else home/models)."""
    folder = settings.classifier.snapshot_dir
    return ModelShelf(Path(folder).expanduser() if folder else settings.home_path / "models")


def load_model(settings: Settings) -> OnlineModel:
    """The newest snapshot, or a new model; a snapshot that cannot be read is set aside."""
    shelf = model_shelf(settings)
    cfg = settings.classifier
    try:
        model = shelf.latest()
    except ModelSnapshotError as exc:
        versions = shelf.versions()
        path = shelf.path_of(versions[-1]) if versions else shelf.folder / LEGACY_NAME
        aside = path.with_suffix(f".unreadable-{int(time.time())}")
        path.rename(aside)
        log.warning("%s; starting a new model (the old file is kept as %s)", exc, aside)
        model = None
    if model is not None:
        log.info("model %s loaded from %s (learned up to offset %s)", model.tag,
                 shelf.folder, model.offset)
        return model
    return OnlineModel(cfg.model, drift_delta=cfg.drift_delta)
