"""`corelane status` and `corelane revert`: what corelane has done on this host, and undoing it."""
from __future__ import annotations

import typer

# Each tier's pool and members in this host's newest plan (history: the decisions table).
STATUS_SQL = """
WITH complete AS (  -- a plan whose every chunk is recorded
    SELECT plan_seq, batch FROM decisions WHERE host = $host
    GROUP BY plan_seq, batch HAVING count(DISTINCT chunk) = max(chunks)
), newest AS (
    SELECT plan_seq AS seq, batch FROM complete ORDER BY plan_seq DESC LIMIT 1
), names AS (
    SELECT pid, start_time, any_value(name) AS name FROM process_samples
    WHERE host = $host AND ts > now()::TIMESTAMP - INTERVAL 10 MINUTE
    GROUP BY pid, start_time
)
SELECT d.tier, d.cpus, count(*) AS members,
       coalesce(array_to_string(list_slice(
           list(DISTINCT coalesce(n.name, d.container_id))
               FILTER (WHERE coalesce(n.name, d.container_id) IS NOT NULL), 1, 6), ', '),
           '') AS some_members
FROM decisions d
JOIN newest ON d.plan_seq = newest.seq AND d.batch = newest.batch
LEFT JOIN names n ON n.pid = d.pid AND n.start_time = d.start_time
WHERE d.host = $host AND d.target <> 'cpu'
GROUP BY d.tier, d.cpus
ORDER BY CASE d.tier WHEN 'ultra_critical' THEN 0 WHEN 'critical' THEN 1 WHEN 'high' THEN 2
         WHEN 'normal' THEN 3 WHEN 'low' THEN 4 WHEN 'background' THEN 5 ELSE 6 END, d.cpus
"""


def status_command() -> None:
    """Each tier's cores and members in this host's newest plan."""
    from pipeline.cli import settings
    from pipeline.query_command import query_command
    cfg = settings()
    host = cfg.host.replace("'", "''")
    query_command(STATUS_SQL.replace("$host", f"'{host}'"), format="table")


def revert_command() -> None:
    """Put back every setting corelane changed (from its journal), while it is not running."""
    from agents.applier import journal_dir, make_guard
    from agents.enforcement import Journal, restorer
    from api.client import query_running_instance
    from pipeline.cli import err, fail, settings
    from pipeline.up import docker_client
    from storage.query import QueryError

    cfg = settings()
    try:
        running = query_running_instance(cfg.api.listen, "SELECT 1", 5.0) is not None
    except QueryError:
        running = True
    if running:
        fail(f"corelane is running (its API answers at {cfg.api.listen}); stop it instead: "
             f"on stop it puts back everything it changed")
    folder = journal_dir(cfg)
    if not folder.exists():
        err.print(f"nothing to revert: no journal at {folder}", highlight=False)
        return
    journal = Journal(folder)
    try:
        results = journal.restore_all(restorer(docker_client(cfg.collector.docker_host),
                                               guard=make_guard(cfg, ())))
    finally:
        journal.close()
    for r in results:
        target = r.subject
        err.print(f"{target}: {r.outcome}{' (' + r.reason + ')' if r.reason else ''}",
                  highlight=False)
    err.print(f"{len(results)} target(s) handled", highlight=False)
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)
