"""`corelane query SQL`: read-only SQL over the history, running or not.

Through the running instance's HTTP API when one answers at CORELANE_API (it holds the
DuckDB file, so nothing else can open it); otherwise straight from the file, read-only.
"""
from __future__ import annotations

import sys

import typer

FORMATS = ("table", "csv", "json")
# Beyond the server's own time limit, to get its timeout message rather than ours.
HTTP_MARGIN_S = 10.0


def query_command(
    sql: str = typer.Argument(..., help="one read-only statement, e.g. "
                                        "\"SELECT class, count(*) FROM classifications GROUP BY 1\""),
    format: str = typer.Option("table", "--format", "-f",
                               help="table (for people), csv (header + rows) or json (one object)"),
) -> None:
    """Run read-only SQL over the history: SELECT, WITH, DESCRIBE, SHOW, EXPLAIN SELECT."""
    from rich.console import Console

    from api.client import query_running_instance
    from pipeline.cli import fail, settings
    from storage.query import (QueryEngine, QueryError, open_for_query, render_table, to_csv,
                               to_json)

    fmt = format.strip().lower()
    if fmt not in FORMATS:
        fail(f"unknown --format {format!r}: choose one of {', '.join(FORMATS)}", 2)
    cfg = settings()
    limits = cfg.storage
    try:
        result = query_running_instance(cfg.api.listen, sql, limits.query_timeout_s + HTTP_MARGIN_S)
        if result is None:
            con = open_for_query(cfg.db_path)
            try:
                result = QueryEngine(con, limits.query_timeout_s, limits.query_max_rows).run(sql)
            finally:
                con.close()
    except QueryError as exc:
        fail(str(exc))
        return

    if fmt == "csv":
        sys.stdout.write(to_csv(result))
        if result.truncated:  # CSV has no room to say so; stderr does, stdout stays data
            sys.stderr.write(f"corelane: only the first {len(result.rows)} rows were returned "
                             f"(storage.query_max_rows); add a LIMIT or raise it\n")
    elif fmt == "json":
        sys.stdout.write(to_json(result) + "\n")
    else:
        Console().print(render_table(result))
