"""What `corelane status` shows: each tier's pool and members in a host's newest plan."""
from __future__ import annotations

from pipeline.vocabulary import HOUSEKEEPING, TIERS


def sql_text(value: str) -> str:
    """A string as a SQL literal."""
    return "'" + value.replace("'", "''") + "'"


def tier_order(column: str) -> str:
    """An ORDER BY expression that sorts tiers most protected first, housekeeping last."""
    cases = " ".join(f"WHEN {sql_text(t)} THEN {i}" for i, t in enumerate((*TIERS, HOUSEKEEPING)))
    return f"CASE {column} {cases} ELSE {len(TIERS) + 1} END"


def status_sql(host: str) -> str:
    """Each tier's cores and members in the host's newest whole plan (the one recorded
    last, whatever its number), with some members' names, the cores its processes used
    over the last minute and the memory its group uses (tier limits)."""
    h = sql_text(host)
    return f"""
WITH complete AS (  -- a plan whose every chunk is recorded
    SELECT batch, max(ts) AS decided_at FROM decisions WHERE host = {h}
    GROUP BY batch HAVING count(DISTINCT chunk) = max(chunks)
), newest AS (
    SELECT batch FROM complete ORDER BY decided_at DESC LIMIT 1
), names AS (
    SELECT pid, start_time, arg_max(name, ts) AS name FROM process_samples
    WHERE host = {h} AND ts > now()::TIMESTAMP - INTERVAL 10 MINUTE
    GROUP BY pid, start_time
), used AS (
    SELECT tier, round(arg_max(cores, minute), 2) AS cores_used
    FROM tier_usage(now()::TIMESTAMP - INTERVAL 1 MINUTE, now()::TIMESTAMP)
    WHERE host = {h} GROUP BY tier
), memory AS (  -- the newest sample of the tier groups' memory (tier limits)
    SELECT tier_memory_bytes AS bytes FROM host_samples
    WHERE host = {h} AND ts > now()::TIMESTAMP - INTERVAL 10 MINUTE
    ORDER BY ts DESC LIMIT 1
)
SELECT d.tier, d.cpus, count(*) AS members,
       coalesce(array_to_string(list_slice(
           list(DISTINCT coalesce(n.name, d.container_id))
               FILTER (WHERE coalesce(n.name, d.container_id) IS NOT NULL), 1, 6), ', '),
           '') AS some_members,
       any_value(u.cores_used) AS cores_used,
       format_bytes(any_value((SELECT bytes FROM memory)[d.tier])) AS memory_used,
       any_value(d.plan_seq) AS plan
FROM decisions d
JOIN newest ON d.batch = newest.batch
LEFT JOIN names n ON n.pid = d.pid AND n.start_time = d.start_time
LEFT JOIN used u ON u.tier = d.tier
WHERE d.host = {h} AND d.target NOT IN ('cpu', 'cgroup')
GROUP BY d.tier, d.cpus
ORDER BY {tier_order("d.tier")}, d.cpus
"""


def limits_sql(host: str) -> str:
    """Each limited tier's group limits in the host's newest plan, in a few words."""
    h = sql_text(host)
    return f"""
WITH newest AS (
    SELECT batch FROM decisions WHERE host = {h} ORDER BY ts DESC LIMIT 1
)
SELECT d.tier, concat_ws(', ',
           'cpu weight ' || d.cpu_weight,
           'cpu quota ' || round(d.cpu_quota_us / 100000, 2) || ' cores',
           'memory high ' || format_bytes(d.memory_high),
           'memory max ' || format_bytes(d.memory_max),
           CASE WHEN d.swap = false THEN 'no swap' END) AS limits
FROM decisions d JOIN newest ON d.batch = newest.batch
WHERE d.host = {h} AND d.target = 'cgroup'
ORDER BY {tier_order("d.tier")}
"""


def strategy_sql(host: str) -> str:
    """The closed loop's newest word for the host (the strategy in force and why), with the
    newest check of it."""
    h = sql_text(host)
    return f"""
SELECT s.strategy, s.state, s.reason, s.ts AS since,
       (SELECT p99_us FROM measurements m WHERE m.host = {h} AND m.strategy = s.strategy
        ORDER BY m.ts DESC LIMIT 1) AS last_p99_us
FROM strategies s WHERE s.host = {h} ORDER BY s.ts DESC LIMIT 1
"""


def host_sql(host: str) -> str:
    """What the newest host sample says of the kernel: whether autogroup is on."""
    return (f"SELECT autogroup FROM host_samples WHERE host = {sql_text(host)} "
            f"ORDER BY ts DESC LIMIT 1")
