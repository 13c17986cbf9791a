"""The alerter agent: checks the configured alert rules (``alerts.rules``) against each
host's figures as its events arrive, and publishes each alert that opens or resolves on
the alerts topic.

A host's figures are checked at each of its host samples (once a sweep), with the
sample's time as the clock, so a rule's duration is counted in the host's time. The
recorder's lag is this instance's own figure, checked on a timer.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agents.alerting.book import AlertBook
from agents.alerting.figures import HostFigures
from agents.contract import AgentStats, Handler, Position, Timer, event_health
from pipeline.bus import Publisher, read_tail, topic_types
from pipeline.events import Alert, Envelope
from pipeline.health import PartHealth
from pipeline.settings import AlertRule, Settings
from pipeline.stats import counter, gauge

LOCAL_SIGNALS = ("recorder_lag",)
# How far back an unresolved alert of a previous run is looked for.
ADOPT_SPAN_S = 7 * 86400.0


@dataclass
class AlerterStats(AgentStats):
    checks: int = counter("times a host's figures were checked against the rules")
    opened: int = counter("alerts opened by the rules")
    resolved: int = counter("alerts the rules resolved")
    open_alerts: int = gauge("alerts of the rules open now", 0)


class AlerterAgent:
    name = "alerter"

    def __init__(self, settings: Settings, publisher: Publisher,
                 recorder_lag: Callable[[], float | None] = lambda: None) -> None:
        """``recorder_lag`` is this instance's recorder's lag in seconds (None: none runs
        here, or it has read nothing yet)."""
        self.settings = settings
        self.publisher = publisher
        self.recorder_lag = recorder_lag
        self.book = AlertBook(settings.alerts.rules)
        self.hosts: dict[str, HostFigures] = {}
        self.stats = AlerterStats()

    def handlers(self) -> Sequence[Handler]:
        return [Handler("host_sample", self._host_sample),
                Handler("process_samples", self._samples),
                Handler("decisions", self._plan)]

    def timers(self) -> Sequence[Timer]:
        return [Timer("local figures", self.settings.collector.interval_s, self._local)]

    def figures(self, host: str) -> HostFigures:
        return self.hosts.setdefault(host, HostFigures())

    async def _host_sample(self, event: Envelope, at: Position) -> None:
        figures = self.figures(event.host)
        figures.take_host_sample(event.data)
        signals = [s for s in {r.signal for r in self.book.rules} if s not in LOCAL_SIGNALS]
        await self._publish(event.host, self.book.check(event.host, figures.figures(),
                                                        event.ts, signals))

    async def _samples(self, event: Envelope, at: Position) -> None:
        self.figures(event.host).take_sweep(event.data, event.ts)

    async def _plan(self, event: Envelope, at: Position) -> None:
        self.figures(event.host).take_plan(event.data)

    async def _local(self) -> None:
        lag = self.recorder_lag()
        host = self.publisher.stamper.host
        figures = {} if lag is None else {"recorder_lag": {"recorder": lag}}
        await self._publish(host, self.book.check(host, figures, time.time(), LOCAL_SIGNALS))

    async def use_rules(self, rules: Sequence[AlertRule]) -> None:
        """The rules of a reloaded configuration, from now on."""
        await self._publish(self.publisher.stamper.host, self.book.use_rules(rules, time.time()))

    async def _publish(self, host: str, changes: list[Alert]) -> None:
        self.stats.checks += 1
        if changes:
            stamp = self.publisher.stamper.stamp
            await self.publisher.publish_many([stamp(alert, host=host) for alert in changes])
            opened = sum(alert.state == "open" for alert in changes)
            self.stats.opened += opened
            self.stats.resolved += len(changes) - opened
        self.stats.open_alerts = len(self.book.open)

    async def warm_up(self) -> None:
        """Alerts the rules opened in a previous run and never resolved are taken up again:
        they resolve when their figure clears, or at once where it is no longer measured,
        rather than stay open in the history for ever."""
        last: dict[str, Envelope] = {}
        async for event in read_tail(self.settings, "alert",
                                     topic_types(self.settings, ["alert"]), ADOPT_SPAN_S):
            last[event.data.id] = event
        rules = {r.name for r in self.book.rules}
        for event in last.values():
            alert: Alert = event.data
            if alert.state == "open" and alert.rule in rules and "subject" in alert.details:
                self.book.adopt(event.host, alert)
        self.stats.open_alerts = len(self.book.open)

    def health(self, now: float) -> PartHealth:
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        pass
