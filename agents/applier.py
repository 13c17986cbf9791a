"""The applier agent: host-local; applies the newest plan for its host and says what happened.

It takes the ``decisions`` of its own host only, waits for every chunk of a plan, and applies
the plan in a worker thread (system calls and Docker calls block): every thread of each
process, each container through the Docker API, each critical core's idle-state limit through
sysfs (given back when the core leaves its pool), identities checked so a reused pid is never
touched, the original settings journalled before the first change. Each apply is one
``enforcements`` batch: applied, skipped (gone, protected, not permitted, changed by someone
else, dry run) or failed, with before and after. Targets outside the configured scope are
left alone and not reported one by one.

A plan older than the last one applied (a lower plan number, published before that
apply) is dropped; on start the applier reads its host's last applied plan back from the
enforcements topic, so a plan re-read after a restart does not undo a newer one.

On stop it restores every journalled target still alive; after a crash, the first plan it
sees decides what is still managed (kept) and what is not (restored).

An operator's ``pause`` command stops every change (plans, tier groups, children's resets)
until ``resume``, which applies the newest plan held meanwhile at once. What was already
changed stays as it is; a stop still restores it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

from agents.allocation import action
from agents.contract import AgentStats, Handler, Position, Timer, event_health
from agents.enforcement import (ApplyResult, Guard, Identity, Journal, ProcessSettings, Scope,
                                enforce_container, enforce_cpu_idle, enforce_membership,
                                enforce_process, read_settings, restorer)
from agents.enforcement.cgroup import FIELD as CGROUPS
from agents.enforcement.cgroup import (GroupLimits, group_limits, group_path, remove_tier_groups,
                                       write_tier_group)
from agents.enforcement.inheritance import demoted_parents, reset_child
from agents.enforcement.journal import JournalEntry
from agents.enforcement.process import read_threads, summarize
from agents.enforcement.safety import OUT_OF_SCOPE
from pipeline import commands, procfs
from pipeline.bus import Publisher, read_tail, replay_topic, topic_types
from pipeline.cgroups import Layout, read_layout
from pipeline.collectors.proc_events import ProcEvent
from pipeline.events import (Chunks, Decision, Decisions, Enforcement, Enforcements, Envelope,
                             joined)
from pipeline.health import PartHealth, degraded
from pipeline.settings import Settings
from pipeline.stats import counter, gauge, labelled
from pipeline.vocabulary import HOUSEKEEPING

log = logging.getLogger(__name__)

DRY_RUN = "dry run"
# how long a child's deferred reset is tried again, plan by plan
PENDING_RESET_S = 30.0


def journal_dir(settings: Settings) -> Path:
    folder = settings.applier.journal_dir
    return Path(folder).expanduser() if folder else settings.home_path / "journal"


def managed_identities(d: Decision) -> list[Identity]:
    """The journal identities a decision is about: a process in a tier group is two (its
    settings, and its cgroups)."""
    if d.target == "cgroup":
        return []
    if d.target == "process" and d.cgroup:
        return [managed_identity(d), Identity.membership(int(d.pid or 0), int(d.start_time or 0))]
    return [managed_identity(d)]


def managed_identity(d: Decision) -> Identity:
    """The journal identity a decision is about."""
    if d.target == "process":
        return Identity.process(int(d.pid or 0), int(d.start_time or 0))
    if d.target == "cpu":
        return Identity.of_cpu(int(d.cpus))
    return Identity.container(d.container_id or "")


def make_guard(settings: Settings, own_pids: Iterable[int]) -> Guard:
    scope = settings.applier.scope
    return Guard(protected_patterns=tuple(settings.applier.protected), own_pids=frozenset(own_pids),
                 scope=Scope.all() if scope == "all" else Scope.from_config(scope.model_dump()))


@dataclass
class ApplierStats(AgentStats):
    plans: int = counter("plans applied")
    dropped: int = counter("plans dropped because a newer one was applied already")
    outcomes: dict[str, int] = labelled(
        "targets by the outcome of their apply: applied (their settings are as planned), "
        "skipped (left alone: gone, protected, not permitted, changed by someone else, dry "
        "run) or failed (a change failed)", "outcome")
    changed: int = counter("targets corelane changed")
    out_of_scope: int = counter("targets outside applier.scope, not reported one by one")
    unchanged: int = counter("decisions as the last plan had them, not applied again until "
                             "the next full pass (applier.reassert_s)")
    last_plan_seq: int | None = gauge("the number of the last plan applied")
    resets: int = counter("children of demoted parents put back to neutral")
    last_reset_ms: float | None = gauge("from the last such child's fork to its reset (ms)")
    paused: bool = gauge("1 while an operator's pause holds: plans are received, not applied",
                         False)
    held_plans: int = counter("plans received while paused, not applied")


class ApplierAgent:
    name = "applier"

    def __init__(self, settings: Settings, publisher: Publisher,
                 own_pids: Callable[[], Iterable[int]], dry_run: bool = False,
                 docker_client: Callable[[], docker.DockerClient | None] | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.own_pids = own_pids
        self.dry_run = dry_run
        self.docker_client = docker_client or (lambda: None)
        self.paths = settings.host_paths
        self.journal = Journal(journal_dir(settings))
        self._chunks: Chunks[Decisions] = Chunks()
        self._reconciled = False
        self.last_plan_seq: int | None = None
        self.last_applied_ts = 0.0          # when the last plan was applied (epoch s)
        self.last_plan_id = ""
        self.stats = ApplierStats()
        # pid -> journal entry of the processes corelane demoted, and the shared cores
        self._demoted: dict[int, JournalEntry] = {}
        self._shared_cpus: str | None = None
        self._resets: list[ApplyResult] = []
        self._flushing: asyncio.Task[None] | None = None
        self._last_guard: Guard | None = None     # the last plan's, for resets between plans
        self._actions: dict[str, tuple] = {}      # target -> the action applied last
        self._full_at: float | None = None        # when every decision was last applied
        self._newly_demoted: set[int] = set()
        # child -> (parent, since when): a reset to try again at its exec or the next plans
        self._pending: dict[int, tuple[int, float]] = {}
        self._layout: Layout | None = None        # the host's cgroup hierarchies, read once
        self._groups: dict[str, GroupLimits] = {}  # tier -> its group's limits, this plan
        # an operator's pause: since when, and the newest plan held back meanwhile
        self.paused_since: float | None = None
        self._held: tuple[Decisions, list[Decision]] | None = None

    # --- applying ------------------------------------------------------------------------------

    def guard(self) -> Guard:
        return make_guard(self.settings, self.own_pids())

    def apply_plan(self, decisions: list[Decision]) -> list[ApplyResult]:
        """Apply one whole plan (blocking). Returns the results worth reporting."""
        guard = self.guard()
        if not self._reconciled and not self.dry_run:
            # After a crash: what this plan no longer manages gets its original back.
            managed = [i for d in decisions for i in managed_identities(d)]
            for result in self.journal.reconcile(managed, self._restorer(guard)):
                log.info("restored %s after restart: %s", result.subject,
                         result.outcome if result.applied else result.reason)
            self._reconciled = True
        results = []
        # A core no longer in an exclusive pool gets its own idle limit back.
        limited = {d.cpus for d in decisions if d.target == "cpu"}
        released = [e.identity for e in self.journal.entries()
                    if e.identity.target == "cpu" and str(e.identity.cpu) not in limited]
        if released and not self.dry_run:
            results += self.journal.restore_targets(released, self._restorer(guard))
        now = time.monotonic()
        full = self._full_at is None or now - self._full_at >= self.settings.applier.reassert_s
        if full:
            self._full_at = now
        actions: dict[str, tuple] = {}
        # the tier groups first, so that their members have somewhere to go
        self._groups = {}
        for decision in decisions:
            if decision.target == "cgroup":
                limits = group_limits(decision)
                target, wanted = f"cgroup:{decision.tier}", action(decision)
                if full or self._actions.get(target) != wanted:
                    result = self._apply_group(decision.tier, limits)
                    if result.changes or not result.applied:
                        results.append(result)
                    if not (result.applied or self.dry_run):
                        continue                 # no group to move members into
                actions[target] = wanted
                self._groups[decision.tier] = limits
        for decision in decisions:
            if decision.target == "cgroup":
                continue
            target, wanted = managed_identity(decision).key, action(decision)
            actions[target] = wanted
            if not full and self._actions.get(target) == wanted:
                self.stats.unchanged += 1
                continue
            result = self._apply_one(decision, guard)
            if result is None:
                continue
            if decision.target == "process" and (result.applied or result.reason == DRY_RUN):
                moved = self._apply_membership(decision)
                if moved is not None and (moved.changes or not moved.applied):
                    result.with_membership(moved)
            if result.outcome == "failed":
                actions.pop(target)                  # tried again with the next plan
            if result.reason == OUT_OF_SCOPE:
                self.stats.out_of_scope += 1
                continue
            outcomes = self.stats.outcomes
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            self.stats.changed += bool(result.changed)
            results.append(result)
        self._actions = actions
        self._shared_cpus = next((d.cpus for d in decisions if d.target == "process"
                                  and d.tier == HOUSEKEEPING), self._shared_cpus)
        before = set(self._demoted)
        self._demoted = demoted_parents(self.journal.entries())
        # a parent demoted by this plan may have forked while it was being applied
        self._newly_demoted = set(self._demoted) - before
        self._last_guard = guard
        return results

    # --- new processes ---------------------------------------------------------------------

    def on_proc_events(self, events: list[ProcEvent]) -> None:
        """A child of a process corelane demoted goes back to neutral at once (on the
        event loop: a few system calls). One caught between its fork and its exec (no
        command line yet, starved at its inherited SCHED_IDLE) is tried again at its exec."""
        if self.paused_since is not None:
            return
        for e in events:
            if e.what == "fork" and e.parent in self._demoted:
                self._reset(e.pid, e.parent, e.ts_ns)
            elif e.what == "exec" and e.pid in self._pending:
                parent, _ = self._pending.pop(e.pid)
                if parent in self._demoted:
                    self._reset(e.pid, parent, None, last_try=True)

    def rescan(self, parents: set[int] | None = None) -> None:
        """Every child of a demoted parent (of ``parents``, else of any) not reset yet,
        from /proc: after process events were lost, where the kernel gives none, and for
        the parents a plan has just demoted."""
        wanted = set(self._demoted) if parents is None else parents & set(self._demoted)
        if not wanted:
            return
        proc = self.paths.proc
        for pid in procfs.list_pids(proc):
            stat = procfs.read_stat(proc, pid)
            if stat is not None and stat.ppid in wanted and \
                    self.journal.get(Identity.process(pid, stat.start_time)) is None:
                self._reset(pid, stat.ppid, None)

    def _reset(self, pid: int, parent_pid: int, forked_ns: int | None,
               last_try: bool = False) -> None:
        parent = self._demoted[parent_pid]
        stat = procfs.read_stat(self.paths.proc, parent_pid)
        if stat is None or stat.start_time != parent.identity.start_time:
            return                               # the pid is another process's now
        result = reset_child(self.journal, pid, parent, self._shared_cpus,
                             guard=self._last_guard or self.guard(), paths=self.paths,
                             layout=self._layout)
        if not last_try and (result is None or not result.applied):
            # not readable or not to be changed as it stands now: again at its exec, and
            # with each plan for a while
            self._pending.setdefault(pid, (parent_pid, time.monotonic()))
            log.debug("pid %d: reset deferred (%s)", pid, result.reason if result else "gone")
            return
        self._pending.pop(pid, None)
        if result is None or result.reason == OUT_OF_SCOPE:
            return
        self.stats.resets += 1
        if forked_ns is not None:
            self.stats.last_reset_ms = round((time.monotonic_ns() - forked_ns) / 1e6, 3)
        log.info("pid %d: %s (%s)", pid, result.outcome, result.reason)
        self._report_reset(result)

    def _retry_pending(self) -> None:
        """Each child whose reset was deferred is tried again (its parent still demoted),
        so none waits on an exec that never comes; after PENDING_RESET_S it is settled."""
        now = time.monotonic()
        for pid, (parent_pid, since) in list(self._pending.items()):
            if parent_pid not in self._demoted:
                del self._pending[pid]
            else:
                self._reset(pid, parent_pid, None, last_try=now - since >= PENDING_RESET_S)

    def _report_reset(self, result: ApplyResult) -> None:
        self._resets.append(result)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_resets())

    async def _flush_resets(self) -> None:
        await asyncio.sleep(0)                   # one batch for a burst of forks
        # resets that come while a batch is being published go out in the next round, not
        # with the next fork (which may never come)
        while self._resets:
            results, self._resets = self._resets, []
            await self._publish(Decisions(batch=self.last_plan_id,
                                          plan_seq=self.last_plan_seq or 0), results)

    # --- tier groups -------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = read_layout(self.paths)
            log.info("cgroups: %s", self._layout.description)
        return self._layout

    def _apply_group(self, tier: str, limits: GroupLimits) -> ApplyResult:
        root = self.settings.applier.cgroup_root
        if self.dry_run:
            return ApplyResult("cgroup", "skipped", DRY_RUN,
                               after={"tier": tier, "path": group_path(root, tier),
                                      **{k: v for k, v in vars(limits).items()
                                         if v is not None}})
        return write_tier_group(self.layout, root, tier, limits)

    def _apply_membership(self, d: Decision) -> ApplyResult | None:
        """Into its tier's group (d.cgroup), or back to its own cgroups when it has none."""
        assert d.pid is not None and d.start_time is not None
        root = self.settings.applier.cgroup_root
        limits = self._groups.get(d.cgroup or "")
        wanted = {c: group_path(root, d.cgroup) for c in limits.controllers} \
            if d.cgroup and limits is not None else None
        if self.dry_run:
            if not wanted:
                return None
            return ApplyResult("process", "skipped", DRY_RUN, after={CGROUPS: wanted},
                               pid=d.pid, start_time=d.start_time)
        return enforce_membership(self.journal, d.pid, d.start_time, wanted, layout=self.layout,
                                  root=root, protected=self.settings.applier.protected_cgroups,
                                  respect_override=self.settings.applier.respect_overrides,
                                  paths=self.paths)

    def _restorer(self, guard: Guard):  # type: ignore[no-untyped-def]
        return restorer(self.docker_client(), guard=guard, paths=self.paths)

    def _apply_one(self, d: Decision, guard: Guard) -> ApplyResult | None:
        respect = self.settings.applier.respect_overrides
        if d.target == "process" and d.pid is not None and d.start_time is not None:
            wanted = ProcessSettings.from_decision(d)
            if self.dry_run:
                return self._dry_run(d, wanted, guard)
            return enforce_process(self.journal, d.pid, d.start_time, wanted, guard=guard,
                                   respect_override=respect, paths=self.paths)
        if d.target == "cpu" and d.idle_latency_us is not None:
            cpu = int(d.cpus)
            if self.dry_run:
                return ApplyResult("cpu", "skipped", "dry run",
                                   after={"cpu": cpu, "idle_latency_us": d.idle_latency_us})
            return enforce_cpu_idle(self.journal, cpu, d.idle_latency_us, respect_override=respect,
                                    paths=self.paths)
        if d.target == "container" and d.container_id:
            client = self.docker_client()
            if client is None:
                return ApplyResult("container", "skipped", "no Docker engine reachable",
                                   container_id=d.container_id)
            if self.dry_run:
                return ApplyResult("container", "skipped", "dry run",
                                   container_id=d.container_id,
                                   after={"cpuset": d.cpus, "cpu_shares": d.cpu_shares})
            return enforce_container(self.journal, client, d.container_id, d.cpus,
                                     d.cpu_shares, respect_override=respect, scope=guard.scope,
                                     paths=self.paths)
        return None

    def _dry_run(self, d: Decision, wanted: ProcessSettings, guard: Guard) -> ApplyResult:
        # What would change, without a single write: read, compare, report.
        assert d.pid is not None
        proc = self.paths.proc
        stat = procfs.read_stat(proc, d.pid)
        if stat is None or stat.start_time != d.start_time:
            return ApplyResult("process", "skipped", "gone", pid=d.pid, start_time=d.start_time)
        refused = guard.check(d.pid, stat, proc)
        if refused is not None and not refused.affinity_allowed:
            return ApplyResult("process", "skipped", refused.reason, pid=d.pid,
                               start_time=d.start_time)
        current = read_settings(d.pid, self.paths)
        before = summarize(d.pid, read_threads(d.pid, self.paths)) if current else {}
        return ApplyResult("process", "skipped", DRY_RUN, before=before,
                           after={**before, **{k: v for k, v in wanted.to_dict().items()
                                               if v is not None}},
                           pid=d.pid, start_time=d.start_time)

    def restore_all(self) -> list[ApplyResult]:
        """Every journalled target still alive back to its original settings."""
        results = self.journal.restore_all(self._restorer(self.guard()))
        for result in results:
            log.info("restored %s: %s", result.subject,
                     result.outcome if result.applied else result.reason)
        return results

    # --- the shell -----------------------------------------------------------------------------

    def on_decisions(self, event: Envelope) -> list[Decision] | None:
        """Collect the chunks of a plan for this host; the whole plan once the last arrives,
        unless a newer plan was applied already."""
        if event.host != self.settings.host:
            return None
        data: Decisions = event.data
        parts = self._chunks.add(data)
        if parts is None:
            return None
        if (self.last_plan_seq is not None and data.plan_seq < self.last_plan_seq
                and event.ts < self.last_applied_ts):
            self.stats.dropped += 1
            return None  # an older plan arriving late: the newer one already holds
        self._chunks.clear()  # anything half-collected is older than this plan
        self.last_plan_seq = self.stats.last_plan_seq = data.plan_seq
        self.last_plan_id = data.batch
        self.last_applied_ts = time.time()
        return joined(parts, "items")

    def on_command(self, event: Envelope) -> bool:
        """Take a pause or resume meant for this host; returns whether it resumed."""
        command = event.data
        if command.name not in (commands.PAUSE, commands.RESUME) or \
                not commands.applies_to(command, self.settings.host):
            return False
        if command.name == commands.PAUSE:
            if self.paused_since is None:
                self.paused_since = event.ts
                log.info("paused by command %s: observing and deciding, changing nothing",
                         event.id)
            self.stats.paused = True
            return False
        was = self.paused_since is not None
        self.paused_since, self.stats.paused = None, False
        self._full_at = None                     # every decision is checked again
        if was:
            log.info("resumed by command %s: enforcing the plans again", event.id)
        return was

    def handlers(self) -> Sequence[Handler]:
        return [Handler("decisions", self._decisions), Handler("command", self._command)]

    def timers(self) -> Sequence[Timer]:
        return []

    async def warm_up(self) -> None:
        """The last plan this host applied before a restart, from the enforcements topic,
        and whether an operator's pause holds (the commands topic: the last one wins)."""
        async for event in replay_topic(self.settings, "command",
                                        topic_types(self.settings, ["command"])):
            self.on_command(event)
        span = 2 * self.settings.allocator.heartbeat_s
        async for event in read_tail(self.settings, "enforcements",
                                     topic_types(self.settings, ["enforcements"]), span):
            if event.host == self.settings.host and event.ts >= self.last_applied_ts:
                self.last_plan_seq = self.stats.last_plan_seq = event.data.plan_seq
                self.last_applied_ts = event.ts

    async def _command(self, event: Envelope, at: Position) -> None:
        if self.on_command(event) and self._held is not None:
            held, self._held = self._held, None
            await self._apply(*held)

    async def _decisions(self, event: Envelope, at: Position) -> None:
        plan = self.on_decisions(event)
        if plan is None:
            return
        if self.paused_since is not None:
            self._held = (event.data, plan)
            self.stats.held_plans += 1
            await self._publish(event.data, [])  # received; nothing changed
            return
        await self._apply(event.data, plan)

    async def _apply(self, data: Decisions, plan: list[Decision]) -> None:
        results = await asyncio.to_thread(self.apply_plan, plan)
        self.stats.plans += 1
        if self._newly_demoted:
            self.rescan(self._newly_demoted)
        self._retry_pending()
        await self._publish(data, results)

    async def _publish(self, plan: Decisions, results: list[ApplyResult]) -> None:
        items: list[Enforcement] = [r.to_enforcement() for r in results]
        stamp = self.publisher.stamper.stamp
        # An apply that changed nothing worth a row is still one (empty) batch: the
        # history then shows every plan applied, and a restart finds the last one.
        await self.publisher.publish_many(
            [stamp(part) for part in self.publisher.batch(Enforcements, items, "items",
                                                          plan_seq=plan.plan_seq,
                                                          plan_id=plan.batch)])

    def health(self, now: float) -> PartHealth:
        if self.paused_since is not None:
            return degraded(f"paused by an operator for {now - self.paused_since:.0f} s: "
                            f"plans are received and recorded, nothing is changed "
                            f"(`corelane resume`)")
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        """On stop: every journalled target still alive gets its original settings back."""
        try:
            self.restore_all()
            if not self.dry_run and self._layout is not None:
                remove_tier_groups(self._layout, self.settings.applier.cgroup_root)
        finally:
            self.journal.close()
