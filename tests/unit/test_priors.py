"""The shipped behaviour priors (config/rules/default.yml) on a host nobody labelled.

Sample sequences are built the way the collector reports them: cumulative counters summed
over threads, CPU time in clock ticks (10 ms), schedstat run time and run-queue delay in
ns, one sweep a second, with jitter. Names carry nothing (``a.out``, ``python``).
"""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from agents.classification.decide import Classifier
from agents.classification.features import FEATURES, FeatureWindow, feature_vector
from agents.classification.rules import load_rules
from config import CONFIG_DIR
from pipeline.events import ProcessSample
from pipeline.settings import ClassifierSettings, load_settings

DEFAULT_RULES = CONFIG_DIR / "rules" / "default.yml"


class Proc:
    """One process's cumulative counters, advanced one second at a time."""

    def __init__(self, pid: int, name: str, threads: int, seed: int) -> None:
        self.pid, self.name, self.threads = pid, name, threads
        self.rng = random.Random(seed)
        self.c = dict(cpu_time_s=0.0, vol_ctx=0, invol_ctx=0, run_time_ns=0, run_delay_ns=0,
                      timeslices=0, io_read_bytes=0, io_write_bytes=0, io_rchar=0, io_wchar=0)
        self._ticks = 0.0

    def advance(self, *, run_s: float, delay_s: float, vol: float, invol: float,
                write_bps: float = 0.0) -> ProcessSample:
        j = lambda: 1 + self.rng.uniform(-0.1, 0.1)        # noqa: E731 - ±10 % per second
        run_s, delay_s = run_s * j(), delay_s * j()
        vol, invol = int(vol * j()), int(invol * j())
        c = self.c
        self._ticks += run_s
        c["cpu_time_s"] = int(self._ticks * 100) / 100     # /proc/PID/stat: clock ticks
        c["run_time_ns"] += int(run_s * 1e9)
        c["run_delay_ns"] += int(delay_s * 1e9)
        c["vol_ctx"] += vol
        c["invol_ctx"] += invol
        c["timeslices"] += vol + invol
        c["io_write_bytes"] += int(write_bps)
        c["io_wchar"] += int(write_bps)
        return ProcessSample(pid=self.pid, start_time=self.pid * 7, ppid=1, name=self.name,
                             cmdline=self.name, threads=self.threads, cpu_share=run_s,
                             rss_bytes=20 << 20, **c)


def probe_beside_hogs(proc: Proc, *, wakeups: float, cpu: float, delay_us: float,
                      invol: float) -> ProcessSample:
    """A latency probe: sleeps 0.2-2 ms in a loop; little CPU per wake-up, almost all
    switches voluntary, its run-queue delay per wake-up raised by the hogs beside it."""
    return proc.advance(run_s=cpu, delay_s=wakeups * delay_us / 1e6, vol=wakeups,
                        invol=invol)


def starved_hog(proc: Proc, *, share: float, invol: float = 100.0,
                vol: float = 0.0) -> ProcessSample:
    """A CPU hog that only gets ``share`` of a core: always runnable, so it waits the rest
    of each second in a run queue (run + delay ~ 1 s/s)."""
    return proc.advance(run_s=share, delay_s=1.0 - share, vol=vol, invol=invol)


def classify(make: list[tuple[Proc, Callable[[Proc], ProcessSample]]], seconds: int = 60,
             settings: ClassifierSettings | None = None
             ) -> tuple[Classifier, dict[int, list]]:
    clf = Classifier.from_settings(settings or ClassifierSettings(),
                                   user_name=lambda uid: None)
    out: dict[int, list] = {p.pid: [] for p, _ in make}
    for k in range(seconds):
        batch = [step(p) for p, step in make]
        for c in clf.sweep(1_000.0 + k, batch).classifications:
            out[c.pid].append((k, c))
    return clf, out


def test_the_default_rules_file_is_the_default_and_can_be_turned_off(tmp_path) -> None:
    assert ClassifierSettings().rules_path == DEFAULT_RULES
    cfg = tmp_path / "c.yml"
    cfg.write_text("classifier: {rules_file: none}\n")
    assert load_settings(cfg, env={}).classifier.rules_path is None
    cfg.write_text("classifier: {rules_file: false}\n")
    assert load_settings(cfg, env={}).classifier.rules_path is None
    cfg.write_text("classifier: {rules_file: rules/example.yml}\n")
    assert load_settings(cfg, env={}).classifier.rules_path == CONFIG_DIR / "rules" / "example.yml"
    cfg.write_text("classifier: {}\n")
    assert load_settings(cfg, env={}).classifier.rules_path == DEFAULT_RULES


def test_default_priors_load_and_cover_every_class() -> None:
    rules = load_rules(DEFAULT_RULES)
    assert not rules.identity_rules                    # behaviour only: no name hints
    assert {r.hit.cls for r in rules.priors} == {
        "latency_critical", "realtime_stream", "interactive", "compute_batch", "io_batch",
        "memory_heavy", "background", "idle"}
    assert all(r.hit.learn and r.hit.confidence >= 0.9 for r in rules.priors)


