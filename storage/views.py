"""Views and table macros for the questions people ask of the history.

They are created with the schema (``CREATE OR REPLACE``, so a new corelane replaces them on
open). All times are UTC ``TIMESTAMP``s; pass window bounds as ``TIMESTAMP '...'`` literals
or strings. Windows are half-open: ``t_from <= ts < t_to``. The macros filter on ``ts``
before anything else, so DuckDB skips every row group outside the window; prefer them over
the whole-history views on a large file.

Counters in ``process_samples`` (``run_delay_ns``, ``cpu_time_s``, ...) are cumulative per
process identity ``(host, pid, start_time)``; the views turn them into deltas per identity.

``latest_classification``
    Each process identity's most recent class and tier::

        SELECT tier, count(*) FROM latest_classification GROUP BY tier;

``process_rates``
    Every process sample with its CPU share and its run-queue delay rate since the
    identity's previous sample (ms waited for a CPU per second of wall time)::

        SELECT ts, cpu_share, run_delay_ms_per_s FROM process_rates
        WHERE host = 'web1' AND pid = 4242 ORDER BY ts;

``tier_usage(t_from, t_to)`` (table macro) and ``tier_usage_1m`` (the same over all of raw
history)
    Per host, minute and tier (each identity's latest classification; ``unclassified`` when
    it has none): ``cores`` = the tier's summed ``cpu_share`` averaged over the minute's
    sweeps (2.0 = two cores busy), ``run_delay_ms_per_s`` = the tier's summed run-queue
    delay in ms per second of wall time, ``processes`` = distinct identities seen. Rows
    cover whole minutes, from the one holding ``t_from``; the last is cut at ``t_to``::

        SELECT minute, tier, cores, run_delay_ms_per_s
        FROM tier_usage(TIMESTAMP '2025-11-27 09:00', TIMESTAMP '2025-11-27 10:00')
        WHERE host = 'web1' ORDER BY minute, tier;

``core_utilization`` and ``core_utilization_1m``
    One row per host sample and logical CPU (``cpu`` counts from 0), and its per-minute
    average and maximum::

        SELECT minute, cpu, percent_avg FROM core_utilization_1m
        WHERE host = 'web1' AND minute >= TIMESTAMP '2025-11-27 09:00' ORDER BY minute, cpu;

``host_pressure``, ``tier_pressure`` and ``tier_memory``
    Pressure stall figures per host sample (PSI avg10, %: ``cpu_some``, ``memory_some``,
    ``memory_full``, ``io_some``, ``io_full``; no rows where the kernel has PSI off), the
    same per tier group (``figure``, ``percent``; cgroup v2 only), and the memory each tier
    group used (``bytes``), per host sample and tier::

        SELECT ts, memory_full FROM host_pressure WHERE host = 'web1' ORDER BY ts DESC LIMIT 5;
        SELECT tier, max(percent) FROM tier_pressure WHERE figure = 'memory_some' GROUP BY tier;
        SELECT tier, max(bytes) FROM tier_memory GROUP BY tier;

``top_processes_by_cpu(t_from, t_to, n)`` and ``top_processes_by_delay(t_from, t_to, n)``
    The ``n`` identities that used the most CPU seconds (``cpu_s``) or waited longest for
    a CPU (``run_delay_ms``) in the window, with name, command line, average and peak
    ``cpu_share``, and latest class and tier. Deltas are last minus first sample inside the
    window::

        SELECT host, pid, name, tier, cpu_s, run_delay_ms
        FROM top_processes_by_cpu(TIMESTAMP '2025-11-27 09:00', TIMESTAMP '2025-11-27 10:00', 10);

``decision_outcomes``
    Every decided target joined with the enforcement results reported for it (same host,
    plan and target; a plan is its decisions batch, so two runs never mix): what was decided and why, and whether it was applied, skipped or
    failed and why. ``outcome`` is NULL while no result has been recorded::

        SELECT decided_at, pid, tier, cpus, outcome, outcome_reason
        FROM decision_outcomes WHERE outcome <> 'applied' ORDER BY decided_at DESC LIMIT 20;

``shadow_vs_live(t_from, t_to)`` (table macro)
    Per host, shadow policy, minute and tier (the live one where both placed a target):
    ``targets`` the shadow placed, ``live_targets`` of them the live policy placed too,
    ``other_tier`` of those in another tier, and ``differ`` those whose cpus, nice,
    scheduling policy or I/O class differ (each side's newest decision in the minute)::

        SELECT minute, tier, targets, differ
        FROM shadow_vs_live(TIMESTAMP '2025-11-27 09:00', TIMESTAMP '2025-11-27 10:00')
        WHERE policy = 'no-exclusive' ORDER BY minute, tier;

Rolled-up minutes (``process_samples_1m``, ``host_samples_1m``, ``container_samples_1m``)
outlive the raw samples; query them directly for history older than the raw retention.
"""
from __future__ import annotations

