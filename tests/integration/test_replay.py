"""Replay on a real recording: `corelane up` (with a shadow policy beside the live one) on
the real broker records this host for a while; then `corelane replay` reproduces the
window, finds exactly what a changed policy changes, and compares the shadow policy's
recorded plans with the live ones, through the running instance and from the file alike."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from support.corelane_instance import Instance

pytestmark = pytest.mark.integration

SECTIONS = {
    "collector": "{interval_s: 1.0, containers: false}",
    "allocator": "{interval_s: 2.0, heartbeat_s: 20}",
    "classifier": "{snapshot_interval_s: 5}",
    "closed_loop": "{enabled: false}",
}
# The low tier at nice 5 instead of 10, the rest of it as it is by default: a replay under
# this policy must differ in exactly that.
NICE5 = ("allocator: {interval_s: 2.0, heartbeat_s: 20, policy: {tiers: {low: {nice: 5, "
         "ioclass: be, iolevel: 6, policy: batch, headroom: 0.1, prefer: E, "
         "cpu_shares: 512}}}}\n")


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@pytest.fixture(scope="module")
def recorded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("replay")
    shadow = tmp / "nice5.yml"
    shadow.write_text("".join(f"{k}: {v}\n" for k, v in SECTIONS.items()
                              if k != "allocator") + NICE5)
    corelane = Instance(tmp, kafka_bootstrap, f"e2e-replay-{time.time_ns()}.",
                        up_args=("--shadow", f"nice5={shadow}"), **SECTIONS)
    # A process of ours in the low tier, by a label given before the window opens.
    batch = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    corelane.start()
    try:
        corelane.wait_recording()
        done = corelane.run("label", "compute_batch", "--pid", str(batch.pid))
        assert done.returncode == 0, done.stderr
        time.sleep(25)                  # the label is in force and the windows are full
        t1 = time.time()
        time.sleep(35)
        t2 = time.time()
        time.sleep(4)                   # the recorder has written the window
        yield corelane, tmp, shadow, (iso(t1), iso(t2)), batch.pid
    finally:
        batch.kill()
        batch.wait()
        if corelane.proc is not None and corelane.proc.poll() is None:
            corelane.terminate()


def replay(corelane: Instance, window: tuple[str, str], *args: str) -> dict:
    done = corelane.run("replay", "--from", window[0], "--to", window[1], "--json", *args,
                        timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_recorded_configuration_reproduces_the_window(recorded) -> None:
    corelane, _, _, window, _ = recorded
    report = replay(corelane, window)
    assert report["compared"].startswith("the recorded decisions")
    assert report["sweeps"] >= 30 and report["samples"] > 30 * 20
    assert "recorded configuration" in report["configuration"]
    assert report["model"].startswith("model v"), report["model"]   # a version stood at T1
    assert report["unexplained"] == 0, json.dumps(report["differences"], indent=1)
    recorded_side, replayed = report["sides"]["recorded"], report["sides"]["replayed"]
    # Our labelled process is in the low tier on both sides (a tier's count of processes
    # may differ by one that changed tier a sweep apart: timing, not a difference).
    assert recorded_side["tiers"]["low"]["processes"] >= 1
    assert replayed["tiers"]["low"]["processes"] >= 1


def test_a_changed_policy_differs_in_exactly_what_it_changes(recorded) -> None:
    corelane, tmp, shadow, window, batch_pid = recorded
    report = replay(corelane, window, "--policy", str(shadow))
    assert (report["base"], report["other"]) == ("recorded config", "nice5")
    assert list(report["differences"]) == ["low"], report["differences"]
    low = report["differences"]["low"]
    assert list(low) == ["decision"]        # same classifier: no class differs
    examples = low["decision"]["examples"]
    assert examples and all("nice 10" in e["base"] and "nice 5" in e["other"]
                            and e["base"].replace("nice 10", "nice 5") == e["other"]
                            for e in examples), examples
    assert any(e["target"].startswith(f"pid {batch_pid} ") for e in examples) or \
        low["decision"]["count"] > len(examples)


def test_a_shadow_policy_is_recorded_never_applied_and_compared(recorded) -> None:
    corelane, _, _, window, _ = recorded
    done = corelane.run("query", "--format", "json",
                        "SELECT count(*) AS n, min(policy) AS lo, max(policy) AS hi, "
                        "count(*) FILTER (WHERE target = 'process' AND tier = 'low' "
                        "AND nice = 5) AS low5 FROM shadow_decisions")
    assert done.returncode == 0, done.stderr
    (n, lo, hi, low5), = json.loads(done.stdout)["rows"]
    assert n > 0 and lo == hi == "nice5" and low5 > 0
    applied = corelane.run("query", "--format", "json",
                           "SELECT count(*) FROM enforcements e JOIN shadow_decisions s "
                           "ON e.plan_id = s.batch")
    assert json.loads(applied.stdout)["rows"] == [[0]]
    live = corelane.run("query", "--format", "json",
                        "SELECT count(*) FROM enforcements")
    assert json.loads(live.stdout)["rows"][0][0] > 0      # the live plans were (dry-)applied
    compared = corelane.run("query", "--format", "json",
                            f"SELECT sum(differ) FROM shadow_vs_live('{window[0][:-1]}', "
                            f"'{window[1][:-1]}') WHERE tier = 'low'")
    assert json.loads(compared.stdout)["rows"][0][0] > 0
    report = replay(corelane, window, "--shadow", "nice5")
    assert (report["base"], report["other"]) == ("recorded", "nice5")
    assert report["model"].startswith("not used")
    low = report["differences"]["low"]["decision"]
    assert all("nice 10" in e["base"] and "nice 5" in e["other"] for e in low["examples"]), \
        [(e["base"], e["other"], e["reason"]) for e in low["examples"]]


def test_bad_windows_say_why_and_change_nothing(recorded) -> None:
    corelane, _, _, window, _ = recorded
    for args, message in ((("--from", window[1], "--to", window[0]), "before it starts"),
                          (("--from", window[0], "--to", window[1], "--host", "elsewhere"),
                           "no history of host 'elsewhere'"),
                          (("--from", "-1h", "--to", "-50m"), "no process samples"),
                          (("--from", "soon"), "cannot read the time 'soon'"),
                          (("--from", window[0], "--to", window[1], "--shadow", "other"),
                           "no plans of a shadow policy 'other'")):
        done = corelane.run("replay", *args)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            done.stderr


def test_replays_read_the_file_when_no_instance_runs_and_give_the_same_bytes(recorded) -> None:
    corelane, tmp, _, window, _ = recorded
    through_api = corelane.run("replay", "--from", window[0], "--to", window[1], "--json")
    assert through_api.returncode == 0, through_api.stderr
    again = corelane.run("replay", "--from", window[0], "--to", window[1], "--json")
    assert again.stdout == through_api.stdout
    corelane.terminate()
    counts = "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM process_samples)"
    before = corelane.run("query", "--format", "json", counts)
    from_file = corelane.run("replay", "--from", window[0], "--to", window[1], "--json")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == through_api.stdout
    page = tmp / "replay.html"
    html = corelane.run("replay", "--from", window[0], "--to", window[1], "--html", str(page))
    assert html.returncode == 0 and page.stat().st_size > 1000, html.stderr
    after = corelane.run("query", "--format", "json", counts)
    assert json.loads(after.stdout)["rows"] == json.loads(before.stdout)["rows"]
