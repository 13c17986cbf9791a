"""`corelane up`: run corelane on this host."""
from __future__ import annotations

import logging
import os
import sys

from typing import List, Optional

import enum

import typer

from corelane.cli.context import context
from corelane.roles import ROLES

# typer shows and checks the choices of an Enum
Role = enum.Enum("Role", {name: name for name in ROLES}, type=str)

NAME = "up"


def run(ctx: typer.Context,
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="observe and decide, change nothing on this host"),
        shadow: Optional[List[str]] = typer.Option(
            None, "--shadow", metavar="NAME=FILE",
            help="also run the configuration in FILE on the live samples, recording its "
                 "plans as policy NAME and never applying them (repeatable)"),
        role: Role = typer.Option(
            "all", "--role", case_sensitive=False,
            help="the parts to run: all (one host), edge (this host's collector and "
                 "applier), worker (classifier and allocator, one of a consumer group "
                 "that splits the hosts), recorder (the history and the API)"),
        ) -> None:
    """Run corelane on this host: broker if none answers, collector, agents, recorder, API
    (or, with --role, one role of a fleet)."""
    from agents.shadow import parse_shadow
    from corelane.cli.progress import BrokerProgress
    from corelane.runtime import ConfigInvalid, UpError, lingering_threads, up
    from pipeline.kafka.broker import BrokerError
    from pipeline.settings import ConfigError

    cli = context(ctx)
    settings = cli.settings()
    try:
        shadows = [parse_shadow(given) for given in shadow or []]
    except ConfigError as exc:
        cli.fail(str(exc), 2)
    if len({s.name for s in shadows}) < len(shadows):
        cli.fail("--shadow: each shadow policy needs a name of its own", 2)
    cli.start_logging(settings.log_level)
    try:
        # the bar of a broker's cold start, on a terminal; the log lines say it elsewhere
        with BrokerProgress(cli.err,
                            f"the Kafka broker at {settings.kafka.bootstrap}") as progress:
            up(settings, dry_run=dry_run, shadows=shadows, broker_progress=progress,
               role=role.value)
    except ConfigInvalid as exc:
        cli.fail(str(exc), 2)
    except (UpError, BrokerError) as exc:
        cli.fail(str(exc))
    except KeyboardInterrupt:
        pass
    left = lingering_threads(join_s=5.0)
    if left:
        # Everything corelane changed is back and the history is closed; what waits now
        # is a library's thread on a broker that does not answer. Leave without it.
        logging.getLogger("corelane").warning(
            "abandoning %d thread(s) still waiting (%s) after the stop",
            len(left), ", ".join(t.name for t in left))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
