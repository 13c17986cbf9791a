"""Rollups into 1-minute aggregates, and deletion of what has outlived its retention.

The recorder calls ``retention_step(store, now)`` between batches. Each call does at most
one bounded unit of work (one rollup of at most ``step_minutes`` minutes, or one delete of
at most ``purge_minutes`` minutes of rows) in its own transaction, so it never holds
recording up for long; it returns True when it did something (call again soon) and False
when nothing was due.

Rollups are exactly-once: each source table has a watermark in ``retention_state``
(``rollup:<table>``), every minute before it has been rolled up, and the watermark moves in
the same transaction as the rollup rows. A minute is rolled up once the table holds data at
least ``lateness_s`` past the minute's end (so a lagging chunk of the same sweep still gets
in) and the minute has ended by ``now``. Samples that arrive later than that for a minute
already rolled up stay in the raw table until their retention ends but are not in the
rollup.

Raw samples are deleted once older than ``raw_retention_h`` AND rolled up; rollup rows once
older than ``rollup_retention_d``. Event tables other than samples are kept.

Counters are cumulative per process ``(host, pid, start_time)``; a minute's delta is its
last value minus the identity's last value before the minute (looked for up to
``LOOKBACK`` back), or minus its first value in the minute when the process is new.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from storage.history import HistoryStore

STEP_MINUTES = 2  # ~0.1-0.4 s per call for 1,000 processes at 1 Hz
PURGE_MINUTES = 10
ROLLUP_PURGE_MINUTES = 120
LATENESS_S = 30.0
LOOKBACK = "INTERVAL 2 MINUTE"

# (column in process_samples_1m, cumulative counter in process_samples)
_COUNTERS = [("cpu_s", "cpu_time_s"), ("run_time_ns", "run_time_ns"),
             ("run_delay_ns", "run_delay_ns"), ("vol_ctx", "vol_ctx"),
             ("invol_ctx", "invol_ctx"), ("io_read_bytes", "io_read_bytes"),
             ("io_write_bytes", "io_write_bytes")]

_PROCESS_ROLLUP = f"""
INSERT INTO process_samples_1m BY NAME
WITH cur AS (
    SELECT host, pid, start_time, time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
           arg_max(name, ts) AS name, arg_max(cmdline, ts) AS cmdline,
           arg_max(container_id, ts) AS container_id, count(*) AS samples,
           avg(cpu_share) AS cpu_share_avg, max(cpu_share) AS cpu_share_max,
           {", ".join(f"min({src}) AS {dst}_lo, max({src}) AS {dst}_hi" for dst, src in _COUNTERS)},
           avg(rss_bytes) AS rss_bytes_avg, max(rss_bytes) AS rss_bytes_max,
           max(threads) AS threads_max, arg_max(nice, ts) AS nice,
           arg_max(policy, ts) AS policy, arg_max(affinity, ts) AS affinity
    FROM process_samples
    WHERE ts >= $lo AND ts < $hi AND pid IS NOT NULL AND partial IS NOT TRUE
    GROUP BY ALL
),
before AS (
    SELECT host, pid, start_time,
           {", ".join(f"max({src}) AS {dst}_prev" for dst, src in _COUNTERS)}
    FROM process_samples
    WHERE ts >= $lo::TIMESTAMP - {LOOKBACK} AND ts < $lo AND pid IS NOT NULL
    GROUP BY ALL
),
chained AS (
    SELECT cur.*, {", ".join(f"lag({dst}_hi) OVER w AS {dst}_lag" for dst, _ in _COUNTERS)}
    FROM cur
    WINDOW w AS (PARTITION BY host, pid, start_time ORDER BY minute)
)
SELECT c.host, c.pid, c.start_time, c.minute, c.name, c.cmdline, c.container_id, c.samples,
       c.cpu_share_avg, c.cpu_share_max,
       {", ".join(f"greatest(c.{d}_hi - coalesce(c.{d}_lag, b.{d}_prev, c.{d}_lo), 0) AS {d}"
                  for d, _ in _COUNTERS)},
       c.rss_bytes_avg, c.rss_bytes_max, c.threads_max, c.nice, c.policy, c.affinity
FROM chained c
LEFT JOIN before b ON b.host = c.host AND b.pid = c.pid AND b.start_time = c.start_time
"""

_HOST_ROLLUP = """
INSERT INTO host_samples_1m BY NAME
WITH base AS (
    SELECT *, time_bucket(INTERVAL 1 MINUTE, ts) AS minute
    FROM host_samples WHERE ts >= $lo AND ts < $hi
),
per_cpu AS (
    SELECT host, minute, cpu, avg(percent) AS pct_avg, max(percent) AS pct_max
    FROM (SELECT host, minute, unnest(range(len(cpu_percent))) AS cpu,
                 unnest(cpu_percent) AS percent
          FROM base WHERE cpu_percent IS NOT NULL)
    GROUP BY ALL
),
cpus AS (
    SELECT host, minute, list(pct_avg ORDER BY cpu) AS cpu_percent_avg,
           list(pct_max ORDER BY cpu) AS cpu_percent_max
    FROM per_cpu GROUP BY ALL
),
agg AS (
    SELECT host, minute, count(*) AS samples,
           avg(load1) AS load1_avg, max(load1) AS load1_max, avg(load5) AS load5_avg,
           avg(load15) AS load15_avg, max(mem_total_bytes) AS mem_total_bytes,
           avg(mem_available_bytes) AS mem_available_bytes_avg,
           min(mem_available_bytes) AS mem_available_bytes_min,
           max(swap_used_bytes) AS swap_used_bytes_max
    FROM base GROUP BY ALL
)
SELECT agg.*, cpus.cpu_percent_avg, cpus.cpu_percent_max
FROM agg LEFT JOIN cpus ON cpus.host = agg.host AND cpus.minute = agg.minute
"""

_CONTAINER_ROLLUP = """
INSERT INTO container_samples_1m BY NAME
SELECT host, container_id, time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
       arg_max(name, ts) AS name, arg_max(image, ts) AS image, count(*) AS samples,
       avg(cpu_share) AS cpu_share_avg, max(cpu_share) AS cpu_share_max,
       avg(memory_bytes) AS memory_bytes_avg, max(memory_bytes) AS memory_bytes_max,
       max(len(pids)) AS pids_max
