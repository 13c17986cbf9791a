"""`corelane query SQL`: read-only SQL over the history, running or not.

Through the running instance's HTTP API when one answers at CORELANE_API (it holds the
DuckDB file, so nothing else can open it); otherwise straight from the file, read-only.
"""
from __future__ import annotations

import typer

from corelane.cli.context import context

NAME = "query"


def run(ctx: typer.Context,
        sql: str = typer.Argument(..., help="one read-only statement, e.g. \"SELECT class, "
                                            "count(*) FROM classifications GROUP BY 1\""),
        format: str = typer.Option("table", "--format", "-f",
                                   help="table (for people), csv (header + rows) or json "
                                        "(one object)")) -> None:
    """Run read-only SQL over the history: SELECT, WITH, DESCRIBE, SHOW, EXPLAIN SELECT."""
    from api.client import query_history
    from storage.query import QueryError

    cli = context(ctx)
    fmt = cli.check_format(format)
    try:
        result = query_history(cli.settings(), sql)
    except QueryError as exc:
        cli.fail(str(exc))
    cli.show(result, fmt)
