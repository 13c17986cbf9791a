"""Settings for a test's own agents on the session's broker, apart from other tests'."""
from __future__ import annotations

from pathlib import Path

from pipeline.settings import Settings, load_settings


def settings_for(bootstrap: str, home: Path, prefix: str) -> Settings:
    """The defaults, on broker ``bootstrap``, with files under ``home`` (made if missing) and
    topic names starting with ``prefix``."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = load_settings(env={"CORELANE_KAFKA": bootstrap, "CORELANE_HOME": str(home)})
    cfg.kafka.topic_prefix = prefix
    return cfg
