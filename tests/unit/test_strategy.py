"""The closed loop's choice of strategy, driven by synthetic checks: it tries each strategy,
keeps the best, prefers batch throughput among equals, and undoes a choice that turns
worse than the best alternative."""
from __future__ import annotations

import random

from agents.allocation.strategy import Check, StrategyTuner, Trial, percentile
from pipeline.settings import ClosedLoopSettings

FOUR = ["exclusive_poll", "exclusive", "exclusive_lend", "shared"]


def cfg(**kw) -> ClosedLoopSettings:
    base = {"strategies": FOUR, "initial": "shared", "trial_checks": 2, "cut_after": 2.0,
            "settle_s": 5.0,
            "tolerance": 0.15, "tolerance_us": 5.0, "undo_after_checks": 2,
            "reexplore_s": 600.0}
    return ClosedLoopSettings(**{**base, **kw})


def check(strategy: str, ts: float, p99: float, batch: float = 1.0, n: int = 300,
          seed: int = 0, busy: int = 0) -> Check:
    """Wake-ups whose p99 is about ``p99``: most near a tenth of it, the top 1% at it."""
    rng = random.Random(seed)
    values = [rng.uniform(0.05, 0.15) * p99 for _ in range(n - n // 100 - 1)]
    values += [p99] * (n // 100 + 1)
    return Check(strategy, ts, tuple(values), batch_cpu=batch, busy_batch=busy)


def run(tuner: StrategyTuner, measure: dict[str, tuple[float, float]], start: float = 0.0,
        limit: int = 40) -> list:
    """Feed the strategy in force checks of what ``measure`` says it does until a choice."""
    switches = tuner.on_critical(True, start)
    assert switches == [] and tuner.phase in ("settle", "exploit")
    switches += tuner.tick(start + 1)                       # still settling
    assert switches == []
    ts = start + tuner.cfg.settle_s
    switches += tuner.tick(ts)
    while tuner.phase in ("gauge", "explore") and limit:
        ts += 1
        p99, batch = measure[tuner.in_force]
        switches += tuner.on_check(check(tuner.in_force, ts, p99, batch, seed=int(ts)))
        limit -= 1
    return switches


def test_it_tries_every_strategy_then_keeps_the_best() -> None:
    tuner = StrategyTuner(cfg())
    measure = {"exclusive_poll": (60.0, 1.0), "exclusive": (90.0, 1.0),
               "exclusive_lend": (150.0, 1.9), "shared": (110.0, 2.0)}
    switches = run(tuner, measure)
    states = [(s.state, s.strategy) for s in switches]
    assert states[0] == ("trial", "shared")                # the one in force goes first
    assert {s for st, s in states if st == "trial"} == set(FOUR)
    assert states[-1] == ("chosen", "exclusive_poll") and tuner.phase == "exploit"
    figures = switches[-1].figures
    assert set(figures) == set(FOUR)
    assert figures["exclusive_poll"]["p99_us"] == 60.0 and figures["shared"]["p99_us"] == 110.0
    assert "p99 60 µs" in switches[-1].reason


def test_among_equals_the_one_leaving_batch_work_most_cpu_wins() -> None:
    tuner = StrategyTuner(cfg())
    measure = {"exclusive_poll": (50.0, 1.0), "exclusive": (80.0, 1.0),
               "exclusive_lend": (52.0, 1.8), "shared": (54.0, 2.0)}
    chosen = run(tuner, measure)[-1]
    assert (chosen.state, chosen.strategy) == ("chosen", "shared")
    assert "most CPU" in chosen.reason


def test_a_clearly_worse_trial_is_cut_after_one_check() -> None:
    tuner = StrategyTuner(cfg(trial_checks=3))
    measure = {"shared": (40.0, 2.0), "exclusive_poll": (500.0, 1.0),
               "exclusive": (45.0, 1.0), "exclusive_lend": (42.0, 1.9)}
    switches = run(tuner, measure)
    cut = next(s for s in switches if "cut short" in s.reason)
    assert cut.previous == "exclusive_poll"
    assert tuner.trials["exclusive_poll"].checks == 1
    assert tuner.trials["shared"].checks == 3


# exclusive_poll measures best, with exclusive close behind; the others far worse
POLL_BEST = {"exclusive_poll": (60.0, 1.0), "exclusive": (65.0, 1.0),
             "exclusive_lend": (200.0, 1.9), "shared": (300.0, 2.0)}


def test_a_choice_that_turns_worse_than_the_best_alternative_is_undone() -> None:
    tuner = StrategyTuner(cfg())
    run(tuner, POLL_BEST)
    assert tuner.in_force == "exclusive_poll"
    # still as good: kept
    assert tuner.on_check(check("exclusive_poll", 100, 62.0)) == []
    assert tuner.on_check(check("exclusive_poll", 110, 61.0)) == []
    # a neighbour moved in: its checks now measure far worse than exclusive did
    assert tuner.on_check(check("exclusive_poll", 120, 400.0)) == []
    (undo,) = tuner.on_check(check("exclusive_poll", 130, 420.0))
    assert (undo.state, undo.strategy, undo.previous) == ("undone", "exclusive", "exclusive_poll")
    assert "worse than exclusive" in undo.reason
    assert tuner.trials["exclusive_poll"].p99_us >= 400      # the new figure counts now


def test_a_worse_choice_is_undone_across_short_stretches_of_critical_work() -> None:
    # Critical work that lasts one check at a time (a job that comes and goes): the checks
    # of the strategy in force add up across the stretches, so a choice gone worse is
    # still undone.
    tuner = StrategyTuner(cfg())
    run(tuner, POLL_BEST)
    assert tuner.in_force == "exclusive_poll"
    assert tuner.on_check(check("exclusive_poll", 100, 400.0)) == []
    assert tuner.on_critical(False, 105) == []
    assert tuner.on_critical(True, 110) == [] and tuner.phase == "exploit"
    (undo,) = tuner.on_check(check("exclusive_poll", 120, 420.0))
    assert (undo.state, undo.strategy) == ("undone", "exclusive")


def test_checks_under_one_load_do_not_count_for_the_other() -> None:
    tuner = StrategyTuner(cfg())
    run(tuner, POLL_BEST)
    assert tuner.in_force == "exclusive_poll" and tuner.load == "quiet"
    assert tuner.on_check(check("exclusive_poll", 100, 400.0)) == []
    # batch work wakes up: nothing measured for that yet, so settle and try strategies
    assert tuner.on_check(check("exclusive_poll", 110, 400.0, busy=2)) == []
    assert tuner.phase == "settle"
    assert list(tuner.recent["quiet"]) and "loaded" not in tuner.recent


def test_checks_of_another_placement_are_ignored() -> None:
    tuner = StrategyTuner(cfg())
    tuner.on_critical(True, 0.0)
    assert tuner.on_check(check("shared", 1, 10.0)) == []      # settling: not measured
    tuner.tick(5.0)
    assert tuner.on_check(check("exclusive", 1, 10.0)) == []   # not in force yet
    assert "exclusive" not in tuner.trials


def test_no_critical_work_no_checks_and_results_are_kept_until_reexplore() -> None:
    tuner = StrategyTuner(cfg())
    assert not tuner.due(0.0, None)                           # idle: nothing to measure
    run(tuner, {s: (50.0, 1.0) for s in FOUR})
    chosen_at = tuner.explored_at
    assert tuner.due(100.0, None)
    tuner.on_critical(False, 100.0)
    assert tuner.phase == "idle" and not tuner.due(200.0, None)
    assert tuner.on_critical(True, 200.0) == [] and tuner.phase == "exploit"
    assert tuner.on_critical(False, 300.0) == []
    assert tuner.on_critical(True, chosen_at + 601.0) == []   # stale: try them all again,
    assert tuner.tick(chosen_at + 607.0) == [] and tuner.phase == "gauge"   # once settled
    again = tuner.on_check(check(tuner.in_force, chosen_at + 608.0, 50.0))
    assert again and again[0].state == "trial"


def test_a_recorded_choice_is_carried_on_after_a_restart() -> None:
    tuner = StrategyTuner(cfg())
    tuner.restore("exclusive_lend", "chosen", {"exclusive_lend": {"p99_us": 40.0, "checks": 2},
                                              "shared": {"p99_us": 90.0, "checks": 2}}, at=50.0)
    assert tuner.in_force == "exclusive_lend"
    assert tuner.on_critical(True, 60.0) == [] and tuner.phase == "exploit"
    assert tuner.on_check(check("exclusive_lend", 61, 45.0)) == []
    assert tuner.on_check(check("exclusive_lend", 62, 42.0)) == []
    assert tuner.on_check(check("exclusive_lend", 63, 300.0)) == []  # one bad check: noise
    (undo,) = tuner.on_check(check("exclusive_lend", 64, 310.0))
    assert undo.strategy == "shared"


def test_percentile_and_trial_figures() -> None:
    assert percentile([], 99) != percentile([], 99)          # NaN
    assert percentile(list(range(1, 101)), 99) == 99
    t = Trial("shared")
    t.add(check("shared", 1, 100.0, batch=2.0))
    figures = t.figures()
    assert figures["p99_us"] == 100.0 and figures["batch_cpu"] == 2.0 and figures["checks"] == 1
    assert "p50_us" in figures
    assert "p50_us" not in Trial.from_figures("x", {"p99_us": 5.0}).figures()


def test_each_batch_load_has_its_own_choice() -> None:
    tuner = StrategyTuner(cfg())
    # batch work asleep: a halted core costs, polling wins
    quiet = {"exclusive_poll": (40.0, 0.0), "exclusive": (300.0, 0.0),
             "exclusive_lend": (250.0, 0.0), "shared": (280.0, 0.0)}
    assert run(tuner, quiet)[-1].strategy == "exclusive_poll"
    assert tuner.load == "quiet"
    # hogs start: the load changed, and nothing was measured for it yet
    ts = 100.0
    assert tuner.on_check(check("exclusive_poll", ts, 400.0, 1.9, busy=4)) == []
    assert tuner.phase == "settle" and tuner.load == "loaded"
    switches = tuner.tick(ts + tuner.cfg.settle_s)
    assert tuner.phase == "gauge"
    busy = {"exclusive_poll": (400.0, 1.0), "exclusive": (500.0, 1.0),
            "exclusive_lend": (60.0, 1.9), "shared": (35.0, 2.0)}
    while tuner.phase in ("gauge", "explore"):
        ts += 7
        p99, batch = busy[tuner.in_force]
        switches += tuner.on_check(check(tuner.in_force, ts, p99, batch, busy=4, seed=int(ts)))
    assert switches[-1].state == "chosen" and switches[-1].strategy == "shared"
    assert switches[-1].load == "loaded"
    # the hogs stop: the quiet choice comes back at once, without trying anything again
    (back,) = tuner.on_check(check("shared", ts + 10, 280.0, 0.0))
    assert (back.state, back.strategy, back.load) == ("chosen", "exclusive_poll", "quiet")
    assert "measured best for that" in back.reason and tuner.phase == "exploit"
    # and start again: the loaded choice, at once too
    (again,) = tuner.on_check(check("exclusive_poll", ts + 20, 400.0, 1.9, busy=4))
    assert (again.strategy, again.load) == ("shared", "loaded")


def run_loaded(tuner: StrategyTuner, measure: dict[str, tuple[float, float]]) -> list:
    """As ``run``, beside busy batch work."""
    switches = tuner.on_critical(True, 0.0)
    ts = tuner.cfg.settle_s
    switches += tuner.tick(ts)
    for _ in range(40):
        if tuner.phase not in ("gauge", "explore"):
            break
        ts += 1
        p99, batch = measure[tuner.in_force]
        switches += tuner.on_check(check(tuner.in_force, ts, p99, batch, seed=int(ts), busy=4))
    return switches


def test_beside_busy_batch_work_a_strategy_starving_it_is_not_kept() -> None:
    # exclusive_poll is the most punctual, but leaves four busy hogs one core of two
    tuner = StrategyTuner(cfg(trial_checks=3, batch_share=0.9))
    measure = {"shared": (200.0, 1.9), "exclusive_poll": (80.0, 0.9),
               "exclusive": (150.0, 0.9), "exclusive_lend": (120.0, 1.8)}
    switches = run_loaded(tuner, measure)
    chosen = switches[-1]
    assert (chosen.state, chosen.strategy, chosen.load) == ("chosen", "exclusive_lend", "loaded")
    assert "exclusive, exclusive_poll left batch work under 90%" in chosen.reason
    # the starving ones were cut after one check, the others had their three
    assert tuner.trials["exclusive_poll"].checks == 1 and tuner.trials["exclusive"].checks == 1
    assert tuner.trials["shared"].checks == 3 and tuner.trials["exclusive_lend"].checks == 3
    assert any("left batch work 0.90 cores, under 90% of the 1.90" in s.reason for s in switches)
    # and it is not undone in favour of the starving one, however punctual that was
    ts = 100.0
    for i in range(6):
        assert tuner.on_check(check("exclusive_lend", ts + 10 * i, 125.0, 1.8, seed=i,
                                    busy=4)) == []
    assert tuner.in_force == "exclusive_lend"


def test_without_a_batch_share_latency_alone_decides() -> None:
    tuner = StrategyTuner(cfg(trial_checks=3, batch_share=0.0))
    measure = {"shared": (200.0, 1.9), "exclusive_poll": (80.0, 0.9),
               "exclusive": (150.0, 0.9), "exclusive_lend": (120.0, 1.8)}
    chosen = run_loaded(tuner, measure)[-1]
    assert (chosen.state, chosen.strategy) == ("chosen", "exclusive_poll")
    assert tuner.trials["exclusive"].checks == 3


def test_a_quiet_host_has_no_batch_work_to_keep() -> None:
    # batch work that sleeps used little either way: the floor does not apply
    tuner = StrategyTuner(cfg(batch_share=0.9))
    measure = {"shared": (200.0, 0.05), "exclusive_poll": (80.0, 0.01),
               "exclusive": (150.0, 0.01), "exclusive_lend": (120.0, 0.04)}
    chosen = run(tuner, measure)[-1]
    assert (chosen.state, chosen.load, chosen.strategy) == ("chosen", "quiet", "exclusive_poll")
