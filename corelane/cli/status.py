"""`corelane status`: each tier's cores and members in this host's newest plan, the strategy
in force and why, and what the kernel allows."""
from __future__ import annotations

import typer

from corelane.cli.context import context

NAME = "status"

AUTOGROUP = ("autogroup is on: nice orders threads only inside one session's group, so "
             "corelane relies on the scheduling policy (SCHED_IDLE, SCHED_BATCH), which works "
             "across groups")


def run(ctx: typer.Context,
        format: str = typer.Option("table", "--format", "-f",
                                   help="table, csv (the plan alone) or json")) -> None:
    """Each tier's cores and members in this host's newest plan, and the strategy in force."""
    from api.client import query_history
    from storage.query import QueryError, result_to_dict
    from storage.status import host_sql, limits_sql, status_sql, strategy_sql

    cli = context(ctx)
    fmt = cli.check_format(format)
    cfg = cli.settings()
    try:
        plan = query_history(cfg, status_sql(cfg.host))
        strategy = query_history(cfg, strategy_sql(cfg.host))
        host = query_history(cfg, host_sql(cfg.host))
        limits = query_history(cfg, limits_sql(cfg.host))
    except QueryError as exc:
        cli.fail(str(exc))
    chosen = dict(zip(strategy.columns, strategy.rows[0])) if strategy.rows else None
    autogroup = host.rows[0][0] if host.rows else None
    if fmt == "json":
        safe = result_to_dict(strategy)
        cli.print_json({"plan": result_to_dict(plan), "autogroup": autogroup,
                        "limits": dict(limits.rows),
                        "strategy": dict(zip(safe["columns"], safe["rows"][0]))
                        if safe["rows"] else None})
        return
    cli.show(plan, fmt)
    if fmt != "table":
        return
    if chosen is None:
        cli.out.print(f"strategy: {cfg.closed_loop.initial} (configured; the closed loop has "
                      f"not measured this host yet)", highlight=False)
    else:
        p99 = chosen["last_p99_us"]
        cli.out.print(f"strategy: {chosen['strategy']} ({chosen['state']} at "
                      f"{chosen['since']}): {chosen['reason']}"
                      + (f"; last check p99 {p99:.0f} µs" if p99 is not None else ""),
                      highlight=False)
    if limits.rows:
        cli.out.print("limits: " + "; ".join(f"{tier}: {text}" for tier, text in limits.rows),
                      highlight=False)
    if autogroup:
        cli.out.print(AUTOGROUP, highlight=False)
