"""/api/v1 on a real `corelane up --dry-run` (real broker, real uvicorn, real processes and
a real container): every read answers, every command reaches its topic and takes effect,
the live stream carries what happens, and a shutdown command stops the instance in order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.corelane_instance import Instance
from support.waiting import wait_for as wait

pytestmark = pytest.mark.integration
V1 = "/api/v1"




class Api:
    def __init__(self, corelane: Instance, token: str) -> None:
        self.http = httpx.Client(base_url=f"http://{corelane.api}{V1}", timeout=20,
                                 trust_env=False)
        self.auth = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> dict:
        response = self.http.get(path)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def post(self, path: str, body: dict, status: int = 202) -> dict:
        response = self.http.post(path, json=body, headers=self.auth)
        assert response.status_code == status, (path, response.text)
        return response.json()

    def rows(self, sql: str) -> list[list]:
        return self.post("/query", {"sql": sql}, 200)["rows"]


def test_reads_commands_stream_and_shutdown(kafka_bootstrap: str, tmp_path: Path,
                                            docker_engine, docker_containers) -> None:
    box = docker_containers(["sleep", "300"])
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-api-{os.getpid()}.",
                        collector=f"{{interval_s: 0.5, docker_host: '{docker_engine.host}'}}",
                        allocator="{interval_s: 0.5, heartbeat_s: 30}",
                        closed_loop="{enabled: false}")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    corelane.start()
    try:
        corelane.wait_recording()
        token_file = tmp_path / "api-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        api = Api(corelane, token_file.read_text().strip())

        # --- reads ---------------------------------------------------------------------
        health = api.get("/health")
        assert health["ready"] and {"classifier", "allocator", "recorder", "bus"} <= set(
            health["parts"])
        mine = wait("the sleeper in /processes", lambda: [
            p for p in api.get("/processes?name=time.sleep&limit=1000")["items"]
            if p["pid"] == sleeper.pid])
        assert mine[0]["policy"] == "other"
        detail = api.get(f"/processes/{sleeper.pid}")
        assert detail["live"] and detail["process"]["pid"] == sleeper.pid
        assert api.get("/topology")["cpus"]
        assert wait("a plan in /tiers", lambda: api.get("/tiers")["tiers"])
        assert api.get("/stats")["parts"]["recorder"]["counters"]["rows"] > 0
        # The history is written every storage.flush_interval_s: the plan is there soon.
        assert wait("decisions in the history", lambda: api.get("/decisions?limit=5")["items"])
        assert api.get("/core-utilization?from=-5m&step=10")["series"]
        assert wait("latency stats", lambda: api.get("/latency-stats?from=-5m")["rows"])
        assert "items" in api.get("/alerts") and "items" in api.get("/enforcements?limit=5")
        container = wait("the container in /containers", lambda: [
            c for c in api.get("/containers") if c["id"] == box.id])[0]
        assert api.get(f"/containers/{box.id[:12]}/stats?from=-5m")["container"]["id"] == box.id

        # --- the stream follows while commands are given --------------------------------
        streamed: list[tuple[str, dict]] = []

        def follow() -> None:
            with httpx.stream("GET", f"http://{corelane.api}{V1}/stream",
                              params={"types": "classifications,decisions,command",
                                      "seconds": "40"}, timeout=60, trust_env=False) as r:
                kind = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        streamed.append((kind, json.loads(line[6:])))
        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        time.sleep(1.0)

        refused = api.http.post("/mode", json={"mode": "emergency"})
        assert refused.status_code == 401 and "bearer token" in refused.json()["message"]

        label = api.post("/labels", {"class": "interactive", "pid": sleeper.pid})
        assert wait("the label recorded", lambda: api.rows(
            f"SELECT class FROM labels WHERE event_id = '{label['id']}'")) == [["interactive"]]
        wait("the label in force", lambda: any(
            c["source"] == "label" and c["class"] == "interactive"
            for c in api.get(f"/classifications?pid={sleeper.pid}")["items"]))

        tier = api.post("/register-process", {"tier": "critical", "pid": sleeper.pid})
        wait("the tier in force", lambda: api.get(f"/processes/{sleeper.pid}")
             ["process"]["tier"] == "critical")
        assert wait("register-process recorded", lambda: api.rows(
            f"SELECT tier FROM labels WHERE event_id = '{tier['id']}'")) == [["critical"]]

        judged = api.post("/classify-workload", {"pid": sleeper.pid}, 200)
        assert (judged["tier"], judged["source"]) == ("critical", "label")
        assert judged["features"] and judged["decision"]["tier"] == "critical"

        api.post("/mode", {"mode": "emergency"})
        wait("mode emergency", lambda: api.get("/tiers")["mode"] == "emergency")

        before = api.get("/tiers")["plan_seq"]
        api.post("/rebalance", {})
        # Nothing changed and the heartbeat is 30 s away: only the command makes a plan.
        wait("a plan made at once", lambda: (api.get("/tiers")["plan_seq"] or 0) > before,
             timeout_s=10)

        api.post(f"/containers/{box.id[:12]}/priority", {"tier": "critical"})
        wait("the container at its tier", lambda: [
            c for c in api.get("/containers") if c["id"] == box.id][0]["tier"] == "critical")
        assert container["id"] == box.id

        reader.join(45)
        kinds = {k for k, _ in streamed}
        assert {"classifications", "decisions", "command"} <= kinds, kinds
        assert any(k == "classifications" and any(
            c["pid"] == sleeper.pid and c["source"] == "label" for c in e["data"]["items"])
            for k, e in streamed)

        # --- the CLI's commands take the same path --------------------------------------
        done = corelane.run("mode", "auto")
        assert done.returncode == 0, done.stderr
        wait("mode back to the schedule", lambda: api.get("/tiers")["mode"] != "emergency")
        explained = corelane.run("explain", "--pid", str(sleeper.pid), "--json")
        assert explained.returncode == 0, explained.stderr
        assert json.loads(explained.stdout)["judgement"]["tier"] == "critical"

        # --- shutdown: the same orderly stop as SIGTERM ---------------------------------
        api.post("/admin/shutdown", {"reason": "test"})
        assert corelane.proc is not None
        corelane.proc.wait(timeout=60)
        assert corelane.proc.returncode == 0, corelane.log_text()[-3000:]
        assert "shutdown command" in corelane.log_text()
    finally:
        sleeper.kill()
        sleeper.wait()
        if corelane.proc is not None and corelane.proc.poll() is None:
            corelane.terminate()
