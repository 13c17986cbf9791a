"""Behaviour features of one process over a rolling window of its samples.

Samples carry cumulative counters (all threads summed). A window keeps, per interval
between two consecutive samples of the same identity, the counter deltas in one deque per
counter, so appending is a handful of subtractions and computing features is a few
C-level ``sum`` calls: no dict per sample, nothing recomputed from the start.

A counter that goes backwards is treated as a reset and counts nothing for that interval:
the summed per-thread counters drop when a thread exits and takes its counts with it, and
the new value minus zero would be a bogus spike, not a rate.

Everything here is pure: time is passed in (sample timestamps, seconds since the epoch),
and the boot time for a process's age is an argument.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Final

from pipeline.events import ProcessSample

# Feature names in the order ``feature_vector`` returns them. Units are in the names.
FEATURES: Final[tuple[str, ...]] = (
    "cpu_mean",            # cores used, time-weighted mean over the window
    "cpu_std",             # std of per-interval cores used
    "cpu_peak",            # highest per-interval cores used
    "cpu_cv",              # burstiness: std / mean of per-interval CPU (0 when idle)
    "cpu_busy_frac",       # fraction of intervals above BUSY_SHARE cores
    "cpu_active_frac",     # fraction of intervals above ACTIVE_SHARE cores
    "cpu_per_thread",      # cpu_mean / threads (capped at 1 per thread)
    "wakeups_s",           # voluntary context switches per second (wake-ups)
    "wakeup_cv",           # regularity of wake-ups: std / mean of per-interval rates
    "invol_s",             # involuntary context switches per second (preemptions)
    "vol_ratio",           # voluntary / all switches (1 when there were none)
    "delay_ms_s",          # run-queue delay: ms spent runnable-but-waiting per second
    "delay_us_slice",      # run-queue delay per timeslice, µs
    "run_us_slice",        # CPU time per timeslice, µs (short => many short wake-ups)
    "slices_s",            # timeslices per second
    "read_bps",            # storage reads, bytes/s
    "write_bps",           # storage writes, bytes/s
    "rchar_bps",           # all reads (sockets, pipes, cache), bytes/s
    "wchar_bps",           # all writes, bytes/s
    "threads",             # latest thread count
    "rss_mb",              # latest resident set, MiB
    "rss_growth_mb_s",     # RSS slope over the window, MiB/s
    "age_s",               # seconds since the process started (0 when boot time unknown)
    "in_container",        # 1.0 when the process runs in a container
    "span_s",              # seconds of history the window covers
    "samples",             # samples in the window
    # Appended, not inserted, so every earlier index (and the model's input) stays put.
    "cpu_demand",          # cores wanted: (run time + run-queue delay) per second; a
                           # starved CPU hog wants ~1 per thread even when it gets 0.5
)

BUSY_SHARE: Final[float] = 0.5      # "busy" interval: at least half a core
ACTIVE_SHARE: Final[float] = 0.02   # "active" interval: more than scheduler noise
_MIB: Final[float] = 1024.0 * 1024.0


class FeatureWindow:
    """The last ``span_s`` seconds of one identity's samples, as per-interval deltas.

    ``append`` ignores a sample not newer than the last one (a duplicate or out of order)
    and restarts the window after a gap longer than the span (stale rates would mix in).
    An interval shorter than ``min_interval_s`` is extended by the next sample instead of
    being followed by another (see ``append``). With ``boot_time`` known, a process's first
    ``startup_s`` seconds are left out: a sample taken then is only a baseline, replaced by
    the next, so start-up (loading, imports) does not read as behaviour.
    """

    __slots__ = ("span_s", "clk_tck", "min_interval_s", "keep", "max_gap_s", "quiet_run", "_settle_until", "_boot_time", "_startup_s", "_ts", "_rss", "_dt", "_cpu", "_vol", "_invol",
                 "_run", "_delay", "_slices", "_rb", "_wb", "_rc", "_wc", "_last")

    def __init__(self, span_s: float = 20.0, clk_tck: int = 100,
                 min_interval_s: float = 0.0, keep: int = 1,
                 max_gap_s: float | None = None, boot_time: float | None = None,
                 startup_s: float = 0.0) -> None:
        """``keep``: the newest samples kept even when older than the span; ``max_gap_s``
        (the span by default): a longer gap between samples starts the window afresh."""
        if span_s <= 0:
            raise ValueError(f"window span must be positive, got {span_s}")
        self.span_s = span_s
        self.clk_tck = clk_tck
        self.min_interval_s = min_interval_s
        self.keep = max(1, keep)
        self.max_gap_s = span_s if max_gap_s is None else max_gap_s
        self.quiet_run = 0                        # trailing intervals in which nothing moved
        self._boot_time, self._startup_s = boot_time, startup_s
        self._settle_until: float | None = None   # epoch s; a baseline before it is replaced
        self._ts: deque[float] = deque()          # sample times (n)
        self._rss: deque[int] = deque()           # sample RSS (n)
        self._dt: deque[float] = deque()          # interval lengths (n - 1), then deltas:
        self._cpu: deque[float] = deque()         # CPU seconds
        self._vol: deque[int] = deque()
        self._invol: deque[int] = deque()
        self._run: deque[int] = deque()           # ns
        self._delay: deque[int] = deque()         # ns
        self._slices: deque[int] = deque()
        self._rb: deque[int] = deque()
        self._wb: deque[int] = deque()
        self._rc: deque[int] = deque()
        self._wc: deque[int] = deque()
        self._last: ProcessSample | None = None

    def __len__(self) -> int:
        return len(self._ts)

    @property
    def last(self) -> ProcessSample | None:
        return self._last

    @property
    def last_ts(self) -> float | None:
        return self._ts[-1] if self._ts else None

    @property
    def still(self) -> bool:
        """Nothing moved in any interval the window holds: its behaviour features stay as
        they are until something does (only the process's age grows)."""
        return bool(self._dt) and self.quiet_run >= len(self._dt)

    @property
    def span(self) -> float:
        """Seconds between the oldest and newest sample held."""
        return self._ts[-1] - self._ts[0] if self._ts else 0.0

    def clear(self) -> None:
        for part in (self._ts, self._rss, self._dt, self._cpu, self._vol, self._invol,
                     self._run, self._delay, self._slices, self._rb, self._wb, self._rc,
                     self._wc):
            part.clear()
        self._last = None
        self.quiet_run = 0

    def append(self, ts: float, sample: ProcessSample) -> None:
        prev = self._last
        if prev is not None:
            dt = ts - self._ts[-1]
            if dt <= 0:
                return
            if dt > self.max_gap_s:
                self.clear()
                prev = None
        elif self._boot_time and self._startup_s:
            self._settle_until = (self._boot_time + sample.start_time / self.clk_tck
                                  + self._startup_s)
        if prev is not None and len(self._ts) == 1 and self._settle_until is not None \
                and self._ts[0] < self._settle_until:
            # The baseline was taken during start-up: this sample is the baseline instead.
            self._ts[0], self._rss[0], self._last = ts, sample.rss_bytes, sample
            return
        if prev is not None:
            if sample.cpu_time_s or prev.cpu_time_s:
                d = sample.cpu_time_s - prev.cpu_time_s
                cpu = d if d > 0 else 0.0
            else:
                # No CPU times in the sample: fall back to the collector's own share.
                cpu = sample.cpu_share * dt
            deltas = (cpu, *(max(b - a, 0) for a, b in (
                (prev.vol_ctx, sample.vol_ctx), (prev.invol_ctx, sample.invol_ctx),
                (prev.run_time_ns, sample.run_time_ns), (prev.run_delay_ns, sample.run_delay_ns),
                (prev.timeslices, sample.timeslices), (prev.io_read_bytes, sample.io_read_bytes),
                (prev.io_write_bytes, sample.io_write_bytes), (prev.io_rchar, sample.io_rchar),
                (prev.io_wchar, sample.io_wchar))))
            parts = (self._cpu, self._vol, self._invol, self._run, self._delay, self._slices,
                     self._rb, self._wb, self._rc, self._wc)
            moved = any(deltas) or sample.rss_bytes != prev.rss_bytes \
                or sample.threads != prev.threads
            if self._dt and self._dt[-1] < self.min_interval_s:
                # A sample soon after the last (a new process sampled fast): the last
                # interval grows rather than a short one being added, so rates and their
                # spread read the same whatever the sampling rate.
                self._dt[-1] += dt
                for part, d in zip(parts, deltas):
                    part[-1] += d
                if moved:
                    self.quiet_run = 0
                self._ts[-1] = ts
                self._rss[-1] = sample.rss_bytes
                self._last = sample
                self.evict(ts)
                return
            self._dt.append(dt)
            for part, d in zip(parts, deltas):
                part.append(d)
            self.quiet_run = 0 if moved else self.quiet_run + 1
        self._ts.append(ts)
        self._rss.append(sample.rss_bytes)
        self._last = sample
        self.evict(ts)

    def evict(self, now: float) -> None:
        """Drop samples older than the span before ``now`` (the newest ``keep`` stay)."""
        ts = self._ts
        horizon = now - self.span_s
        while len(ts) > self.keep and ts[0] < horizon:
            ts.popleft()
            self._rss.popleft()
            for part in (self._dt, self._cpu, self._vol, self._invol, self._run,
                         self._delay, self._slices, self._rb, self._wb, self._rc, self._wc):
                part.popleft()

    def enough_history(self, min_samples: int = 5, min_span_s: float = 4.0) -> bool:
        # Sweeps jitter by milliseconds: five samples a second apart may span 3.998 s, and
        # a strict bound would make every process wait a whole extra sweep.
        return len(self._ts) >= max(min_samples, 2) and self.span >= 0.9 * min_span_s


def _cv(values: deque, dts: deque, mean_rate: float) -> tuple[float, float]:
    """(std, coefficient of variation) of per-interval rates ``value / dt``."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    acc = 0.0
    for v, dt in zip(values, dts):
        r = v / dt - mean_rate
        acc += r * r
    std = math.sqrt(acc / n)
    return std, (std / mean_rate if mean_rate > 1e-9 else 0.0)


def feature_vector(window: FeatureWindow, now: float | None = None,
                   boot_time: float | None = None) -> list[float]:
    """The features of ``window`` in ``FEATURES`` order.

    ``now`` defaults to the newest sample's time; ``boot_time`` (seconds since the epoch)
    gives the process's age from its start time in clock ticks.
    """
    last = window._last
    if last is None:
        return [0.0] * len(FEATURES)
    dts = window._dt
    n = len(dts)
    total = sum(dts) if n else 0.0
    if now is None:
        now = window._ts[-1]
    threads = float(last.threads if last.threads > 0 else 1)
    if n == 0 or total <= 0:
        rates = [0.0] * 22
        rates[19] = threads
        rates[20] = last.rss_bytes / _MIB
        out = rates
    else:
        cpus = window._cpu
        cpu_sum = sum(cpus)
        cpu_mean = cpu_sum / total
        peak = 0.0
        busy = active = 0
        acc = 0.0
        for c, dt in zip(cpus, dts):
            share = c / dt
            if share > peak:
                peak = share
            if share > BUSY_SHARE:
                busy += 1
            if share > ACTIVE_SHARE:
                active += 1
            r = share - cpu_mean
            acc += r * r
        cpu_std = math.sqrt(acc / n)
        vol = sum(window._vol)
        invol = sum(window._invol)
        wake_rate = vol / total
        _, wake_cv = _cv(window._vol, dts, wake_rate)
        slices = sum(window._slices)
        run = sum(window._run)
        delay = sum(window._delay)
        rss = window._rss
        out = [
            cpu_mean,
            cpu_std,
            peak,
            cpu_std / cpu_mean if cpu_mean > 1e-3 else 0.0,
            busy / n,
            active / n,
            min(cpu_mean / threads, 1.0),
            wake_rate,
            wake_cv,
            invol / total,
            vol / (vol + invol) if vol + invol else 1.0,
            delay / 1e6 / total,
            delay / 1e3 / slices if slices else 0.0,
            run / 1e3 / slices if slices else 0.0,
            slices / total,
            sum(window._rb) / total,
            sum(window._wb) / total,
            sum(window._rc) / total,
            sum(window._wc) / total,
            threads,
            last.rss_bytes / _MIB,
            (rss[-1] - rss[0]) / _MIB / (window._ts[-1] - window._ts[0]),
        ]
    if boot_time:
        started = boot_time + last.start_time / window.clk_tck
        out.append(max(now - started, 0.0))
    else:
        out.append(0.0)
    out.append(1.0 if last.container_id else 0.0)
    out.append(window._ts[-1] - window._ts[0])
    out.append(float(len(window._ts)))
    if n == 0 or total <= 0:
        out.append(0.0)
    else:
        # schedstat run time is exact; without it (0), fall back to the tick-based CPU time.
        run = sum(window._run)
        ran_s = run / 1e9 if run else sum(window._cpu)
        out.append((ran_s + sum(window._delay) / 1e9) / total)
    return out


def features(window: FeatureWindow, now: float | None = None,
             boot_time: float | None = None) -> dict[str, float]:
    """The features of ``window`` by name (see ``FEATURES`` for units)."""
    return dict(zip(FEATURES, feature_vector(window, now, boot_time)))
