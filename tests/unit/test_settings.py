"""Configuration: defaults, overrides, and errors that name the file, the key and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config import DEFAULT_CONFIG
from pipeline.settings import ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "corelane.yml"
    path.write_text(text)
    return path


def test_default_file_documents_every_setting() -> None:
    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text())
    model = Settings().model_dump()

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out
    assert keys(shipped) == keys(model)
    assert load_settings(DEFAULT_CONFIG, env={}).model_dump() == model


def test_defaults_and_environment_overrides(tmp_path: Path) -> None:
    cfg = load_settings(write(tmp_path, "{}"), env={})
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert cfg.api.listen == "127.0.0.1:8710"
    assert cfg.db_path == cfg.home_path / "corelane.duckdb"
    cfg = load_settings(write(tmp_path, "kafka: {partitions: 3}"), env={
        "CORELANE_KAFKA": "127.0.0.1:19092", "CORELANE_HOME": str(tmp_path / "home"),
        "CORELANE_DB": str(tmp_path / "x.duckdb"), "CORELANE_API": "127.0.0.1:18710"})
    assert cfg.kafka.bootstrap == "127.0.0.1:19092" and cfg.kafka.partitions == 3
    assert cfg.home_path == tmp_path / "home"
    assert cfg.db_path == tmp_path / "x.duckdb"
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 18710)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "host_id: rack7\n")
    assert load_settings(env={"CORELANE_CONFIG": str(path)}).host == "rack7"


@pytest.mark.parametrize("text, key, expected", [
    ("kafka: {partitons: 2}", "kafka.partitons", "unknown key"),
    ("kafka: {partitions: many}", "kafka.partitions", "expected a valid integer"),
    ("kafka: {partitions: 0}", "kafka.partitions", "greater than or equal to 1"),
    ("kafka: {compression: brotli}", "kafka.compression", "'zstd', 'lz4', 'gzip' or 'none'"),
    ("kafka: {bootstrap: 'nohostport'}", "kafka.bootstrap", "host:port"),
    ("collector: {interval_s: -1}", "collector.interval_s", "greater than 0"),
    ("api: {listen: '127.0.0.1:99999'}", "api.listen", "host:port"),
    ("collector: 5", "collector", "expected a mapping of settings, got 5"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path: Path, text: str, key: str,
                                                  expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert f"key '{key}'" in message
    assert expected in message
    assert "Traceback" not in message


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3"):
        load_settings(write(tmp_path, "kafka:\n  partitions: [1\n"), env={})
    with pytest.raises(ConfigError, match="top level"):
        load_settings(write(tmp_path, "- a\n- b\n"), env={})
    with pytest.raises(ConfigError, match="cannot read configuration file .*nowhere.yml"):
        load_settings(tmp_path / "nowhere.yml", env={})


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable CORELANE_API: key 'api.listen'"):
        load_settings(write(tmp_path, "{}"), env={"CORELANE_API": "not-an-address"})