# How far before a window the previous sample of each process is looked for, so the first
# sample in the window also gets its delta.
LOOKBACK = "INTERVAL 5 MINUTE"

_LATEST_CLASSIFICATION = """
CREATE OR REPLACE VIEW latest_classification AS
SELECT host, pid, start_time,
       arg_max(class, ts) AS class, arg_max(tier, ts) AS tier,
       arg_max(confidence, ts) AS confidence, arg_max(source, ts) AS source,
       max(ts) AS classified_at
FROM classifications
WHERE pid IS NOT NULL
GROUP BY host, pid, start_time
"""

_RATES_BODY = """
SELECT host, pid, start_time, ts, name, cpu_share,
       greatest(run_delay_ns - lag(run_delay_ns) OVER w, 0) / 1e6
           / nullif(epoch(ts - lag(ts) OVER w), 0) AS run_delay_ms_per_s
FROM process_samples
WHERE pid IS NOT NULL {where}
WINDOW w AS (PARTITION BY host, pid, start_time ORDER BY ts)
"""

_PROCESS_RATES = f"""
CREATE OR REPLACE VIEW process_rates AS {_RATES_BODY.format(where="")}
"""

# Works on (process, minute) aggregates, not on samples: a window function over every
# sample cost ~3 s per hour of 1,000 processes, this ~10x less. Whole sweeps only: the
# samples a collector takes of new processes between sweeps would count as sweeps. A minute's delay is the
# identity's last counter in it minus its last counter before it (or its first in the
# minute when new); it is divided by the wall seconds those deltas span (the host's last
# sweep in the minute minus its last sweep before it). CPU is the tier's summed cpu_share
# averaged over the minute's sweeps, so a tier missing from a sweep counts as 0 there.
_TIER_BODY = """
WITH per_process AS (
    SELECT host, pid, start_time, time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
           sum(cpu_share) AS cpu_share_sum,
           min(run_delay_ns) AS delay_lo, max(run_delay_ns) AS delay_hi
    FROM process_samples
    WHERE pid IS NOT NULL AND partial IS NOT TRUE {where}
    GROUP BY ALL
),
process_delta AS (
    SELECT *, greatest(delay_hi - coalesce(lag(delay_hi) OVER (
               PARTITION BY host, pid, start_time ORDER BY minute), delay_lo), 0) AS delay_ns
    FROM per_process
),
per_host AS (
    SELECT host, time_bucket(INTERVAL 1 MINUTE, ts) AS minute, count(DISTINCT ts) AS sweeps,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM process_samples
    WHERE pid IS NOT NULL AND partial IS NOT TRUE {where}
    GROUP BY ALL
),
host_span AS (
    SELECT *, epoch(last_ts - coalesce(lag(last_ts) OVER (PARTITION BY host ORDER BY minute),
                                       first_ts)) AS span_s
    FROM per_host
)
SELECT p.minute, p.host, coalesce(c.tier, 'unclassified') AS tier,
       count(*) AS processes,
       sum(p.cpu_share_sum) / any_value(h.sweeps) AS cores,
       coalesce(sum(p.delay_ns) / 1e6 / nullif(any_value(h.span_s), 0), 0)
           AS run_delay_ms_per_s
FROM process_delta p
JOIN host_span h ON h.host = p.host AND h.minute = p.minute
LEFT JOIN latest_classification c
       ON c.host = p.host AND c.pid = p.pid AND c.start_time = p.start_time
WHERE {keep}
GROUP BY ALL
"""

