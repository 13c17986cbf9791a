"""Temperatures read through the sysfs root seam and placed on the CPUs they measure, and
the allocator's thermal policy on a simulated tree: batch work leaves hot cores, or the
host steps down to power_save, with hysteresis, in its place among the modes' sources."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from agents.allocator import AllocatorAgent
from pipeline import events as ev
from pipeline.bus import Publisher
from pipeline.collectors.host import HostSampler
from pipeline.hostpaths import HostPaths
from pipeline.settings import ConfigError, Settings, load_settings, parse_settings
from pipeline.thermal import cpu_temperatures, read_sensors
from pipeline.topology import Cpu, Topology
from support.thermal_tree import write_coretemp, write_zone


def two_sockets() -> Topology:
    """Two packages of two cores with SMT; core_id restarts at 0 in each package, as the
    kernel numbers them."""
    cpus = []
    for cpu in range(8):
        package, core_id = divmod(cpu % 4, 2)
        cpus.append(Cpu(cpu=cpu, core=cpu % 4, package=package, core_id=core_id,
                        smt_siblings=((cpu + 4) % 8,)))
    return Topology(cpus=tuple(cpus))


def test_a_host_without_sensors_reads_none(tmp_path: Path) -> None:
    assert read_sensors(tmp_path) == []
    assert cpu_temperatures([], two_sockets()) == [None] * 8


def test_coretemp_places_each_core_and_package(tmp_path: Path) -> None:
    write_coretemp(tmp_path, {0: 70.0, 1: 55.0},
                   {(0, 0): 50.0, (0, 1): 96.5, (1, 0): 52.0})
    sensors = read_sensors(tmp_path)
    assert {s.key: s.celsius for s in sensors} == {
        "coretemp.0/Package id 0": 70.0, "coretemp.0/Core 0": 50.0, "coretemp.0/Core 1": 96.5,
        "coretemp.1/Package id 1": 55.0, "coretemp.1/Core 0": 52.0}
    temps = cpu_temperatures(sensors, two_sockets())
    # cpu 1 and its sibling 5 are package 0's core 1; package 1's core 1 has no sensor of
    # its own, so cpus 3 and 7 read their package's figure
    assert temps == [50.0, 96.5, 52.0, 55.0, 50.0, 96.5, 52.0, 55.0]


def test_cpu_wide_zones_stand_in_where_no_chip_says_more(tmp_path: Path) -> None:
    write_zone(tmp_path, 0, "cpu-thermal", 61.0)
    write_zone(tmp_path, 1, "battery", 35.0)
    write_zone(tmp_path, 2, "soc_thermal", 64.0)
    temps = cpu_temperatures(read_sensors(tmp_path), two_sockets())
    assert temps == [64.0] * 8, "the hottest CPU-wide zone, never the battery"


def test_error_codes_and_unreadable_files_are_not_temperatures(tmp_path: Path) -> None:
    write_zone(tmp_path, 0, "cpu-thermal", 61.0)
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("-274000\n")
    write_zone(tmp_path, 1, "x86_pkg_temp", 58.0)
    (tmp_path / "sys/class/thermal/thermal_zone2").mkdir()
    assert [(s.label, s.celsius) for s in read_sensors(tmp_path)] == [("x86_pkg_temp", 58.0)]


# --- the thermal policy, on a simulated tree read by the host sampler ----------------------

NOON = datetime(2026, 11, 28, 12).timestamp()      # a Saturday: no schedule entry covers it


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    cfg = load_settings(env={"CORELANE_HOME": str(tmp_path), "CORELANE_KAFKA": "127.0.0.1:1"})
    cfg.host_id = "h"
    cfg.closed_loop.initial = "exclusive_poll"
    return cfg


class Host:
    """A two-socket host whose sensors a test heats and cools, sampled by the real host
    sampler and planned by the real allocator."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.root, self.topology = root, two_sockets()
        self.sampler = HostSampler(HostPaths(sys_root=str(root)), topology=self.topology)
        self.agent = AllocatorAgent(settings, Publisher(settings), self.topology,
                                    housekeeping_pids=lambda: {os.getpid()})
        samples = [ev.ProcessSample(pid=p, start_time=p * 10, ppid=1, name=f"p{p}",
                                    cpu_share=share) for p, share in ((1, 0.1), (2, 1.0))]
        self.agent.on_samples(ev.envelope(ev.ProcessSamples(batch="s", samples=samples), "h", 1))
        self.agent.on_classifications(ev.envelope(ev.Classifications(batch="c", items=[
            ev.Classification(pid=1, start_time=10, cls="latency_critical",
                              tier="ultra_critical", confidence=0.9, source="rule"),
            ev.Classification(pid=2, start_time=20, cls="compute_batch", tier="low",
                              confidence=0.9, source="rule")]), "h", 1))
        self.seq = 0

    def heat(self, cores: dict[tuple[int, int], float],
             pressure: dict[str, float] | None = None) -> None:
        write_coretemp(self.root, {0: 60.0, 1: 60.0},
                       {(p, c): cores.get((p, c), 50.0) for p in (0, 1) for c in (0, 1)})
        self.seq += 1
        sample = self.sampler.sample()
        self.agent.on_host_sample(ev.envelope(msgspec.structs.replace(
            sample, cpu_percent=[0.0] * 8, cpu_freq_khz=[None] * 8,
            pressure=pressure or {}), "h", self.seq))

    def low(self):
        plan = self.agent.make_plan("h", NOON)
        return plan, next(a for a in plan.assignments if a.pid == 2)


