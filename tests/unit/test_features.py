"""Behaviour features from hand-made sample sequences: rates, bursts, resets, eviction."""
from __future__ import annotations

import pytest

from agents.classification.features import (
    FEATURES, FeatureWindow, feature_vector, features,
)
from pipeline.events import ProcessSample


def sample(**fields) -> ProcessSample:
    base = dict(pid=10, start_time=500, ppid=1, name="w")
    base.update(fields)
    return ProcessSample(**base)


def steady(window: FeatureWindow, seconds: int, t0: float = 1000.0, **per_s) -> None:
    """Append one sample per second whose counters grow by ``per_s`` each second."""
    for k in range(seconds + 1):
        window.append(t0 + k, sample(**{key: type(v)(v * k) for key, v in per_s.items()}))


def test_rates_come_from_counter_deltas() -> None:
    w = FeatureWindow(span_s=30)
    steady(w, 10, cpu_time_s=0.5, vol_ctx=100, invol_ctx=10, run_time_ns=500_000_000,
           run_delay_ns=2_000_000, timeslices=110, io_read_bytes=1_000_000,
           io_write_bytes=250_000, io_rchar=3_000_000, io_wchar=40_000)
    f = features(w)
    assert set(f) == set(FEATURES)
    assert f["cpu_mean"] == pytest.approx(0.5)
    assert f["cpu_std"] == pytest.approx(0.0, abs=1e-9)
    assert f["wakeups_s"] == pytest.approx(100)
    assert f["invol_s"] == pytest.approx(10)
    assert f["vol_ratio"] == pytest.approx(100 / 110)
    assert f["delay_ms_s"] == pytest.approx(2.0)
    assert f["run_us_slice"] == pytest.approx(500_000_000 / 110 / 1000)
    assert f["delay_us_slice"] == pytest.approx(2_000_000 / 110 / 1000)
    assert f["slices_s"] == pytest.approx(110)
    assert f["read_bps"] == pytest.approx(1_000_000)
    assert f["write_bps"] == pytest.approx(250_000)
    assert f["rchar_bps"] == pytest.approx(3_000_000)
    assert f["wchar_bps"] == pytest.approx(40_000)
    assert f["span_s"] == 10 and f["samples"] == 11


def test_burstiness_peak_and_busy_fraction() -> None:
    w = FeatureWindow(span_s=30)
    cpu = 0.0
    for k in range(11):
        if k and k % 2 == 0:
            cpu += 1.0                  # a full core every other second, idle in between
        w.append(1000.0 + k, sample(cpu_time_s=cpu))
    f = features(w)
    assert f["cpu_mean"] == pytest.approx(0.5)
    assert f["cpu_peak"] == pytest.approx(1.0)
    assert f["cpu_std"] == pytest.approx(0.5)
    assert f["cpu_cv"] == pytest.approx(1.0)
    assert f["cpu_busy_frac"] == pytest.approx(0.5)
    assert f["cpu_active_frac"] == pytest.approx(0.5)


def test_counter_going_backwards_counts_nothing_for_that_interval() -> None:
    w = FeatureWindow(span_s=30)
    # 100 switches/s, then a thread exits and the summed counter drops from 500 to 120.
    for k, vol in enumerate([0, 100, 200, 300, 400, 500, 120, 220, 320]):
        w.append(1000.0 + k, sample(vol_ctx=vol))
    f = features(w)
    # 7 good intervals of 100 each, one reset interval counted as 0, over 8 s.
    assert f["wakeups_s"] == pytest.approx(700 / 8)
    assert f["wakeups_s"] >= 0


def test_multi_threaded_counters_are_used_as_summed() -> None:
    w = FeatureWindow(span_s=30)
    for k in range(6):
        w.append(1000.0 + k, sample(threads=4, cpu_time_s=3.2 * k, vol_ctx=4000 * k))
    f = features(w)
    assert f["cpu_mean"] == pytest.approx(3.2)
    assert f["cpu_per_thread"] == pytest.approx(0.8)
    assert f["wakeups_s"] == pytest.approx(4000)
    assert f["threads"] == 4


def test_window_evicts_old_samples_and_knows_when_it_has_enough() -> None:
    w = FeatureWindow(span_s=10)
    assert not w.enough_history(5, 4)
    for k in range(3):
        w.append(1000.0 + k, sample())
    assert not w.enough_history(min_samples=5, min_span_s=4)
    for k in range(3, 30):
        w.append(1000.0 + k, sample(cpu_time_s=0.25 * k))
    assert len(w) == 11 and w.span == pytest.approx(10)
    assert w.enough_history(min_samples=5, min_span_s=4)
    assert not w.enough_history(min_samples=20, min_span_s=4)
    assert features(w)["cpu_mean"] == pytest.approx(0.25)


