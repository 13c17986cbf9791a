"""The shipped systemd unit: it checks the configuration before starting, reloads on
SIGHUP, restores what corelane changed after a stop, and grants the capabilities placement
needs, no more."""
from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "corelane.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str                                   # type: ignore[assignment]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_starts_checked_reloads_on_hup_and_restores_on_stop() -> None:
    service = unit()["Service"]
    assert service["ExecStartPre"].endswith("corelane check")
    assert service["ExecStart"].endswith("corelane up")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStopPost"].endswith("corelane revert")
    assert service["KillSignal"] == "SIGTERM"
    # longer than the parts' own grace period, so a stop is never cut short by systemd
    assert int(service["TimeoutStopSec"]) > 15


def test_the_unit_grants_the_capabilities_placement_needs_and_no_others() -> None:
    service = unit()["Service"]
    granted = set(service["CapabilityBoundingSet"].split())
    assert granted == set(service["AmbientCapabilities"].split())
    assert {"CAP_SYS_NICE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN"} <= granted
    assert "CAP_SYS_ADMIN" not in granted
    assert service["NoNewPrivileges"] == "yes"
