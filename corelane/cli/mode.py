"""`corelane mode MODE [--host H ...]`: switch the allocator's mode, as a command event.

A commanded mode outranks the schedule and ``allocator.mode`` until ``corelane mode auto``
hands the choice back to them: an operator who asks for ``emergency`` during trading hours
means it.
"""
from __future__ import annotations

import asyncio
from typing import List, Optional

import typer

from corelane.cli.context import context
from pipeline.vocabulary import AUTO, MODES

NAME = "mode"


def run(ctx: typer.Context,
        mode: str = typer.Argument(..., metavar="MODE",
                                   help=f"{', '.join(MODES)}, or '{AUTO}' for the schedule "
                                        f"and allocator.mode again"),
        host: Optional[List[str]] = typer.Option(None, "--host", "-H",
                                                 help="a host to switch (repeatable; default: "
                                                      "every host the allocator plans for)"),
        ) -> None:
    """Switch the allocation mode now (it outranks the schedule until 'auto')."""
    from pipeline.bus import BrokerUnreachable, send_one
    from pipeline.events import Command

    cli = context(ctx)
    if mode != AUTO and mode not in MODES:
        cli.fail(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}, or '{AUTO}'", 2)
    cfg = cli.settings()
    args: dict = {"mode": mode}
    if host:
        args["hosts"] = list(host)
    try:
        event_id = asyncio.run(send_one(cfg, Command(name="mode", args=args))).id
    except BrokerUnreachable as exc:
        cli.fail(str(exc))
    where = ", ".join(host) if host else "every host"
    what = "the schedule and allocator.mode" if mode == AUTO else f"mode {mode}"
    cli.say(f"{where}: {what} (event {event_id})")
