"""The questions the HTTP API asks of the history, as parameterised SQL.

Each function returns ``(sql, params)`` for ``QueryEngine.run``: values travel as
parameters, never spliced into the text. Times are UTC ``datetime``s (the history's
``TIMESTAMP`` columns are UTC without a zone); windows are half-open, ``t_from <= ts <
t_to``. Lists are newest first and paged with ``limit`` and ``offset``; each asks for one
row more than ``limit``, so the caller can tell whether another page follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

Sql = tuple[str, list[Any]]
# How far before a window a process's classification is looked for.
TIER_LOOKBACK = "INTERVAL 10 MINUTE"


@dataclass
class Filter:
    """The filters the event lists share; None means any."""
    t_from: datetime | None = None
    t_to: datetime | None = None
    host: str | None = None
    pid: int | None = None
    start_time: int | None = None
    tier: str | None = None
    limit: int = 100
    offset: int = 0

    def where(self, item: str, alias: str = "", tier: bool = True) -> tuple[str, list[Any]]:
        """The filters as a WHERE clause on a batch table's item rows: ``item`` is a column
        every item has, NULL only in the row an empty chunk is stored as."""
        a = f"{alias}." if alias else ""
        clauses, params = [f"{a}{item} IS NOT NULL"], []
        for column, value in ((f"{a}ts >= ?", self.t_from), (f"{a}ts < ?", self.t_to),
                              (f"{a}host = ?", self.host), (f"{a}pid = ?", self.pid),
                              (f"{a}start_time = ?", self.start_time),
                              (f"{a}tier = ?", self.tier if tier else None)):
            if value is not None:
                clauses.append(column)
                params.append(value)
        return " AND ".join(clauses), params

    def page(self) -> tuple[str, list[Any]]:
        return "LIMIT ? OFFSET ?", [self.limit + 1, self.offset]


def classifications(f: Filter) -> Sql:
    where, params = f.where("pid")
    page, more = f.page()
    return (f"""
SELECT ts, host, pid, start_time, class, tier, confidence, source, reason
FROM classifications WHERE {where}
ORDER BY ts DESC, pid {page}""", params + more)


def decisions(f: Filter) -> Sql:
    where, params = f.where("target")
    page, more = f.page()
    return (f"""
SELECT ts, host, plan_seq, batch AS plan_id, mode, strategy, target, tier, cpus, pid,
       start_time, container_id, nice, ioclass, iolevel, policy, cpu_shares,
       idle_latency_us, reason
FROM decisions WHERE {where}
ORDER BY ts DESC, target, pid {page}""", params + more)


def enforcements(f: Filter) -> Sql:
    """Each result with the tier its decision gave (a plan is its decisions batch)."""
    where, params = f.where("target", "e", tier=False)
    page, more = f.page()
    tier_clause = "AND d.tier = ?" if f.tier is not None else ""
    tier_params = [f.tier] if f.tier is not None else []
    return (f"""
WITH e AS (SELECT * FROM enforcements e WHERE {where})
SELECT e.ts, e.host, e.plan_seq, e.plan_id, e.target, d.tier, e.outcome, e.pid,
       e.start_time, e.container_id, e.reason, e.before::VARCHAR AS before,
       e.after::VARCHAR AS after
FROM e LEFT JOIN decisions d
  ON d.batch = e.plan_id AND d.host = e.host AND d.target = e.target
 AND d.pid IS NOT DISTINCT FROM e.pid AND d.start_time IS NOT DISTINCT FROM e.start_time
 AND d.container_id IS NOT DISTINCT FROM e.container_id
WHERE TRUE {tier_clause}
ORDER BY e.ts DESC, e.pid {page}""", params + tier_params + more)


def last_sample(host: str, pid: int, start_time: int) -> Sql:
    return ("""
SELECT ts, name, cmdline, state, container_id, cpu_share, nice, policy, affinity
FROM process_samples WHERE host = ? AND pid = ? AND start_time = ?
ORDER BY ts DESC LIMIT 1""", [host, pid, start_time])


def core_utilization(host: str, t_from: datetime, t_to: datetime, step_s: int) -> Sql:
    return ("""
SELECT time_bucket(to_seconds(?::BIGINT), ts) AS ts, cpu, avg(percent) AS percent_avg,
       max(percent) AS percent_max, count(*) AS samples
