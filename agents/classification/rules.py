"""Rules from YAML and explicit labels.

Rules (see ``config/rules/example.yml`` for the format) are ordered; the first rule whose
every ``match`` key and every ``when`` bound holds wins. ``match`` tests who a process is
(name, command line, user, cgroup, container ...); ``when`` tests what it does, as bounds
on its window's features (``FEATURES``). A rule sets a ``class`` (its tier comes from the
class map unless the rule also sets ``tier``), or only a ``tier``: then the tier is pinned
while the class is still whatever the model says (``unclassified`` until it says
something), and such a match teaches the model nothing.

Two kinds of rule, by what they test:
- identity rules (a ``match``, with or without ``when``) are statements about a process
  and outrank the model, like labels;
- behaviour priors (only ``when``) are educated guesses for a host with no labels: they
  rank below a confident model, above a hesitant one, and (with ``learn``) teach the model
  so it generalises past them. Identity rules are tried before priors whatever the order
  in the file.

Labels (``Label`` events) name a class for one process (pid + start time) or for every
process whose name or command line matches a regular expression. The newest label that
applies wins; a label with class ``auto`` removes the label it names, handing the process
back to rules and the model.

Only ``load_rules`` reads a file; ``system_user_name`` is the one lookup of the host's user
database, and it is only the default, replaceable, way to give ``user:`` names to uids.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, NamedTuple

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator,
)

from agents.classification.features import FEATURES
from pipeline.events import Label, ProcessSample
from pipeline.patterns import check_regex
from pipeline.settings import Settings
from pipeline.vocabulary import AUTO, DEFAULT_TIER_OF, TIERS


class RulesError(Exception):
    """A rule file that cannot be used; the message names the file, the rule and the key."""


def _invalid(problems: list[str]) -> RulesError:
    # One problem is one line; several are a line each under the first.
    if len(problems) == 1:
        return RulesError(f"invalid rules: {problems[0]}")
    return RulesError("invalid rules:\n  " + "\n  ".join(problems))


class LabelError(ValueError):
    """A label that cannot be applied; the message says why."""


class RuleMatch(BaseModel):
    """What a rule matches. Every key given must match; regexes are searched (anchor with
    ^ and $ for a whole-string match)."""
    model_config = ConfigDict(extra="forbid")
    name: str | None = None                  # regex over the process name (comm)
    cmdline: str | None = None               # regex over the command line
    exe: str | None = None                   # regex over the first word of the command line
    user: int | str | None = None            # uid, or user name
    cgroup: str | None = None                # regex over the cgroup path
    container: str | None = None             # regex over the container's name or id
    container_label: dict[str, str] | None = None  # label key -> regex over its value
    parent_name: str | None = None           # regex over the parent's name
    parent_pid: int | None = None

    @field_validator("name", "cmdline", "exe", "cgroup", "container", "parent_name")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return check_regex(value)

    @field_validator("container_label")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, pattern in (value or {}).items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"label {key!r}: not a valid regular expression ({exc})") \
                    from None
        return value


class Bound(BaseModel):
    """Inclusive bounds on one feature: ``min <= value <= max`` (either may be left out)."""
    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        for value in (self.min, self.max):
            if value is not None and not math.isfinite(value):
                raise ValueError("bounds must be finite numbers (leave a side out instead)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: nothing matches")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1)
    match: RuleMatch | None = None
    when: dict[str, Bound] | None = None     # feature name -> bounds on the window's value
    cls: str | None = Field(None, alias="class")
    tier: str | None = None
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    learn: bool = True                       # whether matches teach the model

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None and value not in TIERS:
            raise ValueError(f"unknown tier {value!r}; tiers are {', '.join(TIERS)}")
        return value


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = []


@dataclass(frozen=True, slots=True)
class RuleHit:
    """The first rule that matched a process. ``prior`` is True for a behaviour prior (a
    rule with only ``when``), which ranks below a confident model."""
    name: str
    cls: str | None
    tier: str | None
    confidence: float
    learn: bool
    prior: bool = False


class ContainerInfo:
    """What rules may know about a container: its name and labels."""
    __slots__ = ("name", "labels")

    def __init__(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.labels = dict(labels or {})

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ContainerInfo) and other.name == self.name
                and other.labels == self.labels)


@dataclass(slots=True)
class MatchContext:
    """Lookups a rule may need beyond the sample itself, all injectable for tests/replay."""
    user_name: Callable[[int], str | None] = lambda uid: None
    process_name: Callable[[int], str | None] = lambda pid: None
    container: Callable[[str], ContainerInfo | None] = lambda cid: None


@lru_cache(maxsize=4096)
def system_user_name(uid: int) -> str | None:
    """The host's name for ``uid`` (from its user database), or None."""
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern is not None else None


_FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURES)}
_NO_MATCH: Final[RuleMatch] = RuleMatch()


class CompiledRule:
    """One rule, ready to test: its identity matchers and its feature bounds."""
    __slots__ = ("hit", "has_identity", "bounds", "name", "cmdline", "exe", "uid", "user",
                 "cgroup", "container", "container_label", "parent_name", "parent_pid")

    def __init__(self, rule: Rule) -> None:
        m = rule.match if rule.match is not None else _NO_MATCH
        self.has_identity = bool(m.model_fields_set)
        self.hit = RuleHit(rule.name, rule.cls, rule.tier, rule.confidence, rule.learn,
                           prior=not self.has_identity)
        # (index in the feature vector, low, high): a few float compares per window.
        self.bounds: tuple[tuple[int, float, float], ...] = tuple(
            (_FEATURE_INDEX[key],
             -math.inf if b.min is None else b.min,
             math.inf if b.max is None else b.max)
            for key, b in (rule.when or {}).items())
        self.name = _compiled(m.name)
        self.cmdline = _compiled(m.cmdline)
        self.exe = _compiled(m.exe)
        user = m.user
        if isinstance(user, str) and user.isdigit():
            user = int(user)
        self.uid = user if isinstance(user, int) else None
        self.user = user if isinstance(user, str) else None
        self.cgroup = _compiled(m.cgroup)
        self.container = _compiled(m.container)
        self.container_label = ({k: re.compile(v) for k, v in m.container_label.items()}
                                if m.container_label else None)
        self.parent_name = _compiled(m.parent_name)
        self.parent_pid = m.parent_pid

    def when_matches(self, vector: Sequence[float] | None) -> bool:
        """Whether every ``when`` bound holds for ``vector`` (FEATURES order). A rule with
        bounds never matches without features: a process too young to have a window."""
        if not self.bounds:
            return True
        if vector is None:
            return False
        for i, lo, hi in self.bounds:
            if not lo <= vector[i] <= hi:
                return False
        return True

    def matches(self, s: ProcessSample, ctx: MatchContext) -> bool:
        """Whether the identity matchers (``match``) hold; True when there are none."""
        if self.name is not None and not self.name.search(s.name):
            return False
        if self.cmdline is not None and not self.cmdline.search(s.cmdline):
            return False
        if self.exe is not None:
            exe = s.cmdline.split(" ", 1)[0] if s.cmdline else ""
            if not self.exe.search(exe):
                return False
        if self.uid is not None and s.uid != self.uid:
            return False
        if self.user is not None and ctx.user_name(s.uid) != self.user:
            return False
        if self.cgroup is not None and not self.cgroup.search(s.cgroup):
            return False
        if self.parent_pid is not None and s.ppid != self.parent_pid:
            return False
        if self.parent_name is not None:
            parent = ctx.process_name(s.ppid)
            if parent is None or not self.parent_name.search(parent):
                return False
        if self.container is not None or self.container_label is not None:
            if not s.container_id:
                return False
            info = ctx.container(s.container_id)
            if self.container is not None and not (
                    self.container.search(s.container_id)
                    or (info is not None and self.container.search(info.name))):
                return False
            if self.container_label is not None:
                if info is None:
                    return False
                for key, pattern in self.container_label.items():
                    value = info.labels.get(key)
                    if value is None or not pattern.search(value):
                        return False
        return True


class RuleSet:
    """Ordered rules. ``match_identity`` gives the first identity rule that matches,
    ``match_prior`` the first behaviour prior; ``match`` the first rule of either kind in
    file order (features are the window's ``feature_vector``; without them, no rule with
    ``when`` matches)."""

    def __init__(self, rules: Iterable[Rule] = (), source: str = "<rules>") -> None:
        self.rules = list(rules)
        self.source = source
        self._compiled = [CompiledRule(rule) for rule in self.rules]
        self.identity_rules = tuple(r for r in self._compiled if r.has_identity)
        self.priors = tuple(r for r in self._compiled if not r.has_identity)
        # Identity rules without bounds depend on the sample's identity alone, so their
        # result may be cached per process until its name, parent or cgroup changes.
        self.identity_uses_features = any(r.bounds for r in self.identity_rules)

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, sample: ProcessSample, ctx: MatchContext | None = None,
              features: Sequence[float] | None = None) -> RuleHit | None:
        ctx = ctx or _NO_CONTEXT
        for rule in self._compiled:
            if rule.matches(sample, ctx) and rule.when_matches(features):
                return rule.hit
        return None

    def identity_candidates(self, sample: ProcessSample, ctx: MatchContext | None = None
                            ) -> tuple[CompiledRule, ...]:
        """The identity rules whose ``match`` holds, in order (their bounds untested)."""
        ctx = ctx or _NO_CONTEXT
        return tuple(r for r in self.identity_rules if r.matches(sample, ctx))

    @staticmethod
    def first_when(candidates: Iterable[CompiledRule],
                   features: Sequence[float] | None) -> RuleHit | None:
        for rule in candidates:
            if rule.when_matches(features):
                return rule.hit
        return None

    def match_identity(self, sample: ProcessSample, ctx: MatchContext | None = None,
                       features: Sequence[float] | None = None) -> RuleHit | None:
        return self.first_when(self.identity_candidates(sample, ctx), features)

    def match_prior(self, features: Sequence[float] | None) -> RuleHit | None:
        if features is None:
            return None
        for rule in self.priors:
            if rule.when_matches(features):
                return rule.hit
        return None


