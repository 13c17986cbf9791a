"""docker-compose.yml cannot run here (no engine for compose); it is checked by reading."""
from __future__ import annotations

from pathlib import Path

import tomllib
import yaml

from pipeline.settings import ENV_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_parses_with_its_services() -> None:
    doc = compose()
    assert set(doc["services"]) == {"kafka", "corelane", "prometheus", "grafana"}
    for name, service in doc["services"].items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):             # a file of this repository
                assert (ROOT / source).exists(), (name, volume)
            else:
                assert source.startswith("/") or source in doc["volumes"], (name, volume)


def test_prometheus_and_grafana_are_pinned_and_on_loopback() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image
        assert services[name]["network_mode"] == "host"
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    env = services["grafana"]["environment"]
    assert (env["GF_SERVER_HTTP_ADDR"], env["GF_SERVER_HTTP_PORT"]) == ("127.0.0.1", "3000")


def test_kafka_is_a_single_kraft_node_on_loopback() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    listeners = env["KAFKA_LISTENERS"].split(",")
    assert all("//127.0.0.1:" in listener for listener in listeners)
    ctl_port = next(lst for lst in listeners if lst.startswith("CONTROLLER")).rsplit(":", 1)[1]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@127.0.0.1:{ctl_port}"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_corelane_has_what_enforcement_needs() -> None:
    doc = compose()
    service = doc["services"]["corelane"]
    assert service["pid"] == "host"
    assert "SYS_NICE" in service["cap_add"]
    assert any(v.startswith("/var/run/docker.sock:") for v in service["volumes"])
    assert set(service["environment"]) <= set(ENV_OVERRIDES)
    kafka_env = doc["services"]["kafka"]["environment"]
    assert service["environment"]["CORELANE_KAFKA"] in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_image_copies_every_package_it_installs() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for top in {p.split(".")[0] for p in packages}:
        assert f"COPY {top} ./{top}" in dockerfile, top
