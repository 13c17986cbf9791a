"""Replay over a recorded history (a real DuckDB file, written as the recorder writes it):
the recorded configuration reproduces the recorded decisions, another policy differs where
it should, and the report is the same bytes on every run."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.replay.run import Policy, ReplayError, ReplayRequest, replay
from pipeline.settings import Settings
from pipeline.topology import load_profile
from storage.history import HistoryStore
from support.recorded_history import HOST, T0, record, settings_for


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    tmp = tmp_path_factory.mktemp("replay")
    settings = settings_for(tmp)
    record(tmp / "h.duckdb", settings)
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


class _Side:
    """A side whose decisions the test sets by hand."""

    def __init__(self, name: str) -> None:
        from agents.replay.sides import SideState
        self.name, self.state, self._classes = name, SideState(), {}

    def classes(self) -> dict:
        return self._classes

    def place(self, cpus: str, nice: int = 0) -> None:
        from pipeline.events import Decision
        self.state.take([Decision(target="process", tier="normal", cpus=cpus, pid=7,
                                  start_time=70, nice=nice, reason=f"on {cpus}")], "balanced", "")


def test_a_short_disagreement_is_timing_and_a_long_one_a_difference_with_its_reason() -> None:
    from agents.replay.report import Comparison
    from pipeline.events import ProcessSample

    base, other = _Side("base"), _Side("other")
    reasons = []

    def explain(d):
        reasons.append(d)
        return f"because {d.other}", False

    cmp = Comparison(base, other, 0.0, 100.0, tolerance_s=3.0, explain=explain)
    sample = ProcessSample(pid=7, start_time=70, ppid=1, name="svc", cpu_share=0.5)
    timeline = {0: ("0", "0"), 1: ("0", "1"), 3: ("0", "0"),      # 2 s apart: timing
                10: ("0", "1-2"), 40: ("0", "0")}                  # 30 s apart: a difference
    placed = ("0", "0")
    for t in range(60):
        placed = timeline.get(t, placed)
        base.place(placed[0])
        other.place(placed[1])
        cmp.sweep(float(t), [sample])
    cmp.finish()
    out = cmp.report()
    assert out["timing_only"] == {"class": 0, "decision": 1}
    diff = out["differences"]["normal"]["decision"]
    assert (diff["count"], diff["seconds"], diff["unexplained"]) == (1, 30.0, 1)
    example, = diff["examples"]
    assert example["base"] == "normal: cpus 0, nice 0" and example["other"] == \
        "normal: cpus 1-2, nice 0"
    assert example["reason"] == "because normal: cpus 1-2, nice 0"
    assert example["target"] == "pid 7 (svc)" and example["seconds"] == 30.0
    # Demand against cores: one process of half a core, on one core on either side.
    assert out["sides"]["base"]["tiers"]["normal"]["demand_cores_avg"] == 0.5
    assert out["sides"]["other"]["tiers"]["normal"]["overcommitted_s"] == 0.0


def test_a_rule_file_changed_since_the_recording_is_said(tmp_path: Path) -> None:
    import shutil

    rules = tmp_path / "rules.yml"
    shutil.copy(Path(__file__).resolve().parents[2] / "config" / "rules" / "default.yml", rules)
    settings = settings_for(tmp_path)
    settings.classifier.rules_file = str(rules)
    record(tmp_path / "h.duckdb", settings, procs=20, seconds=120)
    with HistoryStore(tmp_path / "h.duckdb") as store:
        same = replay(store.cursor, settings, ReplayRequest(T0 + 40, T0 + 100), now=T0 + 200)
        assert "has changed since" not in same["configuration"]
        rules.write_text(rules.read_text() + "\n# edited after the recording\n")
        later = replay(store.cursor, settings, ReplayRequest(T0 + 40, T0 + 100), now=T0 + 200)
    assert f"its rule file {rules} has changed since" in later["configuration"]
