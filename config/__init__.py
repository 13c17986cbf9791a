"""Shipped configuration: default.yml, topology profiles and example rule sets."""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "default.yml"
PROFILES_DIR = CONFIG_DIR / "profiles"
