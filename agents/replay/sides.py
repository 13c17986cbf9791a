"""The two sides a replay compares, fed the same window of events.

``PolicyRun`` runs a configuration's classifier and allocator over the recorded samples,
labels and commands: the same ``HostClassifiers`` and ``Planner`` the live agents run,
with time taken from the events. ``RecordedRun`` is what the history says was decided (the
live classes and plans, or a shadow policy's plans). Both answer the same two questions
after every sweep: the class in force for each process, and the decision in force for
each process and container.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from agents.allocation import plan_from_decisions, to_decisions
from agents.allocation.hosts import Planner
from agents.allocation.plan import OWN_REASON
from agents.classification.hosts import HostClassifiers
from agents.classification.model import OnlineModel
from agents.classification.rules import RuleSet
from pipeline.events import Chunks, Classification, Decision, Decisions, Envelope, joined
from pipeline.settings import Settings
from pipeline.topology import Topology

# A target's identity in a plan: ("process", pid, start_time) or ("container", id).
TargetKey = tuple


def target_key(d: Decision) -> TargetKey | None:
    if d.target == "process":
        return ("process", d.pid, d.start_time)
    if d.target == "container":
        return ("container", d.container_id)
    return None                     # a CPU's idle limit follows the pools


@dataclass
class SideState:
    """What a side holds in force: the decisions by target, and how often they moved."""
    decisions: dict[TargetKey, Decision] = field(default_factory=dict)
    plans: int = 0
    mode: str = ""
    strategy: str = ""

    def take(self, decisions: Iterable[Decision], mode: str, strategy: str) -> dict[str, int]:
        """A new plan in force; returns the targets that changed cpus (moves) by tier."""
        new = {}
        for d in decisions:
            key = target_key(d)
            if key is not None:
                new[key] = d
        old = self.decisions
        moves: dict[str, int] = {}
        for k, d in new.items():
            was = old.get(k)
            if was is not None and was.cpus != d.cpus:
                moves[d.tier] = moves.get(d.tier, 0) + 1
        self.decisions, self.mode, self.strategy = new, mode, strategy
        self.plans += 1
        return moves


class Side:
    """One side of a comparison: fed every event of the window, it holds the decisions in
    force (``state``) and, in its planner's view of the host, the classes in force."""
    name: str
    host: str
    state: SideState
    planner: Planner

    def feed(self, event: Envelope) -> dict[str, int] | None:
        """Take one window event; returns the moves of a plan it put in force, by tier."""
        raise NotImplementedError

    def classes(self) -> dict[tuple[int, int], Classification]:
        return self.planner.view(self.host).classes


def _no_pids() -> list[int]:
    return []


class PolicyRun(Side):
    """A configuration replayed: classify and plan as the live agents would have."""

    def __init__(self, name: str, settings: Settings, host: str, model: OnlineModel,
                 rules: RuleSet, housekeeping_pids: set[int]) -> None:
        self.name, self.settings, self.host = name, settings, host
        self.classifiers = HostClassifiers(settings.classifier, model, rules)
        # Never this machine's topology for a recorded host: it plans with the host's own.
        self.planner = Planner(settings, Topology(cpus=()), local_host="",
                               housekeeping_pids=lambda: housekeeping_pids)
        self.state = SideState()
        self._last_plan: float | None = None

    def start_from(self, last_plan: Decisions | None, topology: Topology | None,
                   planned_at: float | None = None) -> None:
        """The host's last recorded plan, as the previous plan (sequence, placement, pool
        hysteresis), and when it was made (plans follow at the planner's interval)."""
        if last_plan is None or topology is None:
            return
        self._last_plan = planned_at
        view = self.planner.view(self.host)
        view.previous = plan_from_decisions(topology, last_plan.items, last_plan.plan_seq,
                                            last_plan.mode, last_plan.strategy,
                                            last_plan.pools, last_plan.reserve)
        view.planned_with = topology
        self.state.take(last_plan.items, last_plan.mode, last_plan.strategy)

    def warm(self, event: Envelope) -> None:
        """A sample from before the window: fills the feature windows, plans nothing."""
        if event.type == "process_samples":
            self.planner.on_samples(event)
            self.planner.take_classes(event.host,
                                      self.classifiers.on_samples(event).classifications)
        elif event.type == "container_samples":
            self.classifiers.on_containers(event)
            self.planner.on_containers(event)

    def feed(self, event: Envelope) -> dict[str, int] | None:
        kind = event.type
        if kind == "process_samples":
            self.planner.on_samples(event)
            changed = self.planner.take_classes(
                event.host, self.classifiers.on_samples(event).classifications)
            data = event.data
            whole = not data.partial and data.chunk == data.chunks - 1
            due = whole and (self._last_plan is None or event.ts - self._last_plan
                             >= self.settings.allocator.interval_s)
            if changed or due:
                return self._plan(event.ts)
        elif kind == "label":
            self.classifiers.on_label(event)
        elif kind == "container_samples":
            self.classifiers.on_containers(event)
            self.planner.on_containers(event)
        elif kind == "host_sample":
            self.classifiers.on_host_sample(event)
            self.planner.on_host_sample(event)
        elif kind == "command":
            self.planner.on_command(event)
            return self._plan(event.ts)
        elif kind == "strategy":
            self.planner.on_strategy(event)
            return self._plan(event.ts)
        return None

    def _plan(self, now: float) -> dict[str, int] | None:
        result = self.planner.make_plan(self.host, now)
        if result is None:
            return None
        self._last_plan = now
        return self.state.take(to_decisions(result), result.mode, result.strategy)


class RecordedRun(Side):
    """What the history says: the live classes and plans, or (``shadow``) the plans a
    shadow policy of that name recorded."""

    def __init__(self, name: str, settings: Settings, host: str,
                 shadow: str | None = None) -> None:
        self.name, self.host, self.shadow = name, host, shadow
        self.planner = Planner(settings, Topology(cpus=()), local_host="",
                               housekeeping_pids=_no_pids)   # a view only: it never plans
        self.state = SideState()
        self._chunks: Chunks[Decisions] = Chunks(keep=64)
        self.own_pids: set[int] = set()       # corelane's own processes, as it placed them

    def start_from(self, last_plan: Decisions | None,
                   classes: dict[tuple[int, int], tuple[float, Classification]]) -> None:
        if last_plan is not None:
            self._take(last_plan)
        self.planner.take_classes(self.host, [c for _, c in classes.values()])

    def feed(self, event: Envelope) -> dict[str, int] | None:
        kind = event.type
        if kind == "process_samples":
            self.planner.on_samples(event)
        elif kind == "classifications":
            self.planner.on_classifications(event)
        elif (kind == "decisions" and self.shadow is None) or (
                kind == "shadow_decisions" and event.data.policy == self.shadow):
            parts = self._chunks.add(event.data)
            if parts is not None:
                whole = msgspec.structs.replace(parts[0], chunk=0, chunks=1,
                                                items=joined(parts, "items"))
                return self._take(whole)
        return None

    def _take(self, plan: Decisions) -> dict[str, int]:
        self.own_pids.update(d.pid for d in plan.items
                             if d.pid is not None and d.reason.startswith(OWN_REASON))
        return self.state.take(plan.items, plan.mode, plan.strategy)
