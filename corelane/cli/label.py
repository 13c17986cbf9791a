"""`corelane label (--pid P | --match REGEX) [CLASS] [--tier TIER]`: an explicit class or
tier, as an event.

A label outranks rules and the model. ``--pid`` names one process on this host (by its
identity: the pid and the start time read now, so a later process that reuses the pid is
not labelled); ``--match`` names every process whose name or command line matches, on
every host. ``--tier`` pins the tier (with or without a class). The class ``auto`` removes
an earlier label and hands the process back to the rules and the model.

The label goes through the running instance's API (``POST /api/v1/labels``) when one
answers, else straight onto the labels topic: the same event either way.
"""
from __future__ import annotations

import getpass
from typing import Optional

import typer

from corelane.cli.context import context
from pipeline.vocabulary import AUTO, TIERS

NAME = "label"


def run(ctx: typer.Context,
        cls: Optional[str] = typer.Argument(None, metavar="[CLASS]",
                                            help=f"a class from classifier.classes, or "
                                                 f"'{AUTO}' to remove a label"),
        pid: Optional[int] = typer.Option(None, "--pid", "-p", help="one process on this host"),
        match: Optional[str] = typer.Option(None, "--match", "-m",
                                            help="regular expression over name and command "
                                                 "line"),
        tier: Optional[str] = typer.Option(None, "--tier", "-t",
                                           help=f"pin the tier: {', '.join(TIERS)}")) -> None:
    """Give processes an explicit class or tier (it outranks rules and the model)."""
    from pipeline import commands

    cli = context(ctx)
    cfg = cli.settings()
    try:
        label = commands.label(cfg.classifier.classes, cls=cls, tier=tier, pid=pid,
                               match=match, author=getpass.getuser(),
                               proc_root=cfg.host_paths.proc)
    except commands.CommandError as exc:
        cli.fail(str(exc), 2)
    body = {"class": cls, "tier": tier, "pid": pid, "match": match}
    event_id = cli.command("/labels", {k: v for k, v in body.items() if v is not None}, label)
    target = f"process {pid} (started at tick {label.start_time})" if pid is not None \
        else f"processes matching {match!r}"
    what = " and ".join(x for x in (cls, f"tier {tier}" if tier else None) if x)
    cli.say(f"labelled {target} as {what} (event {event_id})")
