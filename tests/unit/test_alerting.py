"""Alert rules over time (threshold, duration, hysteresis), the figures they watch, and
webhook delivery with retries against a local HTTP server."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.alerting.book import AlertBook
from agents.alerting.figures import HostFigures
from agents.notifier import NotifierAgent, backoff_s, slack_payload
from pipeline import events as ev
from pipeline.settings import AlertRule, ConfigError, WebhookSettings, load_settings, parse_settings
from support.webhook_endpoint import Endpoint


def rule(**kw) -> AlertRule:
    base = dict(name="hot", signal="core_temperature", above=90.0, clear_below=80.0,
                for_s=10.0, clear_for_s=5.0)
    return AlertRule(**{**base, **kw})


def temps(**cpus: float) -> dict:
    return {"core_temperature": {k.replace("_", " "): v for k, v in cpus.items()}}


def test_an_alert_opens_after_its_duration_and_resolves_below_its_clear_level() -> None:
    book = AlertBook([rule()])
    assert book.check("h", temps(cpu_0=95.0), 100.0) == []
    assert book.check("h", temps(cpu_0=95.0), 105.0) == []          # not for 10 s yet
    assert book.check("h", temps(cpu_0=85.0), 108.0) == []          # dipped: starts over
    assert book.check("h", temps(cpu_0=95.0), 109.0) == []
    [opened] = book.check("h", temps(cpu_0=96.0), 119.0)
    assert (opened.state, opened.rule, opened.severity) == ("open", "hot", "warning")
    assert opened.details["subject"] == "cpu 0" and opened.details["value"] == 96.0
    assert "cpu 0 at 96.0 °C, above 90 °C for 10 s" in opened.message
    assert book.check("h", temps(cpu_0=85.0), 130.0) == []          # the hysteresis band
    assert book.check("h", temps(cpu_0=79.0), 131.0) == []          # below, not for 5 s yet
    assert book.check("h", temps(cpu_0=81.0), 134.0) == []          # back above clear: holds
    assert book.check("h", temps(cpu_0=70.0), 140.0) == []
    [resolved] = book.check("h", temps(cpu_0=70.0), 145.0)
    assert (resolved.id, resolved.state, resolved.resolved_at) == (opened.id, "resolved", 145.0)
    assert "back to 70.0 °C, below 80 °C" in resolved.message
    assert book.open == []


def test_each_subject_and_host_has_its_own_alert_and_unmeasured_ones_resolve() -> None:
    book = AlertBook([rule(for_s=0.0)])
    changes = book.check("a", temps(cpu_0=95.0, cpu_1=99.0), 1.0)
    assert sorted(a.details["subject"] for a in changes) == ["cpu 0", "cpu 1"]
    assert [a.details["subject"] for a in book.check("b", temps(cpu_1=99.0), 1.0)] == ["cpu 1"]
    assert len(book.open) == 3
    [gone] = book.check("a", temps(cpu_1=99.0), 2.0)                 # cpu 0 not measured now
    assert gone.state == "resolved" and "no longer measured" in gone.message
    # a check of other signals says nothing of this rule's
    assert book.check("a", {}, 3.0, signals=["recorder_lag"]) == []
    assert len(book.open) == 2


def test_tiers_narrow_a_rule_and_clear_below_defaults_to_four_fifths() -> None:
    r = rule(name="rq", signal="run_queue_delay", above=5.0, clear_below=None, for_s=0.0,
             clear_for_s=0.0, tiers=["critical"])
    assert r.clear_level == 4.0
    book = AlertBook([r])
    [a] = book.check("h", {"run_queue_delay": {"critical": 9.0, "low": 500.0}}, 1.0)
    assert a.details["subject"] == "critical"
    assert book.check("h", {"run_queue_delay": {"critical": 4.5}}, 2.0) == []
    assert [c.state for c in book.check("h", {"run_queue_delay": {"critical": 3.9}}, 3.0)] \
        == ["resolved"]


def test_the_book_takes_up_an_alert_a_previous_run_left_open() -> None:
    old = AlertBook([rule(for_s=0.0)])
    [opened] = old.check("h", temps(cpu_0=95.0), 1.0)
    book = AlertBook([rule(for_s=0.0)])
    book.adopt("h", opened)
    assert book.check("h", temps(cpu_0=95.0), 2.0) == [], "still hot: it stays open, once"
    assert book.check("h", temps(cpu_0=50.0), 10.0) == []       # cool, for clear_for_s
    [resolved] = book.check("h", temps(cpu_0=50.0), 15.0)
    assert resolved.id == opened.id


def test_figures_sum_each_tiers_run_queue_delay_over_whole_sweeps_and_pool_load() -> None:
    f = HostFigures()
    f.take_plan(ev.Decisions(batch="p1", pools={"critical": {"cpus": "0"}, "low": {"cpus": "1-2"}},
                             items=[ev.Decision(target="process", tier="critical", cpus="0",
                                                pid=1, start_time=10),
                                    ev.Decision(target="process", tier="low", cpus="1-2",
                                                pid=2, start_time=20)]))

    def sweep(ts: float, delays: dict[int, int], partial: bool = False) -> None:
        f.take_sweep(ev.ProcessSamples(batch=f"s{ts}", partial=partial, samples=[
            ev.ProcessSample(pid=p, start_time=p * 10, ppid=0, name="x", run_delay_ns=d,
                             cpu_share=0.3 if p == 1 else 1.9)
            for p, d in delays.items()]), ts)

    sweep(0.0, {1: 0, 2: 0})
    sweep(0.5, {1: 10_000_000_000}, partial=True)   # an early sample: no rate from it
    sweep(2.0, {1: 8_000_000, 2: 400_000_000})
    f.take_host_sample(ev.HostSample(cpu_percent=[10.0, 100.0, 90.0], cpu_freq_khz=[None] * 3,
                                     load=(0, 0, 0), mem_total_bytes=1, mem_available_bytes=1,
                                     cpu_temperatures_c=[50.0, None, 70.0],
                                     pressure={"memory_some": 3.0}))
    got = f.figures()
    assert got["run_queue_delay"] == {"critical": 4.0, "low": 200.0}
    assert got["pool_load"] == {"critical": 30.0, "low": 95.0}, "own use over own cores"
    assert got["core_temperature"] == {"cpu 0": 50.0, "cpu 2": 70.0}
    assert got["memory_pressure"] == {"host": 3.0}


def test_alert_settings_name_the_key_of_a_mistake() -> None:
    assert [r.name for r in load_settings(env={}).alerts.rules] == [
        "critical_run_queue_delay", "pool_overcommitted", "core_hot", "memory_pressure",
        "recorder_lagging"]
    with pytest.raises(ConfigError, match=r"alerts\.rules': .*more than once: a"):
        parse_settings("alerts: {rules: [{name: a, signal: pool_load, above: 5}, "
                       "{name: a, signal: pool_load, above: 6}]}", "c.yml", env={})
    with pytest.raises(ConfigError, match=r"c\.yml: key 'alerts\.webhooks\.0\.url'"):
        parse_settings("alerts: {webhooks: [{url: 'ftp://example'}]}", "c.yml", env={})


# --- webhooks --------------------------------------------------------------------------------

def alert_event(severity: str = "warning", state: str = "open") -> ev.Envelope:
    alert = ev.open_alert("core_hot", "core_hot: cpu 0 at 97.0 °C", 1.0, severity=severity)
    if state == "resolved":
        alert = ev.resolve_alert(alert, 2.0, "core_hot: back to 70 °C")
    return ev.envelope(alert, host="h", seq=1)


def test_backoff_doubles_up_to_its_cap() -> None:
    hook = WebhookSettings(url="http://127.0.0.1:1/x", backoff_s=0.5, max_backoff_s=3.0)
    assert [backoff_s(hook, n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_slack_payload_is_one_line_of_text_with_the_fields() -> None:
    body = slack_payload(alert_event(severity="critical"))
    assert body["text"].startswith(":rotating_light: corelane on h: core_hot: cpu 0 at 97.0")
    resolved = slack_payload(alert_event(state="resolved"))
    assert resolved["text"].startswith(":white_check_mark: corelane on h: RESOLVED")


async def test_a_failing_endpoint_is_retried_and_never_holds_up_the_others(
        tmp_path: Path) -> None:
    flaky, good = Endpoint(fail_first=2), Endpoint()
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path)})
    settings.alerts.webhooks = [
        WebhookSettings(url=flaky.url, format="slack", backoff_s=0.05, retries=3),
        WebhookSettings(url=good.url, format="generic", min_severity="warning"),
        # nothing listens there: every try fails, then the post is given up
        WebhookSettings(url="http://127.0.0.1:9/none", retries=1, backoff_s=0.05,
                        timeout_s=1)]
    notifier = NotifierAgent(settings)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await notifier._alert(alert_event(), None)              # type: ignore[arg-type]
        await notifier._alert(alert_event(severity="info"), None)  # type: ignore[arg-type]
        assert loop.time() - started < 0.05, "handling an alert only queues it"
        for _ in range(200):
            if len(flaky.bodies) == 2 and notifier.stats.given_up == 2 and good.bodies:
                break
            await asyncio.sleep(0.05)
        assert [b["text"] for b in flaky.bodies] == [
            ":warning: corelane on h: core_hot: cpu 0 at 97.0 °C",
            ":information_source: corelane on h: core_hot: cpu 0 at 97.0 °C"]
        assert flaky.attempts == 4, "two 503s, then both posted"
        assert [b["type"] for b in good.bodies] == ["alert"], "info is under its min_severity"
        assert good.bodies[0]["data"]["rule"] == "core_hot"
        assert notifier.stats.given_up == 2 and notifier.stats.retried >= 4
        assert notifier.health(0.0).state == "degraded"
        assert "127.0.0.1:9/none" in notifier.health(0.0).reason
    finally:
        notifier.close()
        flaky.close()
        good.close()
