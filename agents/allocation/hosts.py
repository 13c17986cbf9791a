"""What the allocator knows of each host, and the plans made from it: pure, time passed in.

``Planner`` folds the allocator's input events (samples, classifications, container and host
samples, commands, strategy choices) into one ``HostView`` per host and makes a host's plan
on demand. The allocator agent publishes what it makes; a replay feeds it recorded events
and compares what it makes with what was recorded. Nothing here reads a clock, a topic or
a file.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import msgspec

from agents.allocation.plan import (ContainerTarget, Plan, ProcessTarget, Utilization, action,
                                    describe_hot, plan, plan_from_decisions, process_targets)
from pipeline import commands
from pipeline.events import (Chunks, Classification, Command, ContainerSample, Decision,
                             Decisions, Envelope, HostSample, ProcessSample,
                             ProcessSamples, joined)
from pipeline.settings import Settings
from pipeline.topology import Topology
from pipeline.vocabulary import (AUTO, DAYS, EMERGENCY, HOUSEKEEPING, MODES, POWER_SAVE,
                                 TIER_RANK)

log = logging.getLogger(__name__)


@dataclass
class HostView:
    """What the allocator knows of one host: the newest of each input."""
    classes: dict[tuple[int, int], Classification] = field(default_factory=dict)
    samples: dict[tuple[int, int], ProcessSample] = field(default_factory=dict)
    # a sweep's chunks until the last: only a whole sweep says which processes are gone (a
    # sweep joined in its middle, at a take-over or a restart, never completes)
    sweeps: Chunks[ProcessSamples] = field(default_factory=lambda: Chunks(keep=2))
    containers: dict[str, ContainerSample] = field(default_factory=dict)
    host_sample: HostSample | None = None
    topology: Topology | None = None
    commanded_mode: str | None = None
    previous: Plan | None = None
    planned_with: Topology | None = None     # the topology ``previous`` was made for
    restored: Decisions | None = None        # the last plan of a previous run, until used
    strategy: str | None = None              # the closed loop's newest word for this host
    container_tiers: dict[str, str] = field(default_factory=dict)   # set by command
    published: tuple | None = None           # (mode, decision_key) of the last plan sent
    published_at: float = 0.0
    pressed: bool = False                    # held in emergency by memory pressure
    hot: dict[int, float] = field(default_factory=dict)   # cpu -> °C, held hot (thermal)


def scheduled_mode(settings: Settings, now: datetime) -> str | None:
    """The mode of the first schedule entry covering ``now`` (local time), if any."""
    day = DAYS[now.weekday()]
    clock = now.strftime("%H:%M")
    for entry in settings.allocator.schedule:
        if day not in entry.days:
            continue
        inside = (entry.start <= clock < entry.end) if entry.start <= entry.end \
            else (clock >= entry.start or clock < entry.end)  # a span across midnight
        if inside:
            return entry.mode
    return None


def container_targets(view: HostView) -> list[ContainerTarget]:
    """Each container at the tier an operator gave it, else at the most protected tier among
    its processes' classes (housekeeping while none of them is classified): a container
    holds one service, and its cpuset must suit the part of it that needs the most."""
    tiers: dict[str, str] = {}
    for key, sample in view.samples.items():
        c = view.classes.get(key)
        if sample.container_id and c is not None and c.tier in TIER_RANK:
            old = tiers.get(sample.container_id)
            if old is None or TIER_RANK[c.tier] < TIER_RANK[old]:
                tiers[sample.container_id] = c.tier
    tiers.update((cid, tier) for cid, tier in view.container_tiers.items()
                 if cid in view.containers)
    return [ContainerTarget(container_id=cid, tier=tiers.get(cid, HOUSEKEEPING),
                            cpu_share=c.cpu_share, name=c.name)
            for cid, c in sorted(view.containers.items())]


def decision_key(decisions: Iterable[Decision]) -> tuple:
    """What the applier acts on in a plan (see ``action``)."""
    return tuple(action(d) for d in decisions)


def last_plans(events: Iterable[Envelope]) -> dict[str, Decisions]:
    """Each host's newest whole plan among decisions events (chunks joined in order)."""
    chunks: Chunks[Decisions] = Chunks(keep=1 << 30)   # a finite tail: every batch waits
    newest: dict[str, tuple[float, Decisions]] = {}
    for event in events:
        data: Decisions = event.data
        parts = chunks.add(data)
        if parts is None:
            continue
        whole = msgspec.structs.replace(data, chunk=0, chunks=1, items=joined(parts, "items"))
        old = newest.get(event.host)
        if old is None or (data.plan_seq, event.ts) >= (old[1].plan_seq, old[0]):
            newest[event.host] = (event.ts, whole)
    return {host: plan for host, (_, plan) in newest.items()}


