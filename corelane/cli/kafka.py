"""`corelane kafka start|stop|status|fetch`: the local single-node broker.

On a terminal, fetching the jars shows the artifacts Maven fetches, and a start a bar of
the seconds waited against the timeout (``corelane.cli.progress``).

Every failure a person can fix (bad configuration, no Maven or Java, a port in use, a
broker that will not start) ends as one message on stderr and exit code 1, not a traceback.
"""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from corelane.cli.context import CliContext, context
from corelane.cli.progress import BrokerProgress
from pipeline.kafka.broker import BrokerError, LocalBroker

app = typer.Typer(
    help="The local single-node Kafka broker (KRaft), run from Maven-resolved jars.",
    no_args_is_help=True, add_completion=False)

# `corelane kafka status` exit code when no broker runs or answers: scripts can tell
# "not running" apart from "could not even check" (1).
EXIT_NOT_RUNNING = 3


def _broker(ctx: typer.Context) -> tuple[CliContext, LocalBroker]:
    cli = context(ctx)
    try:
        return cli, LocalBroker.from_settings(cli.settings())
    except BrokerError as exc:
        cli.fail(str(exc))


@app.command()
def fetch(ctx: typer.Context) -> None:
    """Download the broker's jars with Maven (start does this too when they are missing)."""
    cli, broker = _broker(ctx)
    try:
        with BrokerProgress(cli.err) as progress:
            jars = broker.fetch(progress.maven)
            progress.fetched()
    except BrokerError as exc:
        cli.fail(str(exc))
    cli.out.print(f"broker jars in {jars}")


@app.command()
def start(ctx: typer.Context,
          timeout: Optional[float] = typer.Option(
              None, "--timeout", "-t",
              help="seconds to wait for the broker to answer "
                   "(default: kafka.broker.start_timeout_s)")) -> None:
    """Start the broker unless one already answers at the configured address."""
    cli, broker = _broker(ctx)
    wait = timeout if timeout is not None else cli.settings().kafka.broker.start_timeout_s
    try:
        with BrokerProgress(cli.err, f"the Kafka broker at {broker.bootstrap}") as progress:
            status = broker.start(wait, progress)
    except BrokerError as exc:
        cli.fail(str(exc))
    if status.pid is None:
        cli.out.print(f"a Kafka broker not started by corelane already answers at "
                   f"{status.bootstrap}; nothing started")
    else:
        cli.out.print(f"Kafka broker running at {status.bootstrap} (pid {status.pid}, "
                   f"log {status.log_file})")


@app.command()
def stop(ctx: typer.Context,
         grace: float = typer.Option(30.0, "--grace",
                                     help="seconds to wait after SIGTERM before SIGKILL")) -> None:
    """Stop the broker this home started (by its pid file; other brokers are left alone)."""
    cli, broker = _broker(ctx)
    try:
        stopped = broker.stop(grace)
    except BrokerError as exc:
        cli.fail(str(exc))
    if stopped:
        cli.out.print(f"Kafka broker at {broker.bootstrap} stopped")
    else:
        cli.out.print(f"no Kafka broker started by corelane is running (pid file "
                   f"{broker.pid_file})")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the broker runs and answers; exit 0 if it does, 3 if not."""
    cli, broker = _broker(ctx)
    try:
        found = broker.status()
    except BrokerError as exc:
        cli.fail(str(exc))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if found.running:
        process = f"[green]running[/] (pid {found.pid})"
    else:
        process = "[yellow]not running[/]"
    answering = "[green]yes[/]" if found.answering else "[red]no[/]"
    if found.answering and not found.running:
        answering += " (a broker corelane did not start)"
    elif found.running and not found.answering:
        answering += " (starting, or stuck: see the log)"
    table.add_row("address", found.bootstrap)
    table.add_row("process", process)
    table.add_row("answering", answering)
    table.add_row("state", str(found.state_dir))
    table.add_row("log", str(found.log_file))
    cli.out.print(table)
    if not (found.running or found.answering):
        raise typer.Exit(EXIT_NOT_RUNNING)
