"""The corelane command as a user runs it: real processes, real broker, clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pipeline import events as ev
from pipeline.kafka.broker import LocalBroker, is_answering
from support.corelane_instance import Instance
from support.ports import free_port
from support.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def corelane(*args: str, env: dict[str, str] | None = None, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corelane", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)



def test_collect_to_stdout_writes_valid_json_lines(tmp_path: Path) -> None:
    done = corelane("collect", "--stdout", "--count", "2", "--interval", "0.2",
                    env={"CORELANE_HOME": str(tmp_path), "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert done.returncode == 0, done.stderr
    events = [ev.decode(line.encode()) for line in done.stdout.splitlines()]
    types = [e.type for e in events]
    assert types.count("host_sample") == 2
    assert types.count("process_samples") >= 2
    assert types.count("alert") == 1  # no Docker: said once, not once per sweep
    alert = next(e for e in events if e.type == "alert")
    assert alert.data.rule == "docker_unavailable" and alert.data.state == "open"
    second = [e for e in events if e.type == "process_samples"][-1]
    assert any(s.pid == os.getpid() for e in events if e.type == "process_samples"
               for s in e.data.samples)
    assert second.data.interval_s > 0.1


def test_bad_config_is_one_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("collector:\n  interval_s: soon\n")
    done = corelane("--config", str(bad), "collect", "--stdout", "--count", "1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(bad) in done.stderr.replace("\n", "")
    assert "collector.interval_s" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("rules, says", [
    ('rules:\n  - name: bad\n    class: idle\n    match: {name: "("}\n',
     "rule 1 ('bad'): key 'match.name': not a valid regular expression"),
    (None, "cannot read rule file"),
    ('rules:\n  - name: greedy\n    class: idle\n    when: {cpu_mean: {min: "lots"}}\n',
     "rule 1 ('greedy'): key 'when.cpu_mean.min'"),
], ids=["regex", "missing", "not-a-number"])
def test_a_bad_rules_file_is_one_line_before_anything_starts(tmp_path: Path, rules: str | None,
                                                            says: str) -> None:
    path = tmp_path / "rules.yml"
    if rules is not None:
        path.write_text(rules)
    config = tmp_path / "corelane.yml"
    config.write_text(f"classifier: {{rules_file: '{path}'}}\n")
    home = tmp_path / "home"
    done = corelane("--config", str(config), "up", "--dry-run",
                    env={"CORELANE_HOME": str(home), "CORELANE_API": f"127.0.0.1:{free_port()}",
                         "CORELANE_KAFKA": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert says in lines[0] and str(path) in lines[0] and "classifier.rules_file" in lines[0]
    assert not home.exists()          # no history, journal or broker was made first


@pytest.mark.parametrize("shadow, says", [
    ("calm", "give NAME=FILE"),
    ("live=x.yml", "not 'live'"),
    ("calm={missing}", "cannot read configuration file"),
    ("calm={bad}", "key 'allocator.mode'"),
], ids=["no-file", "reserved-name", "missing", "invalid"])
def test_a_bad_shadow_policy_is_one_line_before_anything_starts(tmp_path: Path, shadow: str,
                                                                says: str) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("allocator: {mode: sometimes}\n")
    home = tmp_path / "home"
    done = corelane("up", "--dry-run", "--shadow",
                    shadow.format(missing=tmp_path / "none.yml", bad=bad),
                    env={"CORELANE_HOME": str(home), "CORELANE_API": f"127.0.0.1:{free_port()}",
                         "CORELANE_KAFKA": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 2, done.stderr
    text = " ".join(done.stderr.split())
    assert says in text and "Traceback" not in done.stderr, done.stderr
    assert not home.exists()          # nothing was made first


def test_collect_without_a_broker_says_so(tmp_path: Path) -> None:
    done = corelane("collect", "--count", "1",
                    env={"CORELANE_KAFKA": f"127.0.0.1:{free_port()}",
                         "CORELANE_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "no Kafka broker answers" in done.stderr and "Traceback" not in done.stderr


def test_topology_profile_json() -> None:
    done = corelane("topology", "--profile", "apple-m4-max", "--json")
    assert done.returncode == 0, done.stderr
    topo = json.loads(done.stdout)
    types = [c["core_type"] for c in topo["cpus"]]
    assert types.count("P") == 12 and types.count("E") == 4
    assert [c["cpu"] for c in topo["cpus"] if c["core_type"] == "P"] == list(range(12))
    for cpu in topo["cpus"]:
        assert {"cpu", "core", "package", "node", "core_type", "capacity",
                "max_freq_khz"} <= set(cpu)


def test_topology_of_this_host_as_a_table() -> None:
    done = corelane("topology")
    assert done.returncode == 0, done.stderr
    assert str(os.cpu_count()) in done.stdout


def test_unknown_profile_lists_the_known_ones() -> None:
    done = corelane("topology", "--profile", "no-such-machine")
    assert done.returncode == 1
    assert "apple-m4-max" in done.stderr and "Traceback" not in done.stderr


def scrape(api: str) -> dict[str, Metric]:
    """/metrics of the instance at ``api``, by family name (a counter's without _total)."""
    text = httpx.get(f"http://{api}/metrics/", timeout=5).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_up_serves_health_collects_and_stops_cleanly(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, "e2e-up.",
                        collector="{interval_s: 0.5, containers: false}",
                        allocator="{interval_s: 0.5}", closed_loop="{enabled: true}")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    corelane.start()
    try:
        health = corelane.wait_recording()
        assert health["status"] == "ok", health
        assert set(health["parts"]) >= {"collector", "bus", "recorder", "classifier",
                                         "allocator", "applier", "tuner"}
        assert health["parts"]["bus"]["stats"]["published"]["process_samples"] >= 2
        assert health["parts"]["collector"]["lag_s"] < 5
        api = corelane.api
        missing = httpx.get(f"http://{api}/api/v1/nothing-here", timeout=2)
        assert missing.status_code == 404 and "message" in missing.json()

        # /metrics: every part the health document lists, each family with its help
        def applied() -> dict[str, Metric] | None:
            families = scrape(api)
            outcomes = families.get("corelane_applier_outcomes")
            return families if outcomes is not None and outcomes.samples else None

        families = wait_for("a plan applied, in /metrics", applied)
        for part in health["parts"]:
            mine = [f for name, f in families.items() if name.startswith(f"corelane_{part}_")]
            assert mine, f"no corelane_{part}_ family in /metrics"
            assert all(f.documentation for f in mine), [f.name for f in mine
                                                        if not f.documentation]
        published = {s.labels["type"] for s in families["corelane_bus_published"].samples}
        assert "process_samples" in published
        assert families["corelane_collector_last_sweep_s"].samples[0].value > 0
        for agent in ("classifier", "allocator", "applier"):
            assert families[f"corelane_{agent}_lag_s"].type == "gauge"
        pools = {s.labels["pool"]: s.value for s in families["corelane_allocator_pool_cores"]
                 .samples}
        # pools may share cores (the closed loop's shared strategy), so each is bounded
        assert pools.get("housekeeping", 0) >= 1, pools
        assert all(1 <= n <= (os.cpu_count() or 1) for n in pools.values()), pools
        tiers = {s.labels["tier"] for s in families["corelane_allocator_decisions_by_tier"]
                 .samples}
        assert "housekeeping" in tiers
        # a dry run applies nothing: every target it met was skipped
        assert {s.labels["outcome"] for s in families["corelane_applier_outcomes"].samples} \
            == {"skipped"}
        assert families["process_resident_memory_bytes"].samples[0].value > 0

        # corelane top: one frame of this instance shows the sleeper in its tier
        labelled = corelane.run("label", "--pid", str(sleeper.pid), "--tier", "critical")
        assert labelled.returncode == 0, labelled.stderr
        wait_for("the sleeper in the critical pool", lambda: any(
            t["tier"] == "critical" and t["members"] for t in httpx.get(
                f"http://{api}/api/v1/tiers", timeout=5).json()["tiers"]))
        top = corelane.run("top", "--once")
        assert top.returncode == 0, top.stderr
        members = top.stdout.split("members", 1)[1].split("newest decisions", 1)[0]
        # a tier is named on its first member's row only: the rows after it are its own
        tier_of, tier = {}, ""
        for row in members.splitlines():
            cells = row.split()
            if len(cells) >= 2 and cells[0].isdigit():
                tier_of[int(cells[0])] = tier
            elif len(cells) >= 3 and cells[1].isdigit():
                tier = cells[0]
                tier_of[int(cells[1])] = tier
        assert tier_of.get(sleeper.pid) == "critical", top.stdout
        assert "pools" in top.stdout and "open alerts" in top.stdout

        def applier() -> dict:
            return httpx.get(f"http://{api}/api/v1/health", timeout=5).json()["parts"]["applier"]

        paused = corelane.run("pause")
        assert paused.returncode == 0 and "every host: paused" in paused.stderr, paused.stderr
        wait_for("the applier reporting its pause", lambda: "paused" in applier()["reason"], 30)
        assert applier()["state"] == "degraded"
        resumed = corelane.run("resume", "--host", "nowhere")
        assert resumed.returncode == 0, resumed.stderr
        time.sleep(1.0)
        assert "paused" in applier()["reason"], "a resume for another host leaves it paused"
        assert corelane.run("resume").returncode == 0
        wait_for("the applier enforcing again", lambda: applier()["state"] == "ok", 30)
    finally:
        sleeper.kill()
        sleeper.wait()
        stderr = corelane.terminate()
    assert "Traceback" not in stderr
    assert "paused by command" in stderr and "resumed by command" in stderr
    assert "command pause" in stderr, "the terminal tells of the operator's command"


def test_check_validates_a_configuration_and_its_rules_without_starting(tmp_path: Path) -> None:
    good = corelane("check")
    assert good.returncode == 0 and "valid;" in good.stderr, good.stderr
    bad_rules = tmp_path / "rules.yml"
    bad_rules.write_text("rules:\n  - name: r\n    match: {name: '(unclosed'}\n    class: idle\n")
    config = tmp_path / "c.yml"
    config.write_text(f"classifier: {{rules_file: '{bad_rules}'}}\n")
    done = corelane("check", str(config))
    assert done.returncode == 2, done.stderr
    assert str(bad_rules) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    config.write_text("alerts: {rules: [{name: hot, signal: core_temperature, above: 9, "
                      "clear_below: 20}]}\n")
    done = corelane("check", str(config))
    assert done.returncode == 2 and "alerts.rules.0.clear_below" in done.stderr, done.stderr


def test_top_without_a_running_instance_is_one_line(tmp_path: Path) -> None:
    done = corelane("top", "--once", env={"CORELANE_API": f"127.0.0.1:{free_port()}",
                                          "CORELANE_HOME": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "no corelane answers at" in done.stderr
    assert done.stdout == ""


def test_up_starts_a_broker_when_none_answers_and_stops_it(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    corelane = Instance(tmp_path, bootstrap, "corelane.", collector="{containers: false}",
                        broker=f"{{heap_mb: 512, controller_port: {free_port()}}}")
    broker = LocalBroker(bootstrap, home=tmp_path)
    corelane.start()
    try:
        corelane.wait_recording(timeout_s=180)
        assert is_answering(bootstrap, 5.0)
        pid = broker.read_pid()
        assert pid is not None
    finally:
        try:
            corelane.terminate()
        except BaseException:
            broker.stop()
            raise
    # It stopped the broker it started, by that broker's pid.
    assert not Path(f"/proc/{pid}").exists()
    assert not is_answering(bootstrap, 2.0)


def test_mode_command_switches_the_plans_and_auto_hands_back(kafka_bootstrap: str,
                                                            tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-mode-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        allocator="{interval_s: 0.5}")
    corelane.start()

    def newest_mode(after_ms: int) -> str:
        out = corelane.run("query", "--format", "csv",
                           f"SELECT mode FROM decisions WHERE epoch_ms(ts) > {after_ms} "
                           f"ORDER BY ts DESC LIMIT 1")
        assert out.returncode == 0, out.stderr
        rows = out.stdout.split()
        return rows[1] if len(rows) > 1 else ""

    def wait_for(mode: str, after_ms: int = 0) -> str:
        deadline, seen = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            seen = newest_mode(after_ms)
            if seen == mode:
                break
            time.sleep(0.5)
        return seen

    try:
        corelane.wait_recording()
        assert wait_for("balanced") == "balanced"
        bad = corelane.run("mode", "turbo")
        assert bad.returncode == 2 and "unknown mode 'turbo'" in bad.stderr, bad.stderr
        switched = corelane.run("mode", "emergency")
        assert switched.returncode == 0, switched.stderr
        assert wait_for("emergency") == "emergency"
        # The operator's mode outlives a restart: it is read back from the command topic.
        corelane.terminate()
        restarted_ms = int(time.time() * 1000)
        corelane.start()
        corelane.wait_recording()
        assert wait_for("emergency", after_ms=restarted_ms) == "emergency"
        back = corelane.run("mode", "auto")
        assert back.returncode == 0, back.stderr
        assert wait_for("balanced") == "balanced"
    finally:
        stderr = corelane.terminate()
    assert "Traceback" not in stderr


def test_sighup_reloads_what_it_can_and_refuses_a_bad_file(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-hup-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        allocator="{interval_s: 0.5, mode: balanced}",
                        closed_loop="{enabled: false}")
    corelane.start()
    try:
        corelane.wait_recording()
        base = corelane.config.read_text()
        assert corelane.proc is not None
        corelane.config.write_text(base.replace("mode: balanced", "mode: turbo"))
        corelane.proc.send_signal(signal.SIGHUP)
        wait_for("a bad file's refusal", lambda: "reload refused" in corelane.log_text(), 30)
        assert "key 'allocator.mode'" in corelane.log_text()
        corelane.config.write_text(base.replace("mode: balanced", "mode: power_save")
                                   + "storage: {flush_rows: 500}\n")
        corelane.proc.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: "reloaded from" in corelane.log_text(), 30)
        line = next(x for x in corelane.log_text().splitlines() if "reloaded from" in x)
        assert "allocator.mode" in line and "at the next start: storage.flush_rows" in line

        def newest_mode() -> str:
            health = httpx.get(f"http://{corelane.api}/api/v1/tiers", timeout=5).json()
            return health.get("mode") or ""
        wait_for("a plan in the reloaded mode", lambda: newest_mode() == "power_save", 30)

        def configurations() -> str:
            done = corelane.run("query", "select count(distinct hash) from configurations",
                                "--format", "csv")
            assert done.returncode == 0, done.stderr
            return done.stdout.strip().splitlines()[-1]
        wait_for("the reloaded configuration in the history", lambda: configurations() == "2",
                 30)
    finally:
        stderr = corelane.terminate()
    assert "Traceback" not in stderr
