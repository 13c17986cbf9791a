"""A replay: one host's window of history, run again under a policy and compared.

What is compared with what:

- no policy: the recorded decisions against the recorded configuration replayed, which
  must reproduce them; every difference that remains comes with its reason;
- ``policy``: the recorded configuration replayed against another (what would differ);
- ``policy`` and ``against``: two configurations replayed, neither of them the recorded one;
- ``shadow``: the live decisions against a shadow policy's recorded ones (nothing re-run).

A replayed configuration starts from the state in force when the window opens: the
feature windows warmed from the samples before it, the labels, commands and strategy
choices given before it, the host's last recorded plan, the classes in force, and the model
version that stood then (or an untrained model that learns as it goes, ``fresh_model``).
It reads the history only: nothing is published, nothing on the host is touched.
"""
from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.classification.model import OnlineModel
from agents.classification.rules import RulesError, load_rule_set
from agents.classification.snapshots import model_shelf
from agents.replay.report import Comparison, Difference, iso
from agents.replay.sides import PolicyRun, RecordedRun, Side
from pipeline.events import Classification, Envelope, ProcessSample
from pipeline.settings import ConfigError, Settings, parse_settings
from pipeline.times import TimeError, parse_when
from pipeline.topology import Topology
from storage.window import Cursor, HistoryWindow, WindowError

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
_MODEL_TAG = re.compile(r"model (v\d+(?:\+\d+)?)")


class ReplayError(Exception):
    """A replay that cannot run; the message is one line meant for a person."""


@dataclass
class Policy:
    """A configuration to replay, and the name it goes by in the report."""
    name: str
    settings: Settings


@dataclass
class ReplayRequest:
    t_from: float
    t_to: float
    host: str | None = None
    policy: Policy | None = None
    against: Policy | None = None
    fresh_model: bool = False
    shadow: str | None = None


def _recorded_settings(config: Any, current: Settings) -> tuple[Settings, str]:
    """The configuration in force (and a note saying which), from its recorded event."""
    if config is None:
        return current, ("no configuration was recorded before the window: the current "
                         "configuration stands in for the recorded one")
    try:
        return Settings.model_validate(config.settings), \
            f"the recorded configuration {config.hash[:12]} (from {config.source or '?'})"
    except ValidationError as exc:   # a configuration of another version of corelane
        raise ReplayError(f"the configuration recorded before the window cannot be read "
                          f"by this version ({str(exc).splitlines()[0]}); give it as a file "
                          f"with --against") from None


class _Explainer:
    """Why a difference between the recorded decisions and their replay exists."""

    def __init__(self, run: ReplayRun) -> None:
        self.run = run

    def __call__(self, d: Difference) -> tuple[str, bool]:
        run = self.run
        window_s = run.recorded_settings.classifier.window_s
        pid_start = d.key[1:] if d.key[0] == "process" else None
        for at, label in run.labels_in_window:
            names_it = label.match is not None or (
                pid_start is not None and label.pid == pid_start[0]
                and label.start_time in (None, pid_start[1]))
            if names_it and d.start - window_s - run.tolerance_s <= at <= d.last:
                return f"a label was given at {iso(at)}, inside the window", True
        for a, b in run.comparison.gaps:
            if a <= d.start and b >= d.start - window_s:
                return (f"samples are missing from the history between {iso(a)} and "
                        f"{iso(b)}", True)
        for at in run.config_changes:
            if at <= d.last:
                return f"the configuration changed at {iso(at)}, inside the window", True
        for at in run.command_times:
            if abs(at - d.start) <= run.tolerance_s:
                return f"a command at {iso(at)} was taken at another moment", True
        if d.kind == "class":
            sources = [c.source for c in (d.base_raw, d.other_raw)
                       if isinstance(c, Classification)]
            if "rule" in sources and run.rules_changed:
                return "the rule file has changed since the recording", True
            if "model" in sources:
                recorded = d.base_raw
                live = _MODEL_TAG.search(recorded.reason) if isinstance(
                    recorded, Classification) and recorded.source == "model" else None
                return (f"the model: the replay judges with {run.model_note}, the live "
                        f"model was {live.group(1) if live else 'another version'} (it learns "
                        f"between snapshots)", True)
            return f"recorded {d.base}; replayed {d.other}", False
        if d.base_raw is None or d.other_raw is None:
            return ("one side had not placed it yet (a new process is placed by the next "
                    "plan)", True)
        return (f"recorded {d.base} ({d.base_raw.reason}); replayed {d.other} "
                f"({d.other_raw.reason})", False)


def _policy_explainer(base: str, other: str) -> Callable[[Difference], tuple[str, bool]]:
    def explain(d: Difference) -> tuple[str, bool]:
        b = getattr(d.base_raw, "reason", "") or ""
        o = getattr(d.other_raw, "reason", "") or ""
        return f"{base}: {b or d.base}; {other}: {o or d.other}", True
    return explain