def test_duplicates_are_ignored_and_a_long_gap_restarts_the_window() -> None:
    w = FeatureWindow(span_s=10)
    steady(w, 5, vol_ctx=10)
    w.append(1005.0, sample(vol_ctx=999_999))         # same time again: ignored
    assert features(w)["wakeups_s"] == pytest.approx(10)
    w.append(1100.0, sample(vol_ctx=1_000_000))        # 95 s later: stale, start over
    assert len(w) == 1
    assert features(w)["wakeups_s"] == 0.0


def test_cpu_share_is_the_fallback_without_cpu_times() -> None:
    w = FeatureWindow(span_s=30)
    for k in range(5):
        w.append(1000.0 + 2 * k, sample(cpu_share=0.75))
    assert features(w)["cpu_mean"] == pytest.approx(0.75)


def test_memory_age_and_container() -> None:
    w = FeatureWindow(span_s=30, clk_tck=100)
    for k in range(11):
        w.append(1000.0 + k, sample(rss_bytes=(100 + 5 * k) * 2**20, start_time=50_000,
                                    container_id="c" * 64))
    f = features(w, boot_time=400.0)
    assert f["rss_mb"] == pytest.approx(150)
    assert f["rss_growth_mb_s"] == pytest.approx(5)
    assert f["age_s"] == pytest.approx(1010.0 - (400.0 + 500.0))
    assert f["in_container"] == 1.0
    assert features(w)["age_s"] == 0.0                 # unknown boot time: no age


def test_one_sample_gives_zero_rates_not_an_error() -> None:
    w = FeatureWindow()
    assert feature_vector(w) == [0.0] * len(FEATURES)
    w.append(1000.0, sample(threads=3, rss_bytes=2**20))
    f = features(w)
    assert f["cpu_mean"] == 0.0 and f["threads"] == 3 and f["rss_mb"] == 1.0
    with pytest.raises(ValueError, match="span must be positive"):
        FeatureWindow(span_s=0)


def test_fast_samples_merge_into_intervals_that_read_like_slow_ones() -> None:
    # A bursty process (busy half a second in three), sampled at 1 Hz and at 10 Hz: with
    # merging, the 10 Hz window holds the same intervals, so its features match.
    def cpu_at(t: float) -> float:
        whole, part = divmod(t, 3.0)
        return whole * 0.5 + min(part, 0.5)

    slow = FeatureWindow(span_s=30, min_interval_s=0.9)
    fast = FeatureWindow(span_s=30, min_interval_s=0.9)
    unmerged = FeatureWindow(span_s=30)
    for k in range(121):
        t = k / 10
        s = sample(cpu_time_s=cpu_at(t), vol_ctx=int(t * 1000))
        fast.append(1000.0 + t, s)
        unmerged.append(1000.0 + t, s)
        if k % 10 == 0:
            slow.append(1000.0 + t, s)
    assert len(fast) == len(slow) == 13 and len(unmerged) == 121
    a, b, c = features(slow), features(fast), features(unmerged)
    for name in ("cpu_mean", "cpu_std", "cpu_peak", "cpu_busy_frac", "wakeups_s"):
        assert b[name] == pytest.approx(a[name], rel=0.02), name
    assert a["cpu_peak"] == pytest.approx(0.5, rel=0.02)
    assert c["cpu_peak"] == pytest.approx(1.0, rel=0.02)      # unmerged, it reads otherwise
    # an early judgement sees the growing first interval: two samples, 0.3 s apart
    young = FeatureWindow(span_s=30, min_interval_s=0.9)
    for k in range(4):
        young.append(1000.0 + k / 10, sample(vol_ctx=100 * k))
    assert len(young) == 2 and young.enough_history(2, 0.3)
    assert features(young)["wakeups_s"] == pytest.approx(1000)


def _shell_start(window: FeatureWindow, boot: float) -> None:
    """A shell sampled at its fork (age 0.05 s) and again at 0.3 s, having woken twice while
    starting up; then asleep, sampled each second."""
    born = boot + 500 / 100            # start_time 500 ticks at 100 ticks/s
    window.append(born + 0.05, sample(vol_ctx=0))
    window.append(born + 0.3, sample(vol_ctx=2))
    for k in range(1, 6):
        window.append(born + 0.3 + k, sample(vol_ctx=2))


def test_start_up_is_left_out_when_the_age_is_known() -> None:
    boot = 1_000_000.0
    known = FeatureWindow(span_s=30, boot_time=boot, startup_s=0.5)
    _shell_start(known, boot)
    assert features(known)["wakeups_s"] == 0.0
    # the first sample past start-up is the baseline: four intervals, not six
    assert features(known)["samples"] == 5

    unknown = FeatureWindow(span_s=30)
    _shell_start(unknown, boot)
    assert features(unknown)["wakeups_s"] == pytest.approx(2 / 5.25)
