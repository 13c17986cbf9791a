"""A recorded history without a broker: a synthetic host's samples and the classes and
plans corelane's own cores made of them (``bench.synthetic.live_history``), written to a
real DuckDB file as the recorder writes it."""
from __future__ import annotations

from pathlib import Path

from bench.synthetic import Fleet, live_history
from pipeline.settings import Settings, load_settings
from pipeline.topology import load_profile
from storage.history import HistoryStore

T0 = 1_780_000_000.0
HOST = "fleet-host"


def settings_for(tmp_path: Path, **allocator: object) -> Settings:
    s = load_settings(env={"CORELANE_HOME": str(tmp_path / "home"), "CORELANE_HOST": HOST})
    s.classifier.learn = False           # no model: judgements come from the priors
    for key, value in allocator.items():
        setattr(s.allocator, key, value)
    return s


def record(path: Path, settings: Settings, procs: int = 60, seconds: int = 300) -> Path:
    """``seconds`` of a ``procs``-process host from T0, recorded into ``path``."""
    events = list(live_history(settings, Fleet(procs, seed=4), T0, seconds,
                               load_profile("apple-m4-max"), host=HOST))
    with HistoryStore(path) as store:
        store.write([("t", 0, i, e) for i, e in enumerate(events)])
    return path
