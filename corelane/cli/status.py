"""`corelane status`: each tier's cores and members in this host's newest plan."""
from __future__ import annotations

import typer

from corelane.cli.context import context

NAME = "status"


def run(ctx: typer.Context,
        format: str = typer.Option("table", "--format", "-f",
                                   help="table, csv or json")) -> None:
    """Each tier's cores and members in this host's newest plan."""
    from api.client import query_history
    from storage.query import QueryError
    from storage.status import status_sql

    cli = context(ctx)
    fmt = cli.check_format(format)
    cfg = cli.settings()
    try:
        result = query_history(cfg, status_sql(cfg.host))
    except QueryError as exc:
        cli.fail(str(exc))
    cli.show(result, fmt)
