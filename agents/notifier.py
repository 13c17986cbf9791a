"""The notifier agent: posts every alert transition on the alerts topic (the rules', the
classifier's drift, the recorder's and the collector's) to the configured webhooks
(``alerts.webhooks``).

Each webhook has its own bounded queue and its own sender task: handling an alert only
queues it, so a slow or failing endpoint never slows corelane, nor another webhook. A post
that fails (no answer, or an answer that is not 2xx) is retried with back-off; one that
still fails is dropped and counted, as is the oldest waiting when a queue is full.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from agents.contract import AgentStats, Handler, Position, Timer, event_health
from pipeline.events import Alert, Envelope, encode
from pipeline.health import PartHealth, degraded
from pipeline.settings import Settings, WebhookSettings
from pipeline.stats import counter, note

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


@dataclass
class NotifierStats(AgentStats):
    posted: int = counter("alert transitions posted to a webhook")
    retried: int = counter("posts tried again after a failure")
    given_up: int = counter("posts dropped after every retry failed")
    dropped: int = counter("transitions dropped from a full webhook queue (the oldest)")
    last_post_error: str | None = note("what the last failed post said")


def slack_payload(event: Envelope) -> dict[str, Any]:
    """Slack-compatible JSON: one line of text, with the alert's fields beside it."""
    alert: Alert = event.data
    if alert.state == "resolved":
        text = f":white_check_mark: corelane on {event.host}: RESOLVED {alert.message}"
    else:
        text = f"{_ICON.get(alert.severity, '')} corelane on {event.host}: {alert.message}"
    return {"text": text, "username": "corelane",
            "attachments": [{"fields": [
                {"title": "rule", "value": alert.rule, "short": True},
                {"title": "state", "value": alert.state, "short": True},
                {"title": "severity", "value": alert.severity, "short": True},
                {"title": "alert", "value": alert.id, "short": False}]}]}


def payload(hook: WebhookSettings, event: Envelope) -> bytes:
    """The JSON body of a post: Slack-compatible, or the event itself."""
    return msgspec.json.encode(slack_payload(event)) if hook.format == "slack" else encode(event)


def backoff_s(hook: WebhookSettings, attempt: int) -> float:
    """How long to wait before retry number ``attempt`` (1, 2, ...): doubling, capped."""
    return min(hook.max_backoff_s, hook.backoff_s * 2 ** (attempt - 1))


class Webhook:
    """One endpoint: its queue and its sender task (started with the first alert)."""

    def __init__(self, hook: WebhookSettings, stats: NotifierStats) -> None:
        self.hook, self.stats = hook, stats
        self.waiting: deque[Envelope] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failing = False

    def offer(self, event: Envelope) -> None:
        if len(self.waiting) >= self.hook.queue:
            self.waiting.popleft()
            self.stats.dropped += 1
        self.waiting.append(event)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        async with httpx.AsyncClient(timeout=self.hook.timeout_s, trust_env=False) as client:
            while True:
                if not self.waiting:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._send(client, self.waiting.popleft())

    async def _send(self, client: httpx.AsyncClient, event: Envelope) -> None:
        body = payload(self.hook, event)
        for attempt in range(self.hook.retries + 1):
            if attempt:
                self.stats.retried += 1
                await asyncio.sleep(backoff_s(self.hook, attempt))
            try:
                answer = await client.post(self.hook.url, content=body,
                                           headers={"content-type": "application/json"})
                if 200 <= answer.status_code < 300:
                    self.stats.posted += 1
                    if self.failing:
                        log.info("webhook %s takes alerts again", self.hook.url)
                    self.failing = False
                    return
                problem = f"answered {answer.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.stats.last_post_error = f"{self.hook.url}: {problem}"
            if not self.failing:
                log.warning("webhook %s %s; retrying with back-off", self.hook.url, problem)
            self.failing = True
        self.stats.given_up += 1
        log.warning("webhook %s: alert %s dropped after %d tries", self.hook.url,
                    event.data.id, self.hook.retries + 1)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class NotifierAgent:
    name = "notifier"

    def __init__(self, settings: Settings) -> None:
        self.stats = NotifierStats()
        self.webhooks = [Webhook(h, self.stats) for h in settings.alerts.webhooks]

    def handlers(self) -> Sequence[Handler]:
        return [Handler("alert", self._alert)] if self.webhooks else []

    def timers(self) -> Sequence[Timer]:
        return []

    async def _alert(self, event: Envelope, at: Position) -> None:
        rank = SEVERITY_RANK.get(event.data.severity, 0)
        for webhook in self.webhooks:
            if rank >= SEVERITY_RANK[webhook.hook.min_severity]:
                webhook.offer(event)

    async def warm_up(self) -> None:
        pass

    def health(self, now: float) -> PartHealth:
        failing = [w.hook.url for w in self.webhooks if w.failing]
        if failing:
            return degraded(f"webhook(s) failing: {', '.join(failing)} "
                            f"({self.stats.last_post_error})")
        return event_health(self.stats, now, quiet_after_s=None)

    def close(self) -> None:
        for webhook in self.webhooks:
            webhook.stop()
