"""`corelane pause` and `corelane resume [--host H ...]`: stop and restart enforcement, as
command events.

While paused corelane goes on observing, judging and planning (the plans are recorded),
and changes nothing; what it had changed stays as it is. Resume applies the newest plan at
once. Both go through the running instance's API when one answers, else straight onto the
commands topic.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from corelane.cli.context import context

HOSTS = typer.Option(None, "--host", "-H",
                     help="a host (repeatable; default: every host)")


def _give(ctx: typer.Context, name: str, host: list[str], said: str) -> None:
    from pipeline import commands

    cli = context(ctx)
    make = commands.pause if name == commands.PAUSE else commands.resume
    event_id = cli.command(f"/{name}", {"hosts": host}, make(host))
    cli.say(f"{', '.join(host) if host else 'every host'}: {said} (event {event_id})")


def pause(ctx: typer.Context, host: Optional[List[str]] = HOSTS) -> None:
    """Stop changing anything (corelane still observes and decides) until `resume`."""
    _give(ctx, "pause", list(host or []), "paused: observing and deciding, changing nothing")


def resume(ctx: typer.Context, host: Optional[List[str]] = HOSTS) -> None:
    """Enforce the plans again, the newest at once."""
    _give(ctx, "resume", list(host or []), "enforcing again")