class ReplayRun:
    """One replay, set up from the history and run by ``run``."""

    def __init__(self, cursor: Cursor, settings: Settings, request: ReplayRequest,
                 now: float) -> None:
        self.settings, self.request = settings, request
        self.window = HistoryWindow(cursor, request.host, request.t_from, request.t_to)
        try:
            self.window.check(settings.storage.raw_retention_h, now,
                              preferred_host=settings.host)
        except WindowError as exc:
            raise ReplayError(str(exc)) from None
        self.host = self.window.host
        self.start = self.window.start_state(
            class_lookback_s=2 * settings.classifier.heartbeat_s + 10)
        self.recorded_settings, self.config_note = _recorded_settings(
            self.start.configuration, settings)
        recorded = self.start.configuration
        self.rules_changed = bool(
            recorded is not None and recorded.rules_sha256
            and recorded.rules_sha256 != self.recorded_settings.classifier.rules_sha256())
        if self.rules_changed:
            self.config_note += (f"; its rule file "
                                 f"{self.recorded_settings.classifier.rules_file} has changed "
                                 f"since, and is replayed as it is now")
        if self.start.topology is None or self.start.topology.data.topology is None:
            raise ReplayError(f"no CPU topology of host {self.host} was recorded before "
                              f"{iso(request.t_to)}: a plan needs the host's CPUs")
        try:
            self.topology = Topology.from_dict(self.start.topology.data.topology)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"the recorded topology of host {self.host} cannot be read "
                              f"({exc})") from None
        self.tolerance_s = self.recorded_settings.allocator.interval_s + 2 * (
            self.recorded_settings.collector.interval_s)
        self.model_note = ""
        self.labels_in_window: list[tuple[float, Any]] = []
        self.config_changes: list[float] = []
        self.command_times: list[float] = []
        self.recorded = RecordedRun("recorded", self.recorded_settings, self.host)
        self.recorded.start_from(self.start.last_plan, self.start.classes)
        self.base, self.other, explain = self._sides()
        self.comparison = Comparison(
            self.base, self.other, request.t_from, request.t_to, self.tolerance_s,
            explain, interval_s=self.recorded_settings.collector.interval_s)

    # --- setting up the sides ----------------------------------------------------------------

    def _sides(self) -> tuple[Side, Side, Callable[[Difference], tuple[str, bool]]]:
        r = self.request
        if r.shadow:
            known = self.window.shadow_policies()
            if r.shadow not in known:
                raise ReplayError(f"no plans of a shadow policy {r.shadow!r} are recorded for "
                                  f"host {self.host}; shadow policies recorded: "
                                  f"{', '.join(known) or 'none'} (corelane up --shadow "
                                  f"NAME=FILE runs one)")
            shadow = RecordedRun(r.shadow, self.recorded_settings, self.host, shadow=r.shadow)
            shadow.start_from(self.window.last_plan(r.shadow)[0], self.start.classes)
            return self.recorded, shadow, _policy_explainer("live", r.shadow)
        if r.policy is None:
            replayed = self._policy_run(Policy("replayed", self.recorded_settings))
            return self.recorded, replayed, _Explainer(self)
        base = r.against or Policy("recorded config", self.recorded_settings)
        if base.name == r.policy.name:
            base = Policy(base.name + " (base)", base.settings)
        return (self._policy_run(base), self._policy_run(r.policy),
                _policy_explainer(base.name, r.policy.name))

    def _model(self, settings: Settings) -> OnlineModel:
        cfg = settings.classifier
        if self.request.fresh_model:
            self.model_note = "an untrained model that learns as it goes"
            return OnlineModel(cfg.model, drift_delta=cfg.drift_delta)
        model = model_shelf(self.settings).at(self.request.t_from)
        if model is None or model.kind != cfg.model:
            self.model_note = (f"no {cfg.model} model version from before the window "
                               f"(an untrained one)")
            return OnlineModel(cfg.model, drift_delta=cfg.drift_delta)
        self.model_note = (f"model v{model.version} (learned until "
                           f"{iso(model.learned_until or 0)}), not learning")
        return model

    def _policy_run(self, policy: Policy) -> PolicyRun:
        settings = copy.deepcopy(policy.settings)
        model = self._model(settings)
        if not self.request.fresh_model:
            settings.classifier.learn = False    # the model that stood, as it stood
        try:
            rules = load_rule_set(settings)
        except RulesError as exc:
            raise ReplayError(f"policy {policy.name}: {exc}") from None
        run = PolicyRun(policy.name, settings, self.host, model, rules,
                        housekeeping_pids=self.recorded.own_pids)
        run.planner.on_host_sample(self.start.topology)
        for event in self.start.labels:
            run.classifiers.on_label(event)
        for event in self.start.commands:
            run.planner.on_command(event)
        if self.start.strategy is not None:
            run.planner.on_strategy(self.start.strategy)
        run.start_from(self.start.last_plan, self.topology, self.start.last_plan_ts)
        return run

    def _policy_runs(self) -> list[PolicyRun]:
        return [s for s in (self.base, self.other) if isinstance(s, PolicyRun)]

    # --- running -----------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        runs = self._policy_runs()
        if runs:
            for event in self.window.warm_up(self.recorded_settings.classifier.window_s):
                for run in runs:
                    run.warm(event)
            self._seed(runs)
        types = ["process_samples", "host_sample", "container_samples", "label", "command",
                 "strategy", "configuration", "classifications", "decisions"]
        if self.request.shadow:
            types.append("shadow_decisions")
        sides = [self.recorded] + [s for s in (self.base, self.other)
                                   if s is not self.recorded]
        index = {id(self.base): 0, id(self.other): 1}
        span = self.request.t_to - self.request.t_from
        sweep: list[ProcessSample] = []
        batch = None
        count = 0
        for event in self.window.events(types):
            self._note(event)
            for side in sides:
                moves = side.feed(event)
                if moves and id(side) in index:
                    self.comparison.moved(index[id(side)], moves, event.ts)
            if event.type == "process_samples" and not event.data.partial:
                data = event.data
                if data.batch != batch:
                    batch, sweep = data.batch, []
                sweep.extend(data.samples)
                if data.chunk == data.chunks - 1:
                    self.comparison.sweep(event.ts, sweep)
                    sweep = []
            count += 1
            if progress is not None and count % 500 == 0:
                progress(min(1.0, (event.ts - self.request.t_from) / span))
        self.comparison.finish()
        if progress is not None:
            progress(1.0)
        return self.report()

    def _seed(self, runs: list[PolicyRun]) -> None:
        """The classes in force at the window's start, as the live classifier held them."""
        for run in runs:
            run.classifiers.seed(self.host, self.start.classes)
            run.planner.take_classes(self.host, [c for _, c in self.start.classes.values()])

    def _note(self, event: Envelope) -> None:
        if event.type == "label":
            self.labels_in_window.append((event.ts, event.data))
        elif event.type == "configuration" and event.data.policy == "live":
            if self.start.configuration is None or \
                    event.data.hash != self.start.configuration.hash:
                self.config_changes.append(event.ts)
        elif event.type == "command":
            self.command_times.append(event.ts)

    def report(self) -> dict[str, Any]:
        r = self.request
        body = self.comparison.report()
        if r.shadow:
            compared = f"the live decisions against shadow policy {r.shadow}'s"
        elif r.policy is None:
            compared = "the recorded decisions against the recorded configuration replayed"
        else:
            compared = f"{self.base.name} against {self.other.name}"
        return {
            "host": self.host, "from": iso(r.t_from), "to": iso(r.t_to),
            "compared": compared, "base": self.base.name, "other": self.other.name,
            "configuration": self.config_note,
            "model": self.model_note or "not used (nothing re-run)",
            "fresh_model": r.fresh_model,
            **body,
        }


