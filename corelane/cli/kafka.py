"""`corelane kafka start [--brokers N]|stop|status|fetch`: the local broker, one KRaft node
or a cluster of N on loopback.

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
from corelane.own_priority import take_own_nice
from pipeline.kafka.broker import BrokerError, LocalBroker

app = typer.Typer(
    help="The local Kafka broker (KRaft): one node, or a cluster of N on loopback, run from "
         "Maven-resolved jars.",
    no_args_is_help=True, add_completion=False)

# `corelane kafka status` exit code when no broker runs or answers: scripts can tell
# "not running" apart from "could not even check" (1).
EXIT_NOT_RUNNING = 3


def _broker(ctx: typer.Context, nodes: int | None = None) -> tuple[CliContext, LocalBroker]:
    cli = context(ctx)
    try:
        return cli, LocalBroker.from_settings(cli.settings(), nodes=nodes)
    except BrokerError as exc:
        cli.fail(str(exc))


def _what(broker: LocalBroker) -> str:
    count = len(broker.nodes)
    return "the Kafka broker" if count == 1 else f"the {count}-node Kafka cluster"


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
                   "(default: kafka.broker.start_timeout_s)"),
          brokers: Optional[int] = typer.Option(
              None, "--brokers", "-n", min=1, max=9,
              help="combined broker+controller nodes (default: kafka.broker.nodes, or as "
                   "many as this home last ran)")) -> None:
    """Start the broker (or every node of the cluster) unless one already answers."""
    cli, broker = _broker(ctx, brokers)
    wait = timeout if timeout is not None else cli.settings().kafka.broker.start_timeout_s
    take_own_nice(cli.settings())                # the broker's JVM inherits it
    try:
        with BrokerProgress(cli.err, f"{_what(broker)} at {broker.bootstrap}") as progress:
            status = broker.start(wait, progress)
    except BrokerError as exc:
        cli.fail(str(exc))
    if status.pid is None:
        cli.out.print(f"a Kafka broker not started by corelane already answers at "
                   f"{status.bootstrap}; nothing started")
    elif len(status.nodes) == 1:
        cli.out.print(f"Kafka broker running at {status.bootstrap} (pid {status.pid}, "
                   f"log {status.log_file})")
    else:
        pids = ", ".join(f"node {n.node_id} pid {n.pid}" for n in status.nodes)
        factor, least = broker.replication
        cli.out.print(f"Kafka cluster of {len(status.nodes)} nodes running ({pids}); "
                      f"topics get {factor} copies, {least} in sync for a write")
        cli.out.print(f"clients: CORELANE_KAFKA={status.bootstrap}")


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
        what = _what(broker)
        cli.out.print(f"{what[0].upper()}{what[1:]} at {broker.bootstrap} stopped")
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
    if len(found.nodes) > 1:
        up = [n for n in found.nodes if n.pid is not None]
        colour = "green" if len(up) == len(found.nodes) else "yellow" if up else "red"
        process = f"[{colour}]{len(up)} of {len(found.nodes)} nodes running[/]"
    elif found.running:
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
    if len(found.nodes) > 1:
        for node in found.nodes:
            state = f"pid {node.pid}" if node.pid is not None else "[red]not running[/]"
            table.add_row(f"node {node.node_id}", f"{node.address}  {state}  {node.log_file}")
    table.add_row("state", str(found.state_dir))
    if len(found.nodes) <= 1:
        table.add_row("log", str(found.log_file))
    cli.out.print(table)
    if not (found.running or found.answering):
        raise typer.Exit(EXIT_NOT_RUNNING)
