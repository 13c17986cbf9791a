"""Replay over a recorded history (a real DuckDB file, written as the recorder writes it):
the recorded configuration reproduces the recorded decisions, another policy differs where
it should, and the report is the same bytes on every run."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.replay.run import Policy, ReplayError, ReplayRequest, replay
from bench.synthetic import Fleet, live_history
from pipeline.settings import Settings, load_settings
from pipeline.topology import load_profile
from storage.history import HistoryStore

T0 = 1_780_000_000.0
HOST = "fleet-host"


def settings_for(tmp_path: Path, **allocator: object) -> Settings:
    s = load_settings(env={"CORELANE_HOME": str(tmp_path / "home"),
                           "CORELANE_HOST": HOST})
    s.classifier.learn = False           # no model: judgements come from the priors
    for key, value in allocator.items():
        setattr(s.allocator, key, value)
    return s


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    tmp = tmp_path_factory.mktemp("replay")
    settings = settings_for(tmp)
    events = list(live_history(settings, Fleet(60, seed=4), T0, 300,
                               load_profile("apple-m4-max"), host=HOST))
    with HistoryStore(tmp / "h.duckdb") as store:
        store.write([("t", 0, i, e) for i, e in enumerate(events)])
    return tmp, settings


def run(history: tuple[Path, Settings], **request: object) -> dict:
    tmp, settings = history
    with HistoryStore(tmp / "h.duckdb") as store:
        req = ReplayRequest(t_from=T0 + 60, t_to=T0 + 240, **request)
        return replay(store.cursor, settings, req, now=T0 + 300)


def test_the_recorded_configuration_reproduces_the_recorded_decisions(history) -> None:
    report = run(history)
    assert report["host"] == HOST and report["sweeps"] == 180
    assert report["samples"] == 180 * 60
    assert report["difference_count"] == 0, report["differences"]
    assert report["unexplained"] == 0
    recorded, replayed = report["sides"]["recorded"], report["sides"]["replayed"]
    assert recorded["tiers"].keys() == replayed["tiers"].keys()
    for tier, figures in recorded["tiers"].items():
        assert figures["processes"] == replayed["tiers"][tier]["processes"], tier


def test_another_mode_differs_and_says_how(history) -> None:
    tmp, settings = history
    other = settings_for(tmp, mode="power_save")
    report = run(history, policy=Policy("power-save", other))
    assert report["base"] == "recorded config" and report["other"] == "power-save"
    assert report["sides"]["power-save"]["mode"] == "power_save"
    assert report["sides"]["recorded config"]["mode"] == "balanced"
    assert report["difference_count"] > 0
    decision_diffs = [d for tier in report["differences"].values()
                      for kind, d in tier.items() if kind == "decision"]
    assert decision_diffs and all(d["examples"] for d in decision_diffs)
    example = decision_diffs[0]["examples"][0]
    assert "recorded config:" in example["reason"] and "power-save:" in example["reason"]
    # Classes come from the same classifier settings: only placement differs.
    assert not any("class" in tier for tier in report["differences"].values())


def test_a_report_is_the_same_on_every_run(history) -> None:
    assert run(history) == run(history)


@pytest.mark.parametrize("window, message", [
    ((T0 + 100, T0 + 50), "ends .* before it starts"),
    ((T0 + 400, T0 + 500), "no process samples of host fleet-host between"),
])
def test_windows_that_cannot_be_replayed_say_why(history, window, message) -> None:
    tmp, settings = history
    with HistoryStore(tmp / "h.duckdb") as store:
        with pytest.raises(ReplayError, match=message):
            replay(store.cursor, settings, ReplayRequest(*window), now=T0 + 600)


def test_an_unknown_host_and_an_expired_window_are_refused(history) -> None:
    tmp, settings = history
    with HistoryStore(tmp / "h.duckdb") as store:
        with pytest.raises(ReplayError, match="no history of host 'elsewhere'; hosts "
                                              "recorded: fleet-host"):
            replay(store.cursor, settings, ReplayRequest(T0, T0 + 60, host="elsewhere"),
                   now=T0 + 600)
        # Two days on, with a day's raw retention: the window is gone, and it says which
        # part of it is still there.
        with pytest.raises(ReplayError, match="before the raw samples' retention .* no part"):
            replay(store.cursor, settings, ReplayRequest(T0, T0 + 60), now=T0 + 2 * 86400)


def test_the_running_instance_replays_through_its_api(history) -> None:
    from fastapi.testclient import TestClient

    from api.server import create_api
    from api.service import ApiService
    from support.api_world import TOKEN, Caught, auth

    tmp, settings = history
    recent = settings.model_copy(deep=True)
    recent.storage.raw_retention_h = 24 * 365 * 10     # the recorded window is long ago
    with HistoryStore(tmp / "h.duckdb") as store:
        client = TestClient(create_api(ApiService(
            settings=recent, parts={}, topology=load_profile("apple-m4-max"),
            publish=Caught().publish, token=TOKEN, history_cursor=store.cursor)),
            raise_server_exceptions=False)
        window = {"from": str(T0 + 60), "to": str(T0 + 240)}
        assert client.post("/api/v1/replay", json=window).status_code == 401
        answer = client.post("/api/v1/replay", json=window, headers=auth())
        assert answer.status_code == 200, answer.text
        assert answer.json()["difference_count"] == 0
        assert answer.json()["sweeps"] == 180
        bad = client.post("/api/v1/replay", headers=auth(), json={
            **window, "policy": {"name": "other.yml", "yaml": "allocator: {mode: bogus}"}})
        assert bad.status_code == 400
        assert "other.yml" in bad.json()["message"] and "allocator.mode" in bad.json()["message"]
        late = client.post("/api/v1/replay", headers=auth(), json={"from": str(T0 + 900)})
        assert late.status_code == 400 and "no process samples" in late.json()["message"]
