"""The bearer token: configured, or made once in a private file the CLI reads."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from api.auth import ensure_token, read_token, token_matches, token_path
from pipeline.settings import load_settings


def test_a_token_file_is_made_private_once_and_read_back(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path)})
    token = ensure_token(settings)
    assert token and len(token) >= 32
    assert token_path(settings).stat().st_mode & 0o777 == 0o600
    assert ensure_token(settings) == token == read_token(settings)   # kept across starts
    token_path(settings).chmod(0o644)                                 # someone opened it up
    assert ensure_token(settings) != token                            # so it is made anew
    assert token_path(settings).stat().st_mode & 0o777 == 0o600


def test_a_configured_token_wins_and_is_checked(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path), "CORELANE_TOKEN": "s" * 20})
    assert ensure_token(settings) == "s" * 20 and not token_path(settings).exists()
    assert token_matches("s" * 20, "Bearer " + "s" * 20)
    assert not token_matches("s" * 20, "Bearer " + "x" * 20)
    assert not token_matches("s" * 20, "Basic " + "s" * 20) and not token_matches("s" * 20, None)


def test_no_token_off_loopback_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path), "CORELANE_API": "0.0.0.0:8710"})
    settings.api.require_token = False
    with caplog.at_level(logging.WARNING):
        assert ensure_token(settings) is None
    assert "takes commands from anyone" in caplog.text
    assert token_matches(None, None)
