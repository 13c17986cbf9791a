"""The agents' own logic, without a broker: what the allocator keeps of each host and plans
from it, and how the applier collects and filters plans. (Their faust wiring runs against a
real broker in the integration tests.)"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from agents.allocation import to_decisions
from agents.allocation.hosts import container_targets, decision_key, last_plans, scheduled_mode
from agents.allocator import AllocatorAgent
from agents.applier import ApplierAgent
from agents.enforcement.process import ApplyResult
from pipeline import commands
from pipeline import events as ev
from pipeline.bus import Publisher
from pipeline.settings import Settings, load_settings
from pipeline.topology import Topology, cpulist_parse, load_profile


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    cfg = load_settings(env={"CORELANE_HOME": str(tmp_path), "CORELANE_KAFKA": "127.0.0.1:1"})
    cfg.closed_loop.initial = "exclusive_poll"    # isolation, until a strategy event says else
    return cfg


def sample(pid: int, cpu: float = 0.0, container: str | None = None) -> ev.ProcessSample:
    return ev.ProcessSample(pid=pid, start_time=pid * 10, ppid=1, name=f"p{pid}",
                            cpu_share=cpu, container_id=container)


def sweep(host: str, samples: list[ev.ProcessSample], size: int) -> list[ev.Envelope]:
    parts = ev.batched(ev.ProcessSamples, samples, size, "samples")
    return [ev.envelope(part, host=host, seq=i) for i, part in enumerate(parts)]


def classes(host: str, *items: tuple[int, str, str]) -> ev.Envelope:
    return ev.envelope(ev.Classifications(batch="b", items=[
        ev.Classification(pid=pid, start_time=pid * 10, cls=cls, tier=tier, confidence=0.9,
                          source="rule") for pid, cls, tier in items]), host=host, seq=1)


def allocator(settings: Settings) -> AllocatorAgent:
    # A hybrid profile: P-cores for the critical tiers, E-cores for the rest; "h" is the
    # allocator's own host, so this topology stands in for it.
    settings.host_id = "h"
    topo = load_profile("apple-m4-max")
    return AllocatorAgent(settings, Publisher(settings), topo,
                          housekeeping_pids=lambda: {os.getpid()})


def test_a_sweep_counts_only_once_all_its_chunks_arrived(settings: Settings) -> None:
    agent = allocator(settings)
    first = sweep("h", [sample(p) for p in range(1, 8)], size=3)
    for part in first:
        agent.on_samples(part)
    assert set(p for p, _ in agent.view("h").samples) == set(range(1, 8))
    agent.on_classifications(classes("h", (2, "idle", "background")))
    second = sweep("h", [sample(p) for p in (1, 3)], size=1)
    agent.on_samples(second[0])
    assert len(agent.view("h").samples) == 7         # half a sweep says nothing of the gone
    agent.on_samples(second[1])
    assert set(p for p, _ in agent.view("h").samples) == {1, 3}
    assert (2, 20) not in agent.view("h").classes     # a gone process's class is dropped


def test_a_sweep_joined_in_its_middle_drops_no_class(settings: Settings) -> None:
    """A worker that takes a host over (or restarts) may first see a sweep's last chunk:
    the processes of the chunks it missed are not gone, and keep their classes."""
    agent = allocator(settings)
    agent.on_classifications(classes("h", (2, "idle", "background"),
                                      (6, "compute_batch", "low")))
    first = sweep("h", [sample(p) for p in range(1, 8)], size=3)
    agent.on_samples(first[-1])                       # pid 7 only: 1-6 went by
    assert {(2, 20), (6, 60)} <= agent.view("h").classes.keys()
    for part in sweep("h", [sample(p) for p in range(1, 8)], size=3):
        agent.on_samples(part)
    view = agent.view("h")
    assert set(p for p, _ in view.samples) == set(range(1, 8))
    assert (view.classes[(2, 20)].tier, view.classes[(6, 60)].tier) == ("background", "low")


def test_every_live_process_gets_a_decision_and_isolation_follows_tiers(
        settings: Settings) -> None:
    agent = allocator(settings)
    for part in sweep("h", [sample(1, 0.02), sample(2, 1.0), sample(3, 0.0)], size=10):
        agent.on_samples(part)
    assert agent.on_classifications(classes("h", (1, "latency_critical", "ultra_critical"),
                                                (2, "compute_batch", "low")))
    assert not agent.on_classifications(classes("h", (1, "latency_critical", "ultra_critical")))
    plan = agent.make_plan("h", now=0.0)
    assert plan is not None
    by_pid = {a.pid: a for a in plan.assignments if a.target == "process"}
    assert set(by_pid) == {1, 2, 3}
    assert by_pid[3].tier == "housekeeping"                 # unclassified: placed, not reniced
    assert by_pid[3].nice is None
    assert not set(by_pid[1].cpus) & set(by_pid[2].cpus)    # critical alone on its cores
    assert not set(by_pid[1].cpus) & set(by_pid[3].cpus)


def test_a_published_plan_counts_its_decisions_by_tier_and_target_and_its_pool_cores(
        settings: Settings) -> None:
    agent = allocator(settings)
    sent: list[ev.Envelope] = []

    async def publish_many(events: list[ev.Envelope]) -> None:
        sent.extend(events)

    agent.publisher.publish_many = publish_many  # type: ignore[method-assign]
    for part in sweep("h", [sample(1, 0.02), sample(2, 1.0), sample(3, 0.0)], size=10):
        agent.on_samples(part)
    agent.on_classifications(classes("h", (1, "latency_critical", "ultra_critical"),
                                      (2, "compute_batch", "low")))
    asyncio.run(agent.replan("h"))
    decisions = [d for e in sent for d in e.data.items]
    stats = agent.stats
    assert sum(stats.decisions_by_tier.values()) == stats.decisions == len(decisions) > 0
    assert stats.decisions_by_tier["ultra_critical"] == sum(
        d.tier == "ultra_critical" for d in decisions) >= 1
    assert stats.decisions_by_target["process"] == 3
    pools = {name: state["cpus"] for name, state in sent[0].data.pools.items()}
    # apple-m4-max has one CPU per core: a pool's cores are its CPUs
    assert stats.pool_cores == {name: len(cpulist_parse(cpus)) for name, cpus in pools.items()}
    assert stats.pool_cores["ultra_critical"] >= 1


def host_sample(host: str, topology: Topology | None) -> ev.Envelope:
    return ev.envelope(ev.HostSample(
        cpu_percent=[], cpu_freq_khz=[], load=(0.0, 0.0, 0.0), mem_total_bytes=1,
        mem_available_bytes=1, topology=topology.to_dict() if topology else None),
        host=host, seq=1)


def test_each_host_is_planned_on_its_own_topology(settings: Settings) -> None:
    agent = allocator(settings)
    for host in ("h", "remote"):
        for part in sweep(host, [sample(1, 0.02), sample(2, 1.0)], size=10):
            agent.on_samples(part)
        agent.on_classifications(classes(host, (1, "latency_critical", "ultra_critical"),
                                         (2, "compute_batch", "low")))
    local = agent.make_plan("h", now=0.0)
    assert local is not None and set(local.cpus_of("ultra_critical")) <= set(range(16))
    assert agent.make_plan("remote", now=0.0) is None      # no topology of its own yet
    agent.on_host_sample(host_sample("remote", None))
    assert agent.make_plan("remote", now=0.0) is None      # a sample without one
    two = Topology.from_dict(load_profile("apple-m4-max").to_dict() | {"cpus": [
        c.to_dict() for c in load_profile("apple-m4-max").cpus[:2]]})
    agent.on_host_sample(host_sample("remote", two))
    remote = agent.make_plan("remote", now=0.0)
    assert remote is not None and remote.seq == 1
    used = {c for a in remote.assignments for c in a.cpus}
    assert used and used <= {0, 1}
    # The local host's own topology replaces the stand-in, and the sequence goes on.
    agent.on_host_sample(host_sample("h", two))
    again = agent.make_plan("h", now=0.0)
    assert again.seq == local.seq + 1
    assert {c for a in again.assignments for c in a.cpus} <= {0, 1}


def test_containers_take_their_most_protected_process_tier(settings: Settings) -> None:
    agent = allocator(settings)
    cid = "c" * 64
    for part in sweep("h", [sample(1, container=cid), sample(2, container=cid)], size=10):
        agent.on_samples(part)
    agent.on_containers(ev.envelope(ev.ContainerSamples(batch="c", samples=[
        ev.ContainerSample(id=cid, name="db"), ev.ContainerSample(id="d" * 64, name="idle")]),
        host="h", seq=1))
    agent.on_classifications(classes("h", (1, "background", "background"),
                                     (2, "realtime_stream", "critical")))
    targets = {t.container_id: t.tier for t in container_targets(agent.view("h"))}
    assert targets == {cid: "critical", "d" * 64: "housekeeping"}
    plan = agent.make_plan("h", now=0.0)
    assert {a.container_id for a in plan.assignments if a.target == "container"} == set(targets)


def test_a_container_priority_command_holds_until_auto(settings: Settings) -> None:
    agent = allocator(settings)
    cid = "c" * 64
    for part in sweep("h", [sample(1, container=cid)], size=10):
        agent.on_samples(part)
    agent.on_containers(ev.envelope(ev.ContainerSamples(batch="c", samples=[
        ev.ContainerSample(id=cid, name="db")]), host="h", seq=1))
    agent.on_classifications(classes("h", (1, "background", "background")))
    tier = lambda: {t.container_id: t.tier for t in container_targets(agent.view("h"))}[cid]
    assert tier() == "background"
    # A short id, as `docker ps` shows it, names the container it begins.
    assert agent.on_command(ev.envelope(commands.container_priority(cid[:12], "critical", "h"),
                                        "ops", 1)) == []
    assert tier() == "critical"
    agent.on_command(ev.envelope(commands.container_priority(cid, "auto", "h"), "ops", 2))
    assert tier() == "background"


def test_rebalance_names_the_hosts_to_plan_now(settings: Settings) -> None:
    agent = allocator(settings)
    agent.view("a"), agent.view("b")
    assert agent.on_command(ev.envelope(commands.rebalance(), "ops", 1)) == ["a", "b"]
    assert agent.on_command(ev.envelope(commands.rebalance(["b"]), "ops", 2)) == ["b"]
    assert agent.on_command(ev.envelope(commands.mode("emergency"), "ops", 3)) == []


def test_mode_from_command_then_schedule_then_config(settings: Settings) -> None:
    settings.allocator = settings.allocator.model_validate({"schedule": [
        {"mode": "high_performance", "start": "08:30", "end": "17:30",
         "days": ["mon", "tue", "wed", "thu", "fri"]},
        {"mode": "power_save", "start": "22:00", "end": "06:00"}]})
    monday = datetime(2026, 11, 23)
    assert scheduled_mode(settings, monday.replace(hour=9)) == "high_performance"
    assert scheduled_mode(settings, monday.replace(hour=17, minute=30)) is None
    assert scheduled_mode(settings, monday.replace(hour=23)) == "power_save"   # wraps midnight
    assert scheduled_mode(settings, monday.replace(hour=5)) == "power_save"
    assert scheduled_mode(settings, datetime(2026, 11, 28, 9)) is None        # a Saturday
    agent = allocator(settings)
    saturday_noon = datetime(2026, 11, 28, 12).timestamp()
    assert agent.mode_for("h", saturday_noon) == "balanced"
    agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "emergency",
                                                               "hosts": ["h"]}), "ops", 1))
    assert agent.mode_for("h", saturday_noon) == "emergency"
    monday_nine = datetime(2026, 11, 23, 9).timestamp()
    assert agent.mode_for("h", monday_nine) == "emergency"     # the operator's word wins
    agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "turbo"}), "ops", 2))
    assert agent.mode_for("h", monday_nine) == "emergency"     # an unknown mode is ignored
    agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "auto"}), "ops", 3))
    assert agent.mode_for("h", monday_nine) == "high_performance"
    assert agent.mode_for("h", saturday_noon) == "balanced"
    # A command for every host holds for hosts not seen yet too.
    agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "power_save"}), "ops", 4))
    assert agent.mode_for("new-host", saturday_noon) == "power_save"


def test_decision_key_ignores_reasons() -> None:
    a = ev.Decision(target="process", tier="low", cpus="0", pid=1, start_time=2, nice=10,
                    reason="demand 0.91 cores")
    b = ev.Decision(target="process", tier="low", cpus="0", pid=1, start_time=2, nice=10,
                    reason="demand 0.97 cores")
    assert decision_key([a]) == decision_key([b])
    assert decision_key([a]) != decision_key([ev.Decision(**{**ev.to_builtins(a), "cpus": "1"})])


def applier(settings: Settings, dry_run: bool = False) -> ApplierAgent:
    return ApplierAgent(settings, Publisher(settings), own_pids=lambda: {os.getpid()},
                        dry_run=dry_run)


def plan_events(host: str, plan_seq: int, decisions: list[ev.Decision], size: int,
                ts: float | None = None, mode: str = "balanced") -> list[ev.Envelope]:
    parts = ev.batched(ev.Decisions, decisions, size, "items", plan_seq=plan_seq, mode=mode)
    return [ev.envelope(p, host=host, seq=i, ts=ts) for i, p in enumerate(parts)]


def test_applier_takes_whole_plans_of_its_own_host_only(settings: Settings) -> None:
    agent = applier(settings)
    mine = [ev.Decision(target="process", tier="low", cpus="0", pid=p, start_time=p)
            for p in range(5)]
    assert all(agent.on_decisions(e) is None
               for e in plan_events("another-host", 1, mine, size=10))
    parts = plan_events(settings.host, 2, mine, size=2)
    assert [agent.on_decisions(e) for e in parts[:-1]] == [None, None]
    assert agent.on_decisions(parts[-1]) == mine
    # an older plan, published before the one applied, arriving late
    late = plan_events(settings.host, 1, mine[:1], size=10, ts=time.time() - 60)
    assert agent.on_decisions(late[0]) is None and agent.stats.dropped == 1
    # a plan numbered lower but published later (an allocator that lost count) is news
    newer = plan_events(settings.host, 1, mine[:2], size=10, ts=time.time() + 1)
    assert agent.on_decisions(newer[0]) == mine[:2]
    agent.close()


def test_plans_go_on_being_numbered_from_the_previous_run(settings: Settings) -> None:
    first = allocator(settings)
    for part in sweep("h", [sample(1, 0.02), sample(2, 1.0)], size=10):
        first.on_samples(part)
    first.on_classifications(classes("h", (1, "latency_critical", "ultra_critical"),
                                     (2, "compute_batch", "low")))
    for _ in range(3):
        last = first.make_plan("h", now=0.0)
    assert last is not None and last.seq == 3
    # What the previous run published, read back in chunks (and a stale plan of another
    # host and an older plan of this one around it).
    published = (plan_events("h", 2, to_decisions(last), size=10, ts=90.0)
                 + plan_events("h", 3, to_decisions(last), size=2, ts=100.0, mode=last.mode)
                 + plan_events("other", 9, to_decisions(last), size=10, ts=95.0))
    plans = last_plans(published)
    assert {h: p.plan_seq for h, p in plans.items()} == {"h": 3, "other": 9}
    assert plans["h"].items == to_decisions(last)

    second = allocator(settings)
    second.restore(plans)
    for part in sweep("h", [sample(1, 0.02), sample(2, 1.0)], size=10):
        second.on_samples(part)
    second.on_classifications(classes("h", (1, "latency_critical", "ultra_critical"),
                                      (2, "compute_batch", "low")))
    resumed = second.make_plan("h", now=0.0)
    assert resumed is not None and resumed.seq == 4            # not 1: the numbering goes on
    # and the placement holds: the same cores for the same processes
    assert {(a.pid, a.cpus) for a in resumed.assignments} == \
        {(a.pid, a.cpus) for a in last.assignments}


def test_dry_run_reports_what_would_change_and_changes_nothing(settings: Settings) -> None:
    agent = applier(settings, dry_run=True)
    pid = os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        start = int(f.read().rsplit(b")", 1)[1].split()[19])
    before = os.sched_getaffinity(0), os.getpriority(os.PRIO_PROCESS, 0)
    (result,) = agent.apply_plan([ev.Decision(target="process", tier="low", cpus="0",
                                              pid=pid, start_time=start, nice=10)])
    assert (result.outcome, result.reason) == ("skipped", "dry run")
    assert agent.stats.outcomes == {"skipped": 1}
    assert result.after["nice"] == 10 and result.after["cpus"] == "0"
    assert (os.sched_getaffinity(0), os.getpriority(os.PRIO_PROCESS, 0)) == before
    assert not list(agent.journal.entries())                      # nothing to undo
    agent.close()


def test_the_applier_applies_what_changed_and_everything_every_reassert_s(
        settings: Settings) -> None:
    agent = applier(settings, dry_run=True)
    pid = os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        start = int(f.read().rsplit(b")", 1)[1].split()[19])
    mine = ev.Decision(target="process", tier="low", cpus="0", pid=pid, start_time=start,
                       nice=10, reason="demand 0.9")
    assert len(agent.apply_plan([mine])) == 1                     # the first plan: all of it
    same = ev.Decision(**{**ev.to_builtins(mine), "reason": "demand 0.8"})
    assert agent.apply_plan([same]) == [] and agent.stats.unchanged == 1
    moved = ev.Decision(**{**ev.to_builtins(mine), "cpus": "1"})
    assert len(agent.apply_plan([moved])) == 1                    # a change is applied at once
    agent.settings.applier.reassert_s = 0                         # a full pass is due
    assert len(agent.apply_plan([moved])) == 1
    agent.close()


def test_a_reset_made_while_others_are_being_published_is_published_too(
        settings: Settings) -> None:
    agent = applier(settings)
    published: list[list[int | None]] = []
    releasing = asyncio.Event()

    async def slow_publish(plan: ev.Decisions, results: list[ApplyResult]) -> None:
        await releasing.wait()                   # the broker is slow to acknowledge
        published.append([r.pid for r in results])

    agent._publish = slow_publish  # type: ignore[method-assign]

    def reset(pid: int) -> ApplyResult:
        return ApplyResult("process", "applied", "child of 1", pid=pid, start_time=pid)

    async def scenario() -> None:
        agent._report_reset(reset(10))
        agent._report_reset(reset(11))
        await asyncio.sleep(0.01)                # the first batch is on its way
        agent._report_reset(reset(12))           # and this one comes meanwhile
        releasing.set()
        await asyncio.wait_for(agent._flushing, 5)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert published == [[10, 11], [12]]
    agent.close()


def demoted_parent(agent: ApplierAgent) -> int:
    """This test process, as a parent the agent demoted (its pid)."""
    from agents.enforcement.journal import Identity, JournalEntry
    from pipeline import procfs
    me = os.getpid()
    stat = procfs.read_stat("/proc", me)
    assert stat is not None
    agent._demoted = {me: JournalEntry(Identity.process(me, stat.start_time), {"nice": 0},
                                       applied={"nice": 19})}
    return me


def test_a_child_caught_between_fork_and_exec_is_reset_at_its_exec(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.applier as applier_module
    from pipeline.collectors.proc_events import ProcEvent

    agent = applier(settings)
    me = demoted_parent(agent)
    # the child's command line is empty mid-exec, so the scope refuses it; after its
    # exec it matches
    answers = [ApplyResult("process", "skipped", "out of scope", pid=4242),
               ApplyResult("process", "applied", "child of 1", pid=4242)]
    asked: list[int] = []

    def fake_reset(journal, pid, parent, shared, **kw):  # type: ignore[no-untyped-def]
        asked.append(pid)
        return answers.pop(0)

    monkeypatch.setattr(applier_module, "reset_child", fake_reset)
    published: list[list[int | None]] = []

    async def publish(plan: ev.Decisions, results: list[ApplyResult]) -> None:
        published.append([r.pid for r in results])

    agent._publish = publish  # type: ignore[method-assign]

    async def scenario() -> None:
        agent.on_proc_events([ProcEvent("fork", 4242, me, time.monotonic_ns())])
        assert published == [] and 4242 in agent._pending
        agent.on_proc_events([ProcEvent("exec", 4242, None, time.monotonic_ns())])
        await asyncio.wait_for(agent._flushing, 5)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert asked == [4242, 4242] and published == [[4242]] and not agent._pending
    agent.close()


def test_a_deferred_reset_without_an_exec_is_tried_with_the_next_plans_then_settled(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.applier as applier_module

    agent = applier(settings)
    me = demoted_parent(agent)
    monkeypatch.setattr(applier_module, "reset_child", lambda *a, **kw: ApplyResult(
        "process", "skipped", "out of scope", pid=4242))
    agent._pending = {4242: (me, time.monotonic())}
    agent._retry_pending()
    assert 4242 in agent._pending                 # still young: tried again next plan
    agent._pending = {4242: (me, time.monotonic() - applier_module.PENDING_RESET_S)}
    agent._retry_pending()
    assert not agent._pending                     # settled: out of scope it stays
    agent.close()


def test_a_dry_run_reports_the_tier_groups_and_the_moves_it_would_make(
        settings: Settings) -> None:
    from pipeline import procfs

    agent = applier(settings, dry_run=True)
    me = os.getpid()
    stat = procfs.read_stat("/proc", me)
    assert stat is not None
    results = agent.apply_plan([
        ev.Decision(target="process", tier="low", cpus="0", pid=me, start_time=stat.start_time,
                    nice=10, cgroup="low"),
        ev.Decision(target="cgroup", tier="low", cpus="0", cgroup="low", cpu_weight=50,
                    cpu_quota_us=50_000)])
    group = next(r for r in results if r.target == "cgroup")
    assert (group.outcome, group.reason) == ("skipped", "dry run")
    assert group.after["path"] == "/corelane/low" and group.after["cpu_quota_us"] == 50_000
    # One result for the process, its nice and its move together: one row in the history,
    # which the decision it answers joins once.
    processes = [r for r in results if r.target == "process"]
    assert len(processes) == 1, processes
    assert processes[0].after["cgroups"] == {"cpu": "/corelane/low"}
    assert processes[0].after["nice"] == 10
    assert not agent.journal.entries()                  # nothing written, nothing journalled
    agent.close()


def test_memory_pressure_holds_a_host_in_emergency_with_hysteresis(settings: Settings) -> None:
    settings.allocator = settings.allocator.model_validate({"memory_pressure_emergency": 20.0})
    agent = allocator(settings)
    noon = datetime(2026, 11, 28, 12).timestamp()

    def pressure(full: float | None) -> None:
        figures = {} if full is None else {"memory_some": full * 2, "memory_full": full}
        agent.on_host_sample(ev.envelope(ev.HostSample(
            cpu_percent=[0.0], cpu_freq_khz=[None], load=(0.0, 0.0, 0.0), mem_total_bytes=1,
            mem_available_bytes=1, pressure=figures), "h", 1))

    pressure(5.0)
    assert agent.mode_for("h", noon) == "balanced"
    pressure(25.0)
    assert agent.mode_for("h", noon) == "emergency"
    pressure(12.0)                                  # above half the threshold: still held
    assert agent.mode_for("h", noon) == "emergency"
    pressure(None)                                  # a sample without PSI changes nothing
    assert agent.mode_for("h", noon) == "emergency"
    pressure(9.0)
    assert agent.mode_for("h", noon) == "balanced"
    # an operator's command outranks it
    pressure(50.0)
    agent.on_command(ev.envelope(ev.Command(name="mode", args={"mode": "high_performance",
                                                               "hosts": ["h"]}), "ops", 1))
    assert agent.mode_for("h", noon) == "high_performance"
    # and without the setting, pressure decides nothing
    settings.allocator = settings.allocator.model_validate({})
    quiet = allocator(settings)
    quiet.on_host_sample(ev.envelope(ev.HostSample(
        cpu_percent=[0.0], cpu_freq_khz=[None], load=(0.0, 0.0, 0.0), mem_total_bytes=1,
        mem_available_bytes=1, pressure={"memory_full": 90.0}), "h", 1))
    assert quiet.mode_for("h", noon) == "balanced"


def test_a_pause_holds_every_change_until_resume_applies_the_newest_plan(
        settings: Settings) -> None:
    agent = applier(settings)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            start = int(f.read().rsplit(b")", 1)[1].split()[19])
        published: list[tuple[int, int]] = []

        async def publish(plan: ev.Decisions, results: list[ApplyResult]) -> None:
            published.append((plan.plan_seq, len(results)))

        agent._publish = publish  # type: ignore[method-assign]
        settings.host_id = "h"

        def told(seq: int, nice: int) -> ev.Envelope:
            return plan_events("h", seq, [ev.Decision(target="process", tier="low", cpus="0-1",
                                                      pid=child.pid, start_time=start,
                                                      nice=nice)], 10)[0]

        async def scenario() -> None:
            other = ev.envelope(commands.pause(["elsewhere"]), "ops", 1)
            await agent._command(other, None)              # type: ignore[arg-type]
            assert agent.paused_since is None, "a pause for another host"
            await agent._command(ev.envelope(commands.pause(), "ops", 2), None)  # type: ignore[arg-type]
            await agent._decisions(told(1, 5), None)       # type: ignore[arg-type]
            await agent._decisions(told(2, 7), None)       # type: ignore[arg-type]
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0, "paused: nothing changes"
            assert published == [(1, 0), (2, 0)], "each plan is still answered"
            health = agent.health(time.time())
            assert health.state == "degraded" and "paused" in health.reason
            await agent._command(ev.envelope(commands.resume(["h"]), "ops", 3), None)  # type: ignore[arg-type]
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 7, "the newest plan, at once"
            assert published[-1] == (2, 1)
            assert agent.health(time.time()).state == "ok"

        asyncio.run(scenario())
        assert agent.stats.held_plans == 2
    finally:
        agent.close()                                      # puts the child's nice back
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
        child.kill()
        child.wait()