_NO_CONTEXT = MatchContext()


def _rule_error(origin: str, raw: Any, exc: ValidationError) -> RulesError:
    lines = []
    items = raw.get("rules") if isinstance(raw, dict) else None
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            name = None
            if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
                name = items[index].get("name")
            where = f"rule {index + 1}" + (f" ({name!r})" if name else "") + ": "
            loc = loc[2:]
        key = ".".join(str(part) for part in loc).replace("cls", "class") or "(the rule)"
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = "unknown key (see config/rules/example.yml for the keys)"
        elif error["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{origin}: {where}key '{key}': {msg}")
    return _invalid(lines)


def parse_rules(raw: Any, origin: str = "<rules>",
                classes: Iterable[str] = DEFAULT_TIER_OF) -> RuleSet:
    """Validate already-parsed YAML (``{"rules": [...]}``) into a RuleSet."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesError(f"{origin}: expected a mapping with a 'rules' list at the top level, "
                         f"got {type(raw).__name__}")
    try:
        parsed = RuleFile.model_validate(raw)
    except ValidationError as exc:
        raise _rule_error(origin, raw, exc) from None
    known = set(classes)
    problems = []
    for index, rule in enumerate(parsed.rules):
        where = f"{origin}: rule {index + 1} ({rule.name!r})"
        if rule.cls is None and rule.tier is None:
            problems.append(f"{where}: sets neither 'class' nor 'tier'; give one or both")
        if rule.cls is not None and rule.cls not in known:
            problems.append(f"{where}: key 'class': unknown class {rule.cls!r}; classes "
                            f"are {', '.join(sorted(known))}")
        if rule.match is None and rule.when is None:
            problems.append(f"{where}: gives neither 'match' (who a process is) nor 'when' "
                            f"(what it does); give one or both")
        if rule.match is not None and not rule.match.model_fields_set:
            problems.append(f"{where}: key 'match': matches nothing; give at least one of "
                            f"{', '.join(RuleMatch.model_fields)}")
        if rule.when is not None and not rule.when:
            problems.append(f"{where}: key 'when': tests nothing; give at least one "
                            f"feature with bounds, e.g. when: {{cpu_mean: {{min: 0.5}}}}")
        for key in rule.when or {}:
            if key not in _FEATURE_INDEX:
                close = difflib.get_close_matches(key, FEATURES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{where}: key 'when.{key}': unknown feature {key!r}{hint}; "
                                f"features are {', '.join(FEATURES)}")
        if rule.match is None and rule.when and rule.cls is None:
            problems.append(f"{where}: a behaviour prior (only 'when') must set a 'class'; "
                            f"to pin a tier by behaviour, add a 'match' as well")
    names = [rule.name for rule in parsed.rules]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{origin}: rule name {name!r} is used more than once; names must "
                        f"be unique so classifications can say which rule fired")
    if problems:
        raise _invalid(problems)
    return RuleSet(parsed.rules, source=origin)


def load_rules(path: str | os.PathLike[str],
               classes: Iterable[str] = DEFAULT_TIER_OF) -> RuleSet:
    """Read and validate a YAML rule file; raises RulesError with a person's message."""
    try:
        with open(path) as inp:
            text = inp.read()
    except OSError as exc:
        raise RulesError(f"cannot read rule file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RulesError(f"{path}: not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    return parse_rules(raw, str(path), classes)


# --- labels ---------------------------------------------------------------------------

class LabelHit(NamedTuple):
    """The label that applies to a process: a class or a tier or both (None: as judged)."""
    cls: str | None
    label_id: str
    tier: str | None = None


@dataclass(slots=True)
class _Entry:
    seq: int
    cls: str | None
    label_id: str
    tier: str | None = None


@dataclass(slots=True)
class _RegexEntry:
    seq: int
    cls: str | None
    label_id: str
    pattern: re.Pattern[str]
    tier: str | None = None


@dataclass
class LabelBook:
    """Explicit labels. ``lookup(sample)`` gives a ``LabelHit`` or None.

    A label with a pid and start time targets exactly that identity. A label with a pid
    and no start time binds to the first process with that pid looked up after it arrives,
    and never to a later process that reuses the pid. A ``match`` label applies to every
    process whose name or command line the regex finds; the same regex again replaces it.
    Among labels that apply to one process, the newest wins.
    """
    classes: Iterable[str] = field(default_factory=lambda: tuple(DEFAULT_TIER_OF))
    _seq: int = 0
    _by_identity: dict[tuple[int, int], _Entry] = field(default_factory=dict)
    _pending_pid: dict[int, _Entry] = field(default_factory=dict)
    _regex: dict[str, _RegexEntry] = field(default_factory=dict)
    _regex_cache: dict[tuple[str, str], _RegexEntry | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = frozenset(self.classes)

    def __len__(self) -> int:
        return len(self._by_identity) + len(self._pending_pid) + len(self._regex)

    def apply(self, label: Label, label_id: str) -> None:
        """Record a label event (``label_id``: its envelope id); raises LabelError."""
        if label.cls is None and label.tier is None:
            raise LabelError(f"label {label_id}: give a class or a tier")
        if label.cls is not None and label.cls != AUTO and label.cls not in self.classes:
            raise LabelError(f"label {label_id}: unknown class {label.cls!r}; classes are "
                             f"{', '.join(sorted(self.classes))} (or {AUTO!r} to "
                             f"remove a label)")
        if label.tier is not None and label.tier not in TIERS:
            raise LabelError(f"label {label_id}: unknown tier {label.tier!r}; tiers are "
                             f"{', '.join(TIERS)}")
        if (label.pid is None) == (label.match is None):
            raise LabelError(f"label {label_id}: give either a pid or a match regex, "
                             f"not {'both' if label.pid is not None else 'neither'}")
        self._seq += 1
        entry = _Entry(self._seq, label.cls, label_id, label.tier)
        if label.pid is not None:
            if label.start_time is None:
                target = self._pending_pid
                key: Any = label.pid
            else:
                target = self._by_identity
                key = (label.pid, label.start_time)
            if label.cls == AUTO:
                target.pop(key, None)
                if label.start_time is None:
                    for ident in [k for k in self._by_identity if k[0] == label.pid]:
                        del self._by_identity[ident]
            else:
                target[key] = entry
            return
        assert label.match is not None
        try:
            pattern = re.compile(label.match)
        except re.error as exc:
            raise LabelError(f"label {label_id}: match {label.match!r} is not a valid "
                             f"regular expression ({exc})") from None
        if label.cls == AUTO:
            self._regex.pop(label.match, None)
        else:
            self._regex[label.match] = _RegexEntry(self._seq, label.cls, label_id, pattern,
                                                   label.tier)
        self._regex_cache.clear()

    def lookup(self, sample: ProcessSample) -> LabelHit | None:
        key = (sample.pid, sample.start_time)
        best: _Entry | _RegexEntry | None = self._by_identity.get(key)
        if self._pending_pid:
            pending = self._pending_pid.pop(sample.pid, None)
            if pending is not None:
                self._by_identity[key] = best = pending
        if self._regex:
            text_key = (sample.name, sample.cmdline)
            try:
                hit = self._regex_cache[text_key]
            except KeyError:
                hit = None
                for entry in self._regex.values():
                    if (entry.pattern.search(sample.name)
                            or entry.pattern.search(sample.cmdline)) and (
                            hit is None or entry.seq > hit.seq):
                        hit = entry
                if len(self._regex_cache) > 65536:
                    self._regex_cache.clear()
                self._regex_cache[text_key] = hit
            if hit is not None and (best is None or hit.seq > best.seq):
                best = hit
        return LabelHit(best.cls, best.label_id, best.tier) if best is not None else None

    def forget(self, pid: int, start_time: int) -> None:
        """Drop a gone identity's label (a pid label never outlives its process)."""
        self._by_identity.pop((pid, start_time), None)


def load_rule_set(settings: Settings) -> RuleSet:
    """The rule set ``classifier.rules_file`` names (none without one); raises RulesError."""
    cfg = settings.classifier
    return load_rules(cfg.rules_file, classes=cfg.classes) if cfg.rules_file else RuleSet()