class Planner:
    """Each host's view and plans. ``topology`` stands in for ``local_host`` until that host
    sends its own; another host waits for its own (a plan for the wrong CPUs is worse than
    none)."""

    def __init__(self, settings: Settings, topology: Topology, local_host: str,
                 housekeeping_pids: Callable[[], Iterable[int]]) -> None:
        self.settings = settings
        self.topology = topology
        self.local_host = local_host
        self.housekeeping_pids = housekeeping_pids
        self.hosts: dict[str, HostView] = {}
        self.commanded_mode: str | None = None    # by a command for every host
        self.plans_made = 0
        self.restored = 0                          # hosts whose numbering went on

    def view(self, host: str) -> HostView:
        return self.hosts.setdefault(host, HostView())

    def on_classifications(self, event: Envelope) -> bool:
        """Returns whether any class or tier changed (a reason to plan at once)."""
        return self.take_classes(event.host, event.data.items)

    def take_classes(self, host: str, items: Iterable[Classification]) -> bool:
        """Classes judged for ``host`` (by a classifier beside this planner, or recorded);
        returns whether any class or tier changed."""
        view = self.view(host)
        changed = False
        for c in items:
            key = (c.pid, c.start_time)
            old = view.classes.get(key)
            changed |= old is None or (old.cls, old.tier) != (c.cls, c.tier)
            view.classes[key] = c
        return changed

    def on_samples(self, event: Envelope) -> None:
        # A sweep arrives in chunks; only a whole sweep says which processes are gone.
        view = self.view(event.host)
        data = event.data
        if data.partial:
            view.samples.update(((s.pid, s.start_time), s) for s in data.samples)
            return
        parts = view.sweeps.add(data)
        if parts is None:
            return
        view.samples = {(s.pid, s.start_time): s for s in joined(parts, "samples")}
        live = view.samples.keys()
        view.classes = {k: c for k, c in view.classes.items() if k in live}

    def on_containers(self, event: Envelope) -> None:
        view = self.view(event.host)
        data = event.data
        if data.chunk == 0:
            view.containers = {}
        view.containers.update((c.id, c) for c in data.samples)

    def on_host_sample(self, event: Envelope) -> None:
        view = self.view(event.host)
        sample: HostSample = event.data
        view.host_sample = sample
        self._note_pressure(event.host, view)
        if sample.topology is not None:
            try:
                view.topology = Topology.from_dict(sample.topology)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("host %s sent a topology that cannot be read (%s); keeping the "
                            "last one", event.host, exc)
        self._note_heat(event.host, view)

    def topology_for(self, host: str) -> Topology | None:
        """The host's own topology, else this host's for this host, else None (wait)."""
        view = self.view(host)
        if view.topology is not None:
            return view.topology
        return self.topology if host == self.local_host else None

    def on_command(self, event: Envelope) -> list[str]:
        """Take a command; returns the hosts to plan now and publish whatever the plan."""
        command: Command = event.data
        if command.name == commands.REBALANCE:
            return list(command.args.get("hosts") or self.hosts)
        if command.name == commands.CONTAINER_PRIORITY:
            self._container_priority(event)
            return []
        if command.name == commands.MODE:
            self._mode(event)
        return []

    def _container_priority(self, event: Envelope) -> None:
        args = event.data.args
        cid, tier, host = args.get("container_id"), args.get("tier"), args.get("host")
        if not isinstance(cid, str) or not isinstance(host, str) or (
                tier != AUTO and tier not in TIER_RANK):
            log.warning("command %s: a container priority needs a container id, a host and "
                        "a tier (or 'auto'); ignored", event.id)
            return
        view = self.view(host)
        # A short id (as `docker ps` shows it) names the container whose full id it begins.
        full = next((c for c in view.containers if c.startswith(cid)), cid)
        if tier == AUTO:
            view.container_tiers.pop(full, None)
        else:
            view.container_tiers[full] = tier
        log.info("container %s on %s: tier %s by command %s", full[:12], host, tier, event.id)

    def _mode(self, event: Envelope) -> None:
        command: Command = event.data
        mode = command.args.get("mode")
        if mode != AUTO and mode not in MODES:
            log.warning("command %s asks for unknown mode %r; ignored", event.id, mode)
            return
        wanted = None if mode == AUTO else mode
        hosts = command.args.get("hosts")
        if hosts:
            for host in hosts:
                self.view(host).commanded_mode = wanted
        else:
            # Every host, those not seen yet included; it supersedes per-host commands.
            self.commanded_mode = wanted
            for view in self.hosts.values():
                view.commanded_mode = None
        log.info("mode %s for %s by command %s", mode, ", ".join(hosts or ["every host"]),
                 event.id)

    def on_strategy(self, event: Envelope) -> None:
        """The closed loop of a host chose how its critical tiers are kept quiet."""
        if self.settings.closed_loop.enabled:
            self.view(event.host).strategy = event.data.strategy

    def strategy_for(self, host: str) -> str:
        return self.view(host).strategy or self.settings.closed_loop.initial

    def restore(self, plans: dict[str, Decisions]) -> None:
        """Carry on from each host's last published plan."""
        for host, last in plans.items():
            self.view(host).restored = last
            self.restored += 1
            log.info("host %s: plans go on from plan %d of the previous run", host,
                     last.plan_seq)

    def mode_for(self, host: str, now: float) -> str:
        return self.mode_and_reason(host, now)[0]

    def mode_and_reason(self, host: str, now: float) -> tuple[str, str]:
        """The host's mode and why, first that applies: an operator's command (until
        'auto'), thermal protection (action power_save), memory pressure (emergency), the
        schedule, the configured mode."""
        view = self.view(host)
        commanded = view.commanded_mode or self.commanded_mode
        if commanded:
            return commanded, "by command"
        if view.hot and self.settings.allocator.thermal.action == POWER_SAVE:
            return POWER_SAVE, "thermal: " + describe_hot(view.hot)
        if view.pressed:
            return EMERGENCY, "memory pressure"
        scheduled = scheduled_mode(self.settings, datetime.fromtimestamp(now))
        if scheduled:
            return scheduled, "by schedule"
        return self.settings.allocator.mode, ""

    def _note_heat(self, host: str, view: HostView) -> None:
        """Which of the host's cores are hot, from its newest sample (with hysteresis: hot
        from thermal.hot_c until below thermal.cool_c)."""
        thermal = self.settings.allocator.thermal
        if thermal.hot_c is None:
            view.hot = {}
            return
        temps = view.host_sample.cpu_temperatures_c if view.host_sample else []
        topology = self.topology_for(host)
        if topology is None or len(temps) != len(topology.cpu_ids):
            return                               # no sensors in this sample: as it was
        hot = {cpu: c for cpu, c in zip(topology.cpu_ids, temps) if c is not None
               and c >= (thermal.cool_c if cpu in view.hot else thermal.hot_c)}
        if hot.keys() != view.hot.keys():
            log.info("host %s: %s", host, f"hot: {describe_hot(hot)} (from {thermal.hot_c:g} °C "
                     f"until below {thermal.cool_c:g} °C)" if hot else
                     f"every core below {thermal.cool_c:g} °C: thermal protection over")
        view.hot = hot

    def _note_pressure(self, host: str, view: HostView) -> None:
        """Whether the host's memory pressure holds it in emergency, from its newest sample
        (with hysteresis: in at the threshold, out below half of it)."""
        above = self.settings.allocator.memory_pressure_emergency
        stalled = view.host_sample.pressure.get("memory_full") if view.host_sample else None
        if above is None or stalled is None:
            return                               # off, or no PSI in this sample: as it was
        was = view.pressed
        view.pressed = stalled >= above if not was else stalled >= above / 2
        if view.pressed != was:
            log.info("host %s: memory pressure %.1f%% %s", host, stalled,
                     f"reached {above:g}%: emergency mode" if view.pressed
                     else f"below {above / 2:g}%: emergency over")

    def make_plan(self, host: str, now: float) -> Plan | None:
        view = self.view(host)
        topology = self.topology_for(host)
        if not view.samples or topology is None:
            return None
        classified = process_targets(view.classes.values(), view.samples.values(),
                                     housekeeping_pids=self.housekeeping_pids())
        known = {(t.pid, t.start_time) for t in classified}
        own = set(self.housekeeping_pids())
        unclassified = [ProcessTarget(pid=s.pid, start_time=s.start_time, tier=HOUSEKEEPING,
                                      cls="unclassified", container_id=s.container_id,
                                      cpu_share=s.cpu_share, kernel_thread=s.kernel_thread,
                                      housekeeping=s.pid in own)
                        for key, s in view.samples.items() if key not in known]
        if view.previous is None and view.restored is not None:
            last = view.restored
            view.previous = plan_from_decisions(topology, last.items, last.plan_seq, last.mode,
                                                last.strategy, last.pools, last.reserve)
            view.planned_with, view.restored = topology, None
        previous = view.previous
        if previous is not None and view.planned_with != topology:
            # Other CPUs: the old pools mean nothing now, but the sequence goes on.
            previous = replace(previous, pools=(), assignments=(), reserve=(), unused=())
        mode, why = self.mode_and_reason(host, now)
        move_off = view.hot if self.settings.allocator.thermal.action == "move" else None
        result = plan(topology, classified + unclassified + container_targets(view),
                      Utilization.from_host_sample(view.host_sample),
                      mode=mode, policy=self.settings.allocator.policy,
                      previous_plan=previous, strategy=self.strategy_for(host),
                      hot_cpus=move_off, mode_reason=why)
        view.previous, view.planned_with = result, topology
        self.plans_made += 1
        return result

    def due(self, host: str, result: Plan, decisions: list[Decision], now: float,
            force: bool = False) -> bool:
        """Whether ``result`` is to be published: it differs from the last one published
        (a new mode or strategy is news even if nothing moves), a heartbeat is due, or
        ``force``. A due plan counts as published from here on."""
        view = self.view(host)
        key = (result.mode, result.strategy, decision_key(decisions))
        if not force and key == view.published \
                and now - view.published_at < self.settings.allocator.heartbeat_s:
            return False
        view.published, view.published_at = key, now
        return True