def test_batch_work_leaves_a_hot_core_until_it_has_cooled(settings: Settings,
                                                          tmp_path: Path) -> None:
    host = Host(settings, tmp_path)
    host.heat({})
    _, batch = host.low()
    cool_cpus = set(batch.cpus)
    assert "hot" not in batch.reason
    hot_cpu = min(cool_cpus)
    where = (host.topology.cpu(hot_cpu).package, host.topology.cpu(hot_cpu).core_id)
    siblings = {c for c in cool_cpus if (host.topology.cpu(c).package,
                                         host.topology.cpu(c).core_id) == where}

    host.heat({where: 95.0})
    assert host.sampler.sample().cpu_temperatures_c[hot_cpu] == 95.0
    plan, batch = host.low()
    assert set(batch.cpus) == cool_cpus - siblings, "off the hot core, its SMT sibling too"
    assert f"off hot cpu {hot_cpu} at 95 °C" in batch.reason
    assert plan.mode == "balanced"
    critical = next(a for a in plan.assignments if a.pid == 1)
    assert "hot" not in critical.reason, "only the batch tiers move"

    host.heat({where: 85.0})                      # cooler, not yet below cool_c: still hot
    assert set(host.low()[1].cpus) == cool_cpus - siblings
    host.heat({where: 70.0})
    assert set(host.low()[1].cpus) == cool_cpus
    assert "hot" not in host.low()[1].reason


def test_power_save_until_cool_below_a_command_above_pressure_and_the_schedule(
        settings: Settings, tmp_path: Path) -> None:
    settings.allocator = settings.allocator.model_validate({
        "thermal": {"hot_c": 90, "cool_c": 80, "action": "power_save"},
        "memory_pressure_emergency": 20.0,
        "schedule": [{"mode": "high_performance", "start": "00:00", "end": "23:59"}]})
    host = Host(settings, tmp_path)
    host.heat({})
    assert host.agent.mode_and_reason("h", NOON) == ("high_performance", "by schedule")
    host.heat({(1, 1): 97.0})
    mode, why = host.agent.mode_and_reason("h", NOON)
    assert mode == "power_save" and "thermal: cpu 3 at 97 °C, cpu 7 at 97 °C" == why
    plan, batch = host.low()
    assert plan.mode == "power_save"
    assert "mode power_save: thermal: cpu 3 at 97 °C" in batch.reason
    assert "off hot cpu" not in batch.reason      # power_save, not move

    # memory pressure ranks below thermal protection, above the schedule
    host.heat({(1, 1): 97.0}, pressure={"memory_full": 50.0})
    assert host.agent.mode_for("h", NOON) == "power_save"
    # an operator's command outranks everything
    host.agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "balanced",
                                                                    "hosts": ["h"]}), "ops", 1))
    assert host.agent.mode_and_reason("h", NOON) == ("balanced", "by command")
    host.agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "auto"}), "ops", 2))
    assert host.agent.mode_for("h", NOON) == "power_save"
    host.heat({(1, 1): 85.0}, pressure={"memory_full": 50.0})
    assert host.agent.mode_for("h", NOON) == "power_save", "hot until below cool_c"
    host.heat({(1, 1): 75.0}, pressure={"memory_full": 50.0})
    assert host.agent.mode_and_reason("h", NOON) == ("emergency", "memory pressure")


def test_thermal_settings_refuse_a_cool_point_above_the_hot_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"allocator\.thermal\.cool_c.*below hot_c"):
        parse_settings("allocator: {thermal: {hot_c: 70, cool_c: 75}}", "c.yml", env={})