_WINDOW_WITH_LOOKBACK = f"AND ts >= t_from::TIMESTAMP - {LOOKBACK} AND ts < t_to::TIMESTAMP"
_TIER_USAGE = f"""
CREATE OR REPLACE MACRO tier_usage(t_from, t_to) AS TABLE
{_TIER_BODY.format(where=_WINDOW_WITH_LOOKBACK,
                   keep="p.minute >= time_bucket(INTERVAL 1 MINUTE, t_from::TIMESTAMP)")}
"""

_TIER_USAGE_1M = f"""
CREATE OR REPLACE VIEW tier_usage_1m AS
{_TIER_BODY.format(where="", keep="true")}
"""

_CORE_UTILIZATION = """
CREATE OR REPLACE VIEW core_utilization AS
SELECT host, ts, unnest(range(len(cpu_percent))) AS cpu, unnest(cpu_percent) AS percent
FROM host_samples
WHERE cpu_percent IS NOT NULL
"""

_HOST_PRESSURE = """
CREATE OR REPLACE VIEW host_pressure AS
SELECT host, ts, pressure['cpu_some'] AS cpu_some, pressure['memory_some'] AS memory_some,
       pressure['memory_full'] AS memory_full, pressure['io_some'] AS io_some,
       pressure['io_full'] AS io_full
FROM host_samples
WHERE cardinality(pressure) > 0
"""

_TIER_MEMORY = """
CREATE OR REPLACE VIEW tier_memory AS
SELECT host, ts, unnest(map_keys(tier_memory_bytes)) AS tier,
       unnest(map_values(tier_memory_bytes)) AS bytes
FROM host_samples
WHERE cardinality(tier_memory_bytes) > 0
"""

_TIER_PRESSURE = """
CREATE OR REPLACE VIEW tier_pressure AS
SELECT host, ts, split_part(k, '.', 1) AS tier, split_part(k, '.', 2) AS figure,
       tier_pressure[k] AS percent
FROM (SELECT host, ts, tier_pressure, unnest(map_keys(tier_pressure)) AS k
      FROM host_samples WHERE cardinality(tier_pressure) > 0)
"""

_CORE_UTILIZATION_1M = """
CREATE OR REPLACE VIEW core_utilization_1m AS
SELECT host, time_bucket(INTERVAL 1 MINUTE, ts) AS minute, cpu,
       avg(percent) AS percent_avg, max(percent) AS percent_max, count(*) AS samples
FROM core_utilization
GROUP BY ALL
"""

_TOP_BODY = """
WITH per_process AS (
    SELECT host, pid, start_time,
           arg_max(name, ts) AS name, arg_max(cmdline, ts) AS cmdline,
           count(*) AS samples, min(ts) AS first_seen, max(ts) AS last_seen,
           avg(cpu_share) AS cpu_share_avg, max(cpu_share) AS cpu_share_max,
           max(cpu_time_s) - min(cpu_time_s) AS cpu_s,
           (max(run_delay_ns) - min(run_delay_ns)) / 1e6 AS run_delay_ms
    FROM process_samples
    WHERE ts >= t_from::TIMESTAMP AND ts < t_to::TIMESTAMP AND pid IS NOT NULL
    GROUP BY host, pid, start_time
    ORDER BY {order} DESC, host, pid, start_time
    LIMIT n
)
SELECT p.*, c.class, c.tier
FROM per_process p
LEFT JOIN latest_classification c
       ON c.host = p.host AND c.pid = p.pid AND c.start_time = p.start_time
ORDER BY p.{order} DESC, p.host, p.pid, p.start_time
"""