@pytest.mark.parametrize("wakeups, cpu, delay_us, invol, threads", [
    (1000, 0.02, 50, 0, 1),       # 1 ms sleeps on a quiet host
    (850, 0.02, 300, 40, 1),      # beside 4 hogs on 2 cores: delayed, some preemptions
    (700, 0.02, 500, 120, 1),     # worse: fewer wake-ups, more preemptions
    (400, 0.01, 400, 30, 1),      # 2 ms sleeps under load
    (6000, 0.08, 60, 5, 4),       # 0.2 ms sleeps in 4 threads
])
def test_a_latency_probe_beside_hogs_is_latency_critical_within_seconds(
        wakeups: float, cpu: float, delay_us: float, invol: float, threads: int) -> None:
    probe = Proc(101, "a.out", threads, seed=1)
    hogs = [Proc(200 + i, "python", 1, seed=10 + i) for i in range(4)]
    make = [(probe, lambda p: probe_beside_hogs(p, wakeups=wakeups, cpu=cpu,
                                                delay_us=delay_us, invol=invol))]
    make += [(h, lambda p: starved_hog(p, share=0.5)) for h in hogs]
    clf, out = classify(make)
    first_k, first = out[probe.pid][0]
    assert first_k == 1        # its second sample: an ultra_critical call is made early
    assert (first.cls, first.source, first.reason) == (
        "latency_critical", "rule", "rule short-frequent-wakeups")
    assert first.tier == "ultra_critical"
    # One class for the whole minute: the model the priors taught never flips it.
    assert {c.cls for _, c in out[probe.pid]} == {"latency_critical"}
    for hog in hogs:
        # batch work is judged from its newest four samples (classifier.batch_early_*), a
        # sweep before the full window of five
        assert out[hog.pid][0][0] == 3
        assert {c.cls for _, c in out[hog.pid]} == {"compute_batch"}
        assert out[hog.pid][0][1].reason == "rule wants-a-core"


@pytest.mark.parametrize("share, invol, vol, threads", [
    (0.5, 100, 0, 1),             # C-like loop, 4 hogs on 2 cores
    (0.3, 250, 0, 1),             # 6 hogs on 2 cores
    (1.0, 100, 0, 1),             # a core to itself
    (0.45, 2200, 500, 3),         # 3 Python threads passing the GIL (voluntary waits)
])
def test_a_starved_hog_is_compute_batch(share: float, invol: float, vol: float,
                                        threads: int) -> None:
    hog = Proc(300, "a.out", threads, seed=3)
    _, out = classify([(hog, lambda p: starved_hog(p, share=share, invol=invol, vol=vol))],
                      seconds=30)
    assert out[hog.pid][0][0] == 3               # the batch early window, as above
    assert {c.cls for _, c in out[hog.pid]} == {"compute_batch"}


def test_the_features_the_priors_rely_on() -> None:
    """What the hand-made sequences look like as features (guards the builders above)."""
    hog, probe = Proc(1, "a.out", 1, 1), Proc(2, "a.out", 1, 2)
    wh, wp = FeatureWindow(20), FeatureWindow(20)
    for k in range(10):
        wh.append(float(k), starved_hog(hog, share=0.5))
        wp.append(float(k), probe_beside_hogs(probe, wakeups=850, cpu=0.02, delay_us=300,
                                              invol=40))
    h = dict(zip(FEATURES, feature_vector(wh)))
    p = dict(zip(FEATURES, feature_vector(wp)))
    assert h["cpu_mean"] == pytest.approx(0.5, abs=0.06)
    assert h["cpu_demand"] == pytest.approx(1.0, abs=0.05) and h["vol_ratio"] == 0
    assert p["cpu_demand"] < 0.4 and p["vol_ratio"] > 0.9 and p["run_us_slice"] < 30


def test_other_quiet_processes_are_not_taken_for_either() -> None:
    idle = Proc(400, "java", 2, seed=4)
    timer = Proc(401, "python", 1, seed=5)
    writer = Proc(402, "python", 1, seed=6)
    _, out = classify([
        (idle, lambda p: p.advance(run_s=0.0, delay_s=0.0, vol=0, invol=0)),
        (timer, lambda p: p.advance(run_s=0.005, delay_s=0.001, vol=3, invol=2)),
        (writer, lambda p: p.advance(run_s=0.03, delay_s=0.005, vol=300, invol=10,
                                     write_bps=8e6)),
    ], seconds=20)
    assert {c.cls for _, c in out[idle.pid]} == {"idle"}
    assert {c.cls for _, c in out[timer.pid]} == {"background"}
    assert {c.cls for _, c in out[writer.pid]} == {"io_batch"}


def test_turning_priors_off_leaves_a_cold_host_unclassified() -> None:
    hog = Proc(500, "a.out", 1, seed=7)
    _, out = classify([(hog, lambda p: starved_hog(p, share=0.5))], seconds=15,
                      settings=ClassifierSettings(rules_file="none"))
    assert out[hog.pid] == []