FROM core_utilization WHERE host = ? AND ts >= ? AND ts < ?
GROUP BY ALL ORDER BY ts, cpu""", [step_s, host, t_from, t_to])


def container_stats(host: str, container_id: str, t_from: datetime, t_to: datetime,
                    step_s: int) -> Sql:
    return ("""
SELECT time_bucket(to_seconds(?::BIGINT), ts) AS ts, avg(cpu_share) AS cpu_share_avg,
       max(cpu_share) AS cpu_share_max, max(memory_bytes) AS memory_bytes_max,
       count(*) AS samples
FROM container_samples WHERE host = ? AND container_id = ? AND ts >= ? AND ts < ?
GROUP BY ALL ORDER BY ts""", [step_s, host, container_id, t_from, t_to])


@dataclass
class LatencyQuery:
    host: str | None
    t_from: datetime
    t_to: datetime
    tier: str | None = None
    per_process: bool = False
    limit: int = 20


def latency_stats(q: LatencyQuery) -> Sql:
    """Run-queue delay (ms waited for a CPU per second) per tier, or per process (the
    ``limit`` worst by p99), over the window. Each process's tier is its newest before
    ``t_to``, looked for from TIER_LOOKBACK before the window (every class is said again
    each ``classifier.heartbeat_s``, so it is there; older is 'unclassified')."""
    host_clause = "AND host = ?" if q.host is not None else ""
    host_params = [q.host] if q.host is not None else []
    tier_clause = "WHERE tier = ?" if q.tier is not None else ""
    tier_params = [q.tier] if q.tier is not None else []
    if q.per_process:
        group = "host, tier, pid, start_time"
        select = "host, tier, pid, start_time, arg_max(name, ts) AS name"
        tail, tail_params = "ORDER BY p99 DESC, pid LIMIT ?", [q.limit]
    else:
        group = "host, tier"
        select = "host, tier, NULL::INTEGER AS pid, NULL::BIGINT AS start_time, " \
                 "NULL::VARCHAR AS name"
        tail, tail_params = "ORDER BY host, tier", []
    return (f"""
WITH s AS (
    SELECT host, pid, start_time, ts, name, run_delay_ns FROM process_samples
    WHERE ts >= ? AND ts < ? {host_clause}
), r AS (
    SELECT host, pid, start_time, ts, name,
           (run_delay_ns - lag(run_delay_ns) OVER w) / 1e6
               / nullif(epoch(ts - lag(ts) OVER w), 0) AS delay
    FROM s WINDOW w AS (PARTITION BY host, pid, start_time ORDER BY ts)
), c AS (
    SELECT host, pid, start_time, arg_max(tier, ts) AS tier FROM classifications
    WHERE ts >= ?::TIMESTAMP - {TIER_LOOKBACK} AND ts < ? {host_clause} GROUP BY ALL
), t AS (
    SELECT r.*, coalesce(c.tier, 'unclassified') AS tier
    FROM r LEFT JOIN c USING (host, pid, start_time) WHERE r.delay IS NOT NULL
)
SELECT {select}, count(DISTINCT (pid, start_time)) AS processes, count(*) AS samples,
       quantile_cont(delay, 0.5) AS p50, quantile_cont(delay, 0.95) AS p95,
       quantile_cont(delay, 0.99) AS p99, max(delay) AS max
FROM t {tier_clause} GROUP BY {group} {tail}""",
            [q.t_from, q.t_to, *host_params, q.t_from, q.t_to, *host_params, *tier_params,
             *tail_params])


def alerts(state: str | None, host: str | None, limit: int, offset: int) -> Sql:
    """Each alert's newest transition: open ones, resolved ones, or both."""
    clauses, params = ["TRUE"], []
    if state is not None:
        clauses.append("state = ?")
        params.append(state)
    if host is not None:
        clauses.append("host = ?")
        params.append(host)
    return (f"""
WITH newest AS (
    SELECT alert_id, arg_max(host, ts) AS host, arg_max(rule, ts) AS rule,
           arg_max(message, ts) AS message, arg_max(state, ts) AS state,
           arg_max(severity, ts) AS severity, min(opened_at) AS opened_at,
           arg_max(resolved_at, ts) AS resolved_at, arg_max(details, ts)::VARCHAR AS details
    FROM alerts GROUP BY alert_id
)
SELECT * FROM newest WHERE {' AND '.join(clauses)}
ORDER BY opened_at DESC, alert_id LIMIT ? OFFSET ?""", params + [limit + 1, offset])