FROM container_samples
WHERE ts >= $lo AND ts < $hi AND container_id IS NOT NULL
GROUP BY ALL
"""

# raw table -> (rollup table, statement)
ROLLUPS: dict[str, tuple[str, str]] = {
    "process_samples": ("process_samples_1m", _PROCESS_ROLLUP),
    "host_samples": ("host_samples_1m", _HOST_ROLLUP),
    "container_samples": ("container_samples_1m", _CONTAINER_ROLLUP),
}


@dataclass(frozen=True)
class Limits:
    step_minutes: int = STEP_MINUTES
    purge_minutes: int = PURGE_MINUTES
    rollup_purge_minutes: int = ROLLUP_PURGE_MINUTES
    lateness_s: float = LATENESS_S


def _utc(now: float | datetime | None) -> datetime:
    """A naive UTC datetime, the form TIMESTAMP columns hold."""
    if now is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(now, datetime):
        return now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    return datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None)


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def watermark(con, table: str) -> datetime | None:
    """Every minute of ``table`` before this has been rolled up (None: nothing yet)."""
    found = con.execute("SELECT until FROM retention_state WHERE task = ?",
                        [f"rollup:{table}"]).fetchall()
    return found[0][0] if found else None


def _rollup_once(store: HistoryStore, table: str, now: datetime,
                 limits: Limits) -> bool | None:
    """Roll up the next complete minutes of ``table``.

    None when no minute was due, else whether more complete minutes remain.
    """
    rollup_table, statement = ROLLUPS[table]
    with store.transaction() as con:
        mark = watermark(con, table)
        where = "" if mark is None else "WHERE ts >= $mark"
        first, last = con.execute(f"SELECT min(ts), max(ts) FROM {table} {where}",
                                  {} if mark is None else {"mark": mark}).fetchall()[0]
        if first is None:
            return None
        lo = _floor_minute(first)
        bound = _floor_minute(min(now, last) - timedelta(seconds=limits.lateness_s))
        hi = min(lo + timedelta(minutes=limits.step_minutes), bound)
        if hi <= lo:
            return None
        con.execute(statement, {"lo": lo, "hi": hi})
        con.execute("INSERT INTO retention_state VALUES (?, ?) ON CONFLICT (task) "
                    "DO UPDATE SET until = excluded.until", [f"rollup:{table}", hi])
    return hi < bound


def _purge_once(store: HistoryStore, table: str, column: str, cutoff: datetime,
                span_minutes: int, rolled_up: str | None = None) -> bool | None:
    """Delete up to ``span_minutes`` of the oldest rows older than ``cutoff`` (and, with
    ``rolled_up``, older than that raw table's rollup watermark).

    None when nothing was due, else whether more remains.
    """
    with store.transaction() as con:
        if rolled_up is not None:
            mark = watermark(con, rolled_up)
            if mark is None:
                return None  # nothing rolled up yet: keep everything
            cutoff = min(cutoff, mark)
        # zonemaps skip every row group that starts at or after the cutoff
        oldest = con.execute(f"SELECT min({column}) FROM {table} WHERE {column} < ?",
                             [cutoff]).fetchall()[0][0]
        if oldest is None:
            return None
        upto = min(cutoff, _floor_minute(oldest) + timedelta(minutes=span_minutes))
        con.execute(f"DELETE FROM {table} WHERE {column} < ?", [upto]).fetchall()
    return upto < cutoff


def retention_step(store: HistoryStore, now: float | datetime | None = None,
                   limits: Limits = Limits()) -> bool:
    """Do the next bounded unit of rollup or deletion; True if one was done (call again
    soon), False if nothing was due. ``now`` is epoch seconds or a datetime (UTC)."""
    at = _utc(now)
    settings = store.settings
    for table in ROLLUPS:
        if _rollup_once(store, table, at, limits) is not None:
            return True
    raw_cutoff = at - timedelta(hours=settings.raw_retention_h)
    for table in ROLLUPS:
        if _purge_once(store, table, "ts", raw_cutoff, limits.purge_minutes,
                       rolled_up=table) is not None:
            return True
    rollup_cutoff = at - timedelta(days=settings.rollup_retention_d)
    for table, _ in ROLLUPS.values():
        if _purge_once(store, table, "minute", rollup_cutoff,
                       limits.rollup_purge_minutes) is not None:
            return True
    return False
