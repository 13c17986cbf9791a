"""`corelane mode MODE [--host H ...]`: switch the allocator's mode, as a command event.

A commanded mode outranks the schedule and ``allocator.mode`` until ``corelane mode auto``
hands the choice back to them: an operator who asks for ``emergency`` during trading hours
means it. It goes through the running instance's API when one answers, else straight onto
the commands topic.
"""
from __future__ import annotations

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
    from pipeline import commands

    cli = context(ctx)
    try:
        command = commands.mode(mode, list(host or []))
    except commands.CommandError as exc:
        cli.fail(str(exc), 2)
    event_id = cli.command("/mode", {"mode": mode, "hosts": list(host or [])}, command)
    where = ", ".join(host) if host else "every host"
    what = "the schedule and allocator.mode" if mode == AUTO else f"mode {mode}"
    cli.say(f"{where}: {what} (event {event_id})")
