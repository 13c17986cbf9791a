"""Which alerts are open, from the figures over time: each rule opens an alert per subject
whose figure stayed above its threshold for its duration, and resolves it once the figure
stayed below its clear level for ``clear_for_s``, or is no longer measured (a tier that
emptied, a host sample without PSI)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.events import Alert, open_alert, resolve_alert
from pipeline.settings import ALERT_SIGNALS, AlertRule

UNITS = {signal: unit for signal, (unit, _) in ALERT_SIGNALS.items()}


@dataclass
class _Track:
    since: float | None = None               # above the threshold (closed) / below the clear
    alert: Alert | None = None               # level (open) since then


def _describe(rule: AlertRule, subject: str, value: float) -> str:
    unit = UNITS[rule.signal]
    what = rule.signal.replace("_", " ")
    return (f"{rule.name}: {what} of {subject} at {value:.1f} {unit}, above {rule.above:g} "
            f"{unit} for {rule.for_s:g} s")


class AlertBook:
    """The open alerts of every rule, host and subject."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self.rules = list(rules)
        self._tracks: dict[tuple[str, str, str], _Track] = {}

    @property
    def open(self) -> list[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def use_rules(self, rules: Sequence[AlertRule], now: float) -> list[Alert]:
        """Check ``rules`` from now on; the open alerts of a rule no longer among them (or
        whose rule changed) resolve, and a changed rule starts afresh."""
        kept = {r.name: r for r in rules}
        out = []
        for key, track in list(self._tracks.items()):
            old = next((r for r in self.rules if r.name == key[0]), None)
            if kept.get(key[0]) == old and old is not None:
                continue
            if track.alert is not None:
                out.append(resolve_alert(track.alert, now, f"{key[0]}: the rule was changed "
                                                           f"or removed by a reload"))
            del self._tracks[key]
        self.rules = list(rules)
        return out

    def adopt(self, host: str, alert: Alert) -> None:
        """Hold ``alert`` (opened by an earlier book) open until its figure clears."""
        self._tracks[(alert.rule, host, alert.details["subject"])] = _Track(alert=alert)

    def check(self, host: str, figures: Mapping[str, Mapping[str, float]], now: float,
              signals: Sequence[str] | None = None) -> list[Alert]:
        """The transitions ``figures`` (signal -> subject -> value, as of ``now``) make for
        ``host``. Only the rules of ``signals`` are checked (all by default): a source that
        measures some signals says nothing of the others."""
        out: list[Alert] = []
        for rule in self.rules:
            if signals is not None and rule.signal not in signals:
                continue
            values = figures.get(rule.signal, {})
            if rule.tiers:
                values = {s: v for s, v in values.items() if s in rule.tiers}
            tracked = {k[2] for k in self._tracks if k[:2] == (rule.name, host)}
            for subject in sorted(tracked | values.keys()):
                change = self._step(rule, host, subject, values.get(subject), now)
                if change is not None:
                    out.append(change)
        return out

    def _step(self, rule: AlertRule, host: str, subject: str, value: float | None,
              now: float) -> Alert | None:
        key = (rule.name, host, subject)
        track = self._tracks.setdefault(key, _Track())
        if track.alert is None:
            if value is None or value <= rule.above:
                del self._tracks[key]
                return None
            track.since = now if track.since is None else track.since
            if now - track.since < rule.for_s:
                return None
            track.alert, track.since = open_alert(
                rule.name, _describe(rule, subject, value), now, severity=rule.severity,
                details={"host": host, "subject": subject, "signal": rule.signal,
                         "value": round(value, 3), "above": rule.above,
                         "clear_below": rule.clear_level, "for_s": rule.for_s,
                         "unit": UNITS[rule.signal]},
                alert_id=f"{rule.name}:{host}:{subject}:{int(now * 1000)}"), None
            return track.alert
        if value is not None and value >= rule.clear_level:
            track.since = None
            return None
        track.since = now if track.since is None else track.since
        if value is not None and now - track.since < rule.clear_for_s:
            return None
        unit = UNITS[rule.signal]
        why = (f"{rule.name}: {subject} no longer measured" if value is None else
               f"{rule.name}: {rule.signal.replace('_', ' ')} of {subject} back to "
               f"{value:.1f} {unit}, below {rule.clear_level:g} {unit}")
        resolved = resolve_alert(track.alert, now, why)
        del self._tracks[key]
        return resolved
