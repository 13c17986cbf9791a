"""`corelane label (--pid P | --match REGEX) CLASS`: an explicit class, as an event.

A label outranks rules and the model. ``--pid`` names one process on this host (by its
identity: the pid and the start time read now, so a later process that reuses the pid is
not labelled); ``--match`` names every process whose name or command line matches, on
every host. The class ``auto`` removes an earlier label and hands the process back to the
rules and the model.
"""
from __future__ import annotations

import asyncio
import getpass
from typing import Optional

import typer

from corelane.cli.context import context
from pipeline.vocabulary import AUTO

NAME = "label"


def run(ctx: typer.Context,
        cls: str = typer.Argument(..., metavar="CLASS",
                                  help=f"a class from classifier.classes, or '{AUTO}' to "
                                       f"remove a label"),
        pid: Optional[int] = typer.Option(None, "--pid", "-p", help="one process on this host"),
        match: Optional[str] = typer.Option(None, "--match", "-m",
                                            help="regular expression over name and command "
                                                 "line")) -> None:
    """Give processes an explicit class (it outranks rules and the model)."""
    from pipeline import procfs
    from pipeline.bus import BrokerUnreachable, send_one
    from pipeline.events import Label
    from pipeline.patterns import check_regex

    cli = context(ctx)
    cfg = cli.settings()
    classes = cfg.classifier.classes
    if cls != AUTO and cls not in classes:
        cli.fail(f"unknown class {cls!r}: choose one of {', '.join(classes)} "
                 f"(classifier.classes), or '{AUTO}' to remove a label", 2)
    if (pid is None) == (match is None):
        cli.fail("give exactly one of --pid or --match", 2)
    start_time = None
    if pid is not None:
        stat = procfs.read_stat(cfg.host_paths.proc, pid)
        if stat is None:
            cli.fail(f"no process {pid} on this host")
        start_time = stat.start_time
    else:
        try:
            check_regex(match)
        except ValueError as exc:
            cli.fail(f"--match {match!r} is {exc}", 2)
    label = Label(cls=cls, pid=pid, start_time=start_time, match=match,
                  author=getpass.getuser())
    try:
        event_id = asyncio.run(send_one(cfg, label)).id
    except BrokerUnreachable as exc:
        cli.fail(str(exc))
    target = f"process {pid} (started at tick {start_time})" if pid is not None \
        else f"processes matching {match!r}"
    cli.say(f"labelled {target} as {cls} (event {event_id})")