_TOP_BY_CPU = f"""
CREATE OR REPLACE MACRO top_processes_by_cpu(t_from, t_to, n) AS TABLE
{_TOP_BODY.format(order="cpu_s")}
"""

_TOP_BY_DELAY = f"""
CREATE OR REPLACE MACRO top_processes_by_delay(t_from, t_to, n) AS TABLE
{_TOP_BODY.format(order="run_delay_ms")}
"""

_DECISION_OUTCOMES = """
CREATE OR REPLACE VIEW decision_outcomes AS
SELECT d.ts AS decided_at, d.host, d.plan_seq, d.mode, d.target,
       d.pid, d.start_time, d.container_id,
       d.tier, d.cpus, d.nice, d.ioclass, d.iolevel, d.policy, d.cpu_shares,
       d.reason AS decision_reason,
       e.ts AS enforced_at, e.outcome, e.reason AS outcome_reason, e."before", e."after",
       d.event_id AS decision_event_id, e.event_id AS enforcement_event_id
FROM decisions d
LEFT JOIN enforcements e
       ON e.host = d.host AND e.plan_id = d.batch AND e.target = d.target
      AND e.pid IS NOT DISTINCT FROM d.pid
      AND e.start_time IS NOT DISTINCT FROM d.start_time
      AND e.container_id IS NOT DISTINCT FROM d.container_id
WHERE d.target IS NOT NULL
"""

# Each target's newest decision per minute, live and shadow, joined on the target: a plan
# is published on a change and at least every heartbeat, so each minute has one.
_PLAN_MINUTES = """
    SELECT host, {policy} AS policy, time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
           target, pid, start_time, container_id,
           arg_max(tier, ts) AS tier, arg_max(cpus, ts) AS cpus, arg_max(nice, ts) AS nice,
           arg_max({sched}, ts) AS sched, arg_max(ioclass, ts) AS ioclass
    FROM {table}
    WHERE ts >= t_from::TIMESTAMP AND ts < t_to::TIMESTAMP
      AND target IN ('process', 'container')
    GROUP BY ALL
"""
_SHADOW_VS_LIVE = f"""
CREATE OR REPLACE MACRO shadow_vs_live(t_from, t_to) AS TABLE
WITH live AS ({_PLAN_MINUTES.format(policy="'live'", sched="policy", table="decisions")}),
shadow AS ({_PLAN_MINUTES.format(policy="policy", sched="sched_policy",
                                  table="shadow_decisions")})
SELECT s.host, s.policy, s.minute, coalesce(l.tier, s.tier) AS tier,
       count(*) AS targets,
       count(l.target) AS live_targets,
       count(*) FILTER (WHERE l.target IS NOT NULL AND l.tier IS DISTINCT FROM s.tier)
           AS other_tier,
       count(*) FILTER (WHERE l.target IS NOT NULL AND (l.cpus, l.nice, l.sched, l.ioclass)
                        IS DISTINCT FROM (s.cpus, s.nice, s.sched, s.ioclass)) AS differ
FROM shadow s
LEFT JOIN live l
       ON l.host = s.host AND l.minute = s.minute AND l.target = s.target
      AND l.pid IS NOT DISTINCT FROM s.pid AND l.start_time IS NOT DISTINCT FROM s.start_time
      AND l.container_id IS NOT DISTINCT FROM s.container_id
GROUP BY ALL
ORDER BY s.host, s.policy, s.minute, tier
"""

# Order matters: later statements use earlier views.
VIEW_STATEMENTS: list[str] = [
    _LATEST_CLASSIFICATION, _PROCESS_RATES, _TIER_USAGE, _TIER_USAGE_1M,
    _CORE_UTILIZATION, _CORE_UTILIZATION_1M, _TOP_BY_CPU, _TOP_BY_DELAY, _DECISION_OUTCOMES,
    _SHADOW_VS_LIVE, _HOST_PRESSURE, _TIER_PRESSURE, _TIER_MEMORY,
]