def request_from(t_from: str, t_to: str | None = None, *, host: str | None = None,
                 policy: tuple[str, str] | None = None, against: tuple[str, str] | None = None,
                 fresh_model: bool = False, shadow: str | None = None,
                 now: datetime | None = None) -> ReplayRequest:
    """A request from what a person gives: times as written (ISO 8601, -15m, epoch
    seconds), and policies as (file name, YAML text). Raises ReplayError saying what is
    wrong."""
    try:
        start = parse_when(t_from, now)
        end = parse_when(t_to or "now", now)
    except TimeError as exc:
        raise ReplayError(str(exc)) from None
    if against is not None and policy is None:
        raise ReplayError("--against names the base to compare a --policy with: give "
                          "--policy too")
    if shadow and (policy is not None or fresh_model):
        raise ReplayError("--shadow compares a shadow policy's recorded decisions with the "
                          "live ones: it takes no --policy, --against or --fresh-model")

    def read(given: tuple[str, str] | None) -> Policy | None:
        if given is None:
            return None
        name, text = given
        try:
            return Policy(Path(name).stem or name, parse_settings(text, name))
        except ConfigError as exc:
            raise ReplayError(" ".join(str(exc).split())) from None

    def epoch(moment: datetime) -> float:
        return moment.replace(tzinfo=timezone.utc).timestamp()

    return ReplayRequest(t_from=epoch(start), t_to=epoch(end), host=host or None,
                         policy=read(policy), against=read(against), fresh_model=fresh_model,
                         shadow=shadow or None)


def replay(cursor: Cursor, settings: Settings, request: ReplayRequest, now: float,
           progress: Progress | None = None) -> dict[str, Any]:
    """Run one replay; raises ReplayError (one line) for one that cannot run."""
    return ReplayRun(cursor, settings, request, now).run(progress)
