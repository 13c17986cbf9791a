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
import re
from typing import Optional

import typer


def label_command(
    cls: str = typer.Argument(..., metavar="CLASS",
                              help="a class from classifier.classes, or 'auto' to remove a label"),
    pid: Optional[int] = typer.Option(None, "--pid", "-p", help="one process on this host"),
    match: Optional[str] = typer.Option(None, "--match", "-m",
                                        help="regular expression over name and command line"),
) -> None:
    """Give processes an explicit class (it outranks rules and the model)."""
    from agents.classification.rules import CLEAR_LABEL
    from pipeline.bus import BrokerUnreachable, send_one
    from pipeline.cli import err, fail, settings
    from pipeline.collectors.procfs import proc_dir, read_stat
    from pipeline.events import Label

    cfg = settings()
    classes = cfg.classifier.classes
    if cls != CLEAR_LABEL and cls not in classes:
        fail(f"unknown class {cls!r}: choose one of {', '.join(classes)} (classifier.classes), "
             f"or '{CLEAR_LABEL}' to remove a label", 2)
    if (pid is None) == (match is None):
        fail("give exactly one of --pid or --match", 2)
    start_time = None
    if pid is not None:
        stat = read_stat(proc_dir(cfg.collector.proc_root), pid)
        if stat is None:
            fail(f"no process {pid} on this host")
        start_time = stat.start_time
    else:
        try:
            re.compile(match or "")
        except re.error as exc:
            fail(f"--match {match!r} is not a regular expression: {exc}", 2)
    label = Label(cls=cls, pid=pid, start_time=start_time, match=match,
                  author=getpass.getuser())

    try:
        event_id = asyncio.run(send_one(cfg, label)).id
    except BrokerUnreachable as exc:
        fail(str(exc))
    target = f"process {pid} (started at tick {start_time})" if pid is not None \
        else f"processes matching {match!r}"
    err.print(f"labelled {target} as {cls} (event {event_id})", highlight=False)
