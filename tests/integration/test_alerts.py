"""An alert rule on a real `corelane up --dry-run`: a core of a simulated sensor tree heats
up, the core_hot rule opens an alert once it has held for its duration, both webhooks
(Slack-compatible and generic) receive it on a local server, the API lists it, and it
resolves once the core has cooled below its clear level."""
from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from support.corelane_instance import Instance
from support.thermal_tree import write_zone
from support.waiting import wait_for as wait
from support.webhook_endpoint import Endpoint

pytestmark = pytest.mark.integration
SYSFS = Path(__file__).resolve().parents[1] / "data" / "sysfs" / "this-machine-2cpu.tar.xz"


def test_an_alert_opens_notifies_and_resolves_on_a_real_run(kafka_bootstrap: str,
                                                            tmp_path: Path) -> None:
    with tarfile.open(SYSFS) as tar:
        tar.extractall(tmp_path / "captured", filter="data")
    root = tmp_path / "captured" / "this-machine-2cpu"
    write_zone(root, 0, "cpu-thermal", 55.0)
    slack, generic = Endpoint(fail_first=1), Endpoint()
    corelane = Instance(
        tmp_path, kafka_bootstrap, f"e2e-alerts-{os.getpid()}.",
        collector="{interval_s: 0.5, containers: false}",
        allocator="{interval_s: 0.5}", closed_loop="{enabled: false}",
        topology=f"{{sys_root: '{root}'}}",
        alerts=("{rules: [{name: core_hot, signal: core_temperature, above: 90, "
                "clear_below: 80, for_s: 1, clear_for_s: 1, severity: critical}], "
                f"webhooks: [{{url: '{slack.url}', format: slack, backoff_s: 0.2}}, "
                f"{{url: '{generic.url}', format: generic}}]}}"))
    api = httpx.Client(base_url=f"http://{corelane.api}/api/v1", timeout=10, trust_env=False)
    corelane.start()
    try:
        corelane.wait_recording()
        assert not generic.bodies, "nothing is hot yet"
        heated = time.monotonic()
        write_zone(root, 0, "cpu-thermal", 97.0)
        try:
            wait("the posts of both cpus' alerts",
                 lambda: len(generic.bodies) >= 2 and len(slack.bodies) >= 2)
        except AssertionError:
            raise AssertionError(f"{generic.bodies}\n{corelane.log_text()[-4000:]}") from None
        assert time.monotonic() - heated >= 1.0, "opened only once hot for for_s"
        opened = [b["data"] for b in generic.bodies]
        assert {a["details"]["subject"] for a in opened} == {"cpu 0", "cpu 1"}
        assert {(a["rule"], a["state"], a["severity"]) for a in opened} == {
            ("core_hot", "open", "critical")}
        assert "at 97.0 °C, above 90 °C for 1 s" in opened[0]["message"]
        assert all(b["text"].startswith(":rotating_light: corelane on ") for b in slack.bodies)
        assert slack.attempts == 3, "the first post failed (503) and was retried"

        listed = wait("the API listing the open alerts",
                      lambda: api.get("/alerts", params={"state": "open"}).json()["items"], 30)
        assert {a["alert_id"] for a in listed} >= {a["id"] for a in opened}, listed

        write_zone(root, 0, "cpu-thermal", 85.0)      # cooler, but above the clear level
        time.sleep(2.0)
        assert len(generic.bodies) == 2, "nothing resolves inside the hysteresis band"
        write_zone(root, 0, "cpu-thermal", 60.0)
        try:
            wait("the posts of the alerts' resolution", lambda: len(generic.bodies) >= 4)
        except AssertionError:
            raise AssertionError(corelane.log_text()[-4000:]) from None
        resolved = [b["data"] for b in generic.bodies[2:]]
        assert {a["state"] for a in resolved} == {"resolved"}
        assert {a["id"] for a in resolved} == {a["id"] for a in opened}
        assert "below 80 °C" in resolved[0]["message"]
        wait("the API listing no open alert",
             lambda: not api.get("/alerts", params={"state": "open"}).json()["items"], 30)
        health = api.get("/health").json()["parts"]
        assert health["alerter"]["stats"]["opened"] == 2
        assert health["alerter"]["stats"]["resolved"] == 2
        assert health["notifier"]["stats"]["posted"] == 8
    finally:
        corelane.terminate()
        slack.close()
        generic.close()
