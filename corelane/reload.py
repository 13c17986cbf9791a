"""A configuration reload (SIGHUP): what changed, what takes effect now, what waits for the
next start.

The new file is checked like at start (its keys, then the rules file it names); a file
that cannot be used is refused with its one-line reason and the running configuration
stays. Of a usable one, the allocator's policy, modes, schedule and thermal settings, the
applier's scope and protections, the classifier's rules, the alert rules and the log level
take effect at once (the parts read them from the one shared ``Settings``); everything else
(the broker, the API, the history, the collector, the topology, the webhooks, the closed
loop, the model, the tier groups' root) is reported as waiting for a restart.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agents.alerter import AlerterAgent
from agents.classification.hosts import HostClassifiers
from agents.classification.rules import RuleSet, RulesError, load_rule_set
from pipeline.bus import Publisher
from pipeline.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

# Keys that take effect at once, as dotted prefixes of the settings.
LIVE = ("log_level", "allocator", "applier.scope", "applier.protected",
        "applier.respect_overrides", "applier.reassert_s", "applier.protected_cgroups",
        "classifier.rules_file", "alerts.rules")


class ReloadRefused(Exception):
    """The new configuration cannot be used; the running one stays."""


@dataclass(frozen=True)
class Reload:
    settings: Settings
    rules: RuleSet
    live: tuple[str, ...]                    # changed keys that take effect now
    at_restart: tuple[str, ...]              # changed keys that wait for the next start


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaves(inner, f"{path}.{key}" if path else key)
    else:
        yield path, value


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted keys whose values differ (lists and mappings of rules compare whole)."""
    before = dict(_leaves(old.model_dump(mode="json")))
    after = dict(_leaves(new.model_dump(mode="json")))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def is_live(key: str) -> bool:
    return any(_under(key, prefix) for prefix in LIVE)


def prepare(current: Settings) -> Reload:
    """Read and check the file ``current`` came from again; raises ReloadRefused."""
    try:
        new = load_settings(None if current.source == "<defaults>" else current.source)
    except ConfigError as exc:
        raise ReloadRefused(str(exc)) from None
    try:
        rules = load_rule_set(new)
    except RulesError as exc:
        raise ReloadRefused(f"{exc} (classifier.rules_file)") from None
    keys = changed_keys(current, new)
    if new.classifier.rules_sha256() != current.classifier.rules_sha256():
        keys = sorted({*keys, "classifier.rules_file"})
    return Reload(new, rules, tuple(k for k in keys if is_live(k)),
                  tuple(k for k in keys if not is_live(k)))


def take(current: Settings, reload: Reload) -> None:
    """Put the live keys of ``reload`` into ``current``, which every part shares."""
    for prefix in LIVE:
        if not any(_under(key, prefix) for key in reload.live):
            continue
        *owners, name = prefix.split(".")
        target: Any = current
        source: Any = reload.settings
        for owner in owners:
            target, source = getattr(target, owner), getattr(source, owner)
        setattr(target, name, getattr(source, name))
    if "log_level" in reload.live:
        logging.getLogger().setLevel(reload.settings.log_level.upper())


async def reload_running(settings: Settings, publisher: Publisher,
                         classifier: HostClassifiers | None,
                         alerter: AlerterAgent | None) -> None:
    """SIGHUP: read the configuration again, take what can change now, publish the
    configuration in force, and say what waits for a restart. ``classifier`` and
    ``alerter`` are None where this process's role does not run them."""
    try:
        reload = await asyncio.to_thread(prepare, settings)
    except ReloadRefused as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    take(settings, reload)
    if "classifier.rules_file" in reload.live and classifier is not None:
        classifier.use_rules(reload.rules)
    if any(k.startswith("alerts.rules") for k in reload.live) and alerter is not None:
        await alerter.use_rules(settings.alerts.rules)
    config = await publisher.publish(settings.configuration())
    now = ", ".join(reload.live) or "nothing changed"
    later = f"; at the next start: {', '.join(reload.at_restart)}" if reload.at_restart else ""
    log.info("configuration %s reloaded from %s: %s%s", config.data.hash[:12],
             settings.source, now, later)
