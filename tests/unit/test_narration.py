"""The terminal's lines: a process placed anew is one line with its judgement and what it
is told; an unchanged plan says nothing; mode, strategy, commands and alerts each a line;
a summary per host."""
from __future__ import annotations

from api.live import LiveState
from corelane.narration import Narrator
from pipeline import events as ev


def plan(seq: int, mode: str = "balanced", nice: int = -10, strategy: str = "shared",
         extra: int = 0) -> ev.Envelope:
    items = [ev.Decision(target="process", tier="ultra_critical", cpus="3", pid=4242,
                         start_time=1, nice=nice, policy="other", ioclass="be", iolevel=0),
             ev.Decision(target="process", tier="housekeeping", cpus="0", pid=7, start_time=1)]
    items += [ev.Decision(target="process", tier="low", cpus="0-1", pid=100 + i, start_time=1,
                          nice=10, policy="idle") for i in range(extra)]
    return ev.envelope(ev.Decisions(batch=f"p{seq}", plan_seq=seq, mode=mode, strategy=strategy,
                                    items=items), host="h", seq=seq)


class World:
    """The live view and the narrator after it, as `corelane up` wires them; host h has
    seen pid 4242 (xyz) and judged it."""

    def __init__(self) -> None:
        self.live, self.said = LiveState(), []
        self.narrator = Narrator(self.live, "h", say=self.said.append)
        self.feed(ev.envelope(ev.ProcessSamples(batch="s", samples=[
            ev.ProcessSample(pid=4242, start_time=1, ppid=1, name="xyz")]), host="h", seq=1))
        self.feed(ev.envelope(ev.Classifications(batch="c", items=[ev.Classification(
            pid=4242, start_time=1, cls="latency_critical", tier="ultra_critical",
            confidence=0.9, source="model")]), host="h", seq=1))

    def feed(self, event: ev.Envelope) -> None:
        self.live.apply(event)
        self.narrator.on_event(event)


def test_a_new_placement_is_one_line_and_an_unchanged_plan_says_nothing() -> None:
    w = World()
    said = w.said
    w.feed(plan(1))
    assert said == ["pid 4242 (xyz) judged latency_critical, tier ultra_critical → cpu 3, "
                    "nice -10, io be 0", "mode → balanced", "strategy → shared"]
    said.clear()
    w.feed(plan(2))
    assert said == []
    w.feed(plan(3, mode="emergency", nice=-15))
    assert said == ["pid 4242 (xyz) judged latency_critical, tier ultra_critical → cpu 3, "
                    "nice -15, io be 0", "mode → emergency (was balanced)"]


def test_a_plan_that_moves_many_is_told_in_a_few_lines_and_a_count() -> None:
    w = World()
    said = w.said
    w.feed(plan(1, extra=20))
    assert len([line for line in said if line.startswith("pid ")]) == 8
    assert "… and 13 more in plan 1" in said[8]


def test_commands_alerts_strategies_and_other_hosts() -> None:
    w = World()
    said = w.said
    w.feed(ev.envelope(ev.Command(name="mode", args={"mode": "emergency"}), "ops", 1))
    alert = ev.open_alert("core_hot", "core_hot: cpu 3 at 97.0 °C", 1.0, severity="critical")
    w.feed(ev.envelope(alert, "far", 1))
    w.feed(ev.envelope(ev.StrategyChoice(strategy="exclusive", state="trial"), "h", 1))
    w.feed(ev.envelope(ev.StrategyChoice(strategy="exclusive", state="chosen",
                                                reason="p99 40 µs"), "h", 2))
    assert said == ["ops: command mode (mode emergency)",
                    "far: alert opened [critical]: core_hot: cpu 3 at 97.0 °C",
                    "strategy chosen: exclusive (p99 40 µs)"]


def test_the_summary_counts_each_tier_with_its_cores() -> None:
    w = World()
    said = w.said
    w.feed(plan(1, extra=2))
    said.clear()
    w.narrator.summarise()
    assert said == ["plan 1: ultra_critical 1 on cpu 3, low 2 on cpu 0-1, housekeeping 1 on "
                    "cpu 0; mode balanced, strategy shared; 0 alert(s) open"]
