"""The allocator agent: keeps each host's latest view and turns it into plans.

A plan is made every ``allocator.interval_s`` and at once when a process's class or tier
changes. It is published as one ``decisions`` batch per host (chunked), numbered by plan
sequence, when it differs from the last one published or every ``heartbeat_s``. The
numbering is per host and goes on across restarts: on start the allocator reads each
host's last plan back from the decisions topic and carries on from it. Every live
process gets a decision: one without a class yet is housekeeping, so that nothing but the
critical tiers runs on their cores.

Each host's topology comes with its host samples (a collector sends it on its first sweep
and every minute). Until a host's has arrived, this host's own (or the configured profile)
stands in for this host, and another host waits: a plan for the wrong CPUs is worse than
none.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agents.allocation import pool_cores, pool_states, to_decisions
from agents.allocation.hosts import HostView, Planner, last_plans
from agents.contract import AgentStats, Handler, Position, Timer, event_health, keep_going
from agents.ownership import Ownership, OwnsHosts, read_tails
from pipeline.bus import Publisher, read_tail, replay_topic, topic_types
from pipeline.collectors.collector import TOPOLOGY_EVERY_S
from pipeline.events import Decisions, Envelope
from pipeline.health import PartHealth
from pipeline.settings import Settings
from pipeline.stats import counter, gauge, labelled, labelled_gauge, note
from pipeline.topology import Topology, cpulist_format

log = logging.getLogger(__name__)


@dataclass
class AllocatorStats(AgentStats):
    plans: int = counter("plans made")
    published: int = counter("plans published (changed, or a heartbeat)")
    decisions: int = counter("decisions published")
    decisions_by_tier: dict[str, int] = labelled("decisions published, by tier", "tier")
    decisions_by_target: dict[str, int] = labelled(
        "decisions published, by what they place: process, container, cpu (an idle-state "
        "limit) or cgroup (a tier group's limits)", "target")
    restored: int = counter("hosts whose plan numbering continued from a previous run")
    pool_cores: dict[str, int] = labelled_gauge("cores each pool holds in this host's newest "
                                                "plan", "pool")
    hosts: int = gauge("hosts this allocator plans", 0)
    taken_over: int = counter("hosts taken over from another worker, their plans going on")
    planning: list[str] = note("the hosts this allocator plans", factory=list)
    partitions: list[int] = note("the partitions this worker owns (a worker of a group)",
                                 factory=list)


class AllocatorAgent(Planner, OwnsHosts):
    """The planner (``agents.allocation.hosts``) on the bus: events in, plans published."""
    name = "allocator"

    def __init__(self, settings: Settings, publisher: Publisher, topology: Topology,
                 housekeeping_pids: Callable[[], Iterable[int]],
                 ownership: Ownership | None = None) -> None:
        """With ``ownership`` (a worker of a group) it plans only the hosts of its
        partitions, and takes a host's last plan over when its partition moves here."""
        super().__init__(settings, topology, publisher.stamper.host, housekeeping_pids)
        self.publisher = publisher
        self.ownership = ownership
        self.taken_over: set[str] = set()   # hosts whose first plan here is published anyway
        self.stats = AllocatorStats()

    async def warm_up(self) -> None:
        """Before the first event: the modes operators asked for (the command topic, within
        the broker's retention; the last command per host wins), and each host's last plan
        (the tail of the decisions topic), so that plans go on being numbered from it and
        its placement holds. A worker of a group reads a host's plan when it takes the
        host over instead."""
        await self._replay_commands()
        if self.ownership is None:
            await self._restore_hosts()

    async def _replay_commands(self) -> None:
        async for event in replay_topic(self.settings, "command",
                                        topic_types(self.settings, ["command"])):
            self.on_command(event)

    async def _restore_hosts(self) -> None:
        """Each host's last plan and strategy, as the previous run left them."""
        # Every live host's plan is republished each heartbeat: two of them before the
        # newest message cover every host planned when the previous run stopped.
        span = 2 * self.settings.allocator.heartbeat_s + self.settings.allocator.interval_s
        tail = [e async for e in read_tail(self.settings, "decisions",
                                           topic_types(self.settings, ["decisions"]), span)]
        self.restore(last_plans(tail))
        self.stats.restored += self.restored
        async for event in read_tail(self.settings, "strategy",
                                     topic_types(self.settings, ["strategy"]),
                                     self.settings.closed_loop.reexplore_s):
            self.on_strategy(event)

    def _forget(self, host: str) -> None:
        """Drop what this allocator knows of ``host`` but what operators commanded for it
        (every worker reads every command, so that stays current)."""
        old = self.hosts.pop(host)
        self.taken_over.discard(host)
        if old.commanded_mode is not None or old.container_tiers:
            self.hosts[host] = HostView(commanded_mode=old.commanded_mode,
                                        container_tiers=old.container_tiers)

    def release(self, partitions: frozenset[int]) -> None:
        """Forget the hosts of partitions another worker owns now: it plans them."""
        for host in self.hosts_on(partitions):
            self._forget(host)

    async def take_over(self, partitions: frozenset[int]) -> None:
        """The hosts of ``partitions`` are this worker's now: their last plans (numbering and
        placement go on from them, so nothing moves back), their strategies, their newest
        host samples (the topology comes once a minute; without it a host would wait that
        long for a plan) and their classes; what operators commanded for them this worker
        has read all along. The first plan for each is published even if unchanged, so its
        applier hears from the new owner."""
        cfg, classifier = self.settings.allocator, self.settings.classifier
        # Every live host's plan is republished each heartbeat, and each class every
        # classifier.heartbeat_s: these spans hold the newest of each.
        tails = await read_tails(self.settings, partitions, {
            "decisions": 2 * cfg.heartbeat_s + cfg.interval_s,
            "strategy": self.settings.closed_loop.reexplore_s,
            "host_sample": TOPOLOGY_EVERY_S + 2 * self.settings.collector.interval_s,
            "classifications": classifier.heartbeat_s + classifier.window_s})
        # Applied at once, with nothing awaited in between: no plan sees half of it.
        for host in self.hosts_on(partitions):
            self._forget(host)
        last = last_plans(tails["decisions"])
        self.restore(last)
        self.stats.restored += len(last)
        for event in tails["strategy"]:
            self.on_strategy(event)
        for event in tails["host_sample"]:
            self.on_host_sample(event)
        for event in tails["classifications"]:
            self.on_classifications(event)
        self.taken_over.update(last)
        self.stats.taken_over += len(last)
        log.info("allocator took over partitions %s: plans of %s go on",
                 sorted(partitions), ", ".join(sorted(last)) or "no host yet")

    # --- the shell ---------------------------------------------------------------------------

    async def replan(self, host: str, force: bool = False) -> None:
        """Plan ``host``; publish when the plan changed, a heartbeat is due, or ``force``."""
        now = time.time()
        result = self.make_plan(host, now)
        if result is None:
            return
        self.stats.plans += 1
        if host == self.local_host:
            self.stats.pool_cores = pool_cores(result, self.topology_for(host) or self.topology)
        decisions = to_decisions(result)
        if not self.due(host, result, decisions, now, force or host in self.taken_over):
            return
        self.taken_over.discard(host)
        stamp = self.publisher.stamper.stamp
        events = [stamp(part, host=host) for part in self.publisher.batch(
            Decisions, decisions, "items", plan_seq=result.seq, mode=result.mode,
            strategy=result.strategy, pools=pool_states(result),
            reserve=cpulist_format(result.reserve))]
        await self.publisher.publish_many(events)
        self.stats.published += 1
        self.stats.decisions += len(decisions)
        for d in decisions:
            for counts, key in ((self.stats.decisions_by_tier, d.tier),
                                (self.stats.decisions_by_target, d.target)):
                counts[key] = counts.get(key, 0) + 1

    def handlers(self) -> Sequence[Handler]:
        return [Handler("classifications", self._classifications),
                Handler("process_samples", self._samples),
                Handler("container_samples", self._containers),
                Handler("host_sample", self._host_sample),
                Handler("strategy", self._strategy),
                *(() if self.ownership is not None else self.broadcasts())]

    def broadcasts(self) -> Sequence[Handler]:
        """What every worker of a group reads on every partition (``follow_broadcasts``):
        a mode, a rebalance or a container's tier may name any host, or all of them."""
        return [Handler("command", self._command)]

    def timers(self) -> Sequence[Timer]:
        return [Timer("plan cycle", self.settings.allocator.interval_s, self._cycle)]

    async def _classifications(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host) and self.on_classifications(event):
            await self.replan(event.host)

    async def _samples(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_samples(event)

    async def _containers(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_containers(event)

    async def _host_sample(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_host_sample(event)

    async def _command(self, event: Envelope, at: Position) -> None:
        forced = set(self.on_command(event))
        for host in list(self.hosts):
            if self.mine(host):
                await self.replan(host, force=host in forced)

    async def _strategy(self, event: Envelope, at: Position) -> None:
        if self.mine(event.host):
            self.on_strategy(event)
            await self.replan(event.host)

    async def _cycle(self) -> None:
        for host in list(self.hosts):
            if not self.mine(host):
                continue
            with keep_going(f"planning for {host}", self.stats):
                await self.replan(host)

    def health(self, now: float) -> PartHealth:
        planning = sorted(host for host, view in self.hosts.items() if view.samples)
        self.stats.hosts, self.stats.planning = len(planning), planning
        if self.ownership is not None:
            self.stats.partitions = sorted(self.ownership.owned)
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        pass
