"""`corelane kafka start|stop|status|fetch`: the local single-node broker.

Every failure a person can fix (bad configuration, no Maven or Java, a port in use, a
broker that will not start) ends as one message on stderr and exit code 1, not a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.kafka.broker import BrokerError, LocalBroker
from pipeline.settings import ConfigError, Settings, load_settings

kafka_app = typer.Typer(
    help="The local single-node Kafka broker (KRaft), run from Maven-resolved jars.",
    no_args_is_help=True, add_completion=False)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

# `corelane kafka status` exit code when no broker runs or answers: scripts can tell
# "not running" apart from "could not even check" (1).
EXIT_NOT_RUNNING = 3


def _fail(message: str) -> NoReturn:
    _err.print(f"[bold red]corelane kafka:[/] {message}", markup=True)
    raise typer.Exit(1)


def _config_option(ctx: typer.Context) -> Optional[Path]:
    """The main command's ``--config`` if it was given: it sits on a parent context."""
    while ctx is not None:
        value = ctx.params.get("config")
        if value:
            return Path(value)
        ctx = ctx.parent  # type: ignore[assignment]
    return None


def _settings(ctx: typer.Context) -> Settings:
    try:
        return load_settings(_config_option(ctx))
    except ConfigError as exc:
        _fail(str(exc))


def _broker(settings: Settings) -> LocalBroker:
    try:
        return LocalBroker.from_settings(settings)
    except BrokerError as exc:
        _fail(str(exc))


@kafka_app.command()
def fetch(ctx: typer.Context) -> None:
    """Download the broker's jars with Maven (start does this too when they are missing)."""
    broker = _broker(_settings(ctx))
    try:
        with _err.status("resolving the Kafka broker's jars with Maven"):
            jars = broker.fetch()
    except BrokerError as exc:
        _fail(str(exc))
    _out.print(f"broker jars in {jars}")


@kafka_app.command()
def start(ctx: typer.Context,
          timeout: Optional[float] = typer.Option(
              None, "--timeout", "-t",
              help="seconds to wait for the broker to answer "
                   "(default: kafka.broker.start_timeout_s)")) -> None:
    """Start the broker unless one already answers at the configured address."""
    settings = _settings(ctx)
    broker = _broker(settings)
    wait = timeout if timeout is not None else settings.kafka.broker.start_timeout_s
    try:
        with _err.status(f"starting the Kafka broker at {broker.bootstrap} "
                         "(a cold start takes up to a minute)"):
            status = broker.start(wait)
    except BrokerError as exc:
        _fail(str(exc))
    if status.pid is None:
        _out.print(f"a Kafka broker not started by corelane already answers at "
                   f"{status.bootstrap}; nothing started")
    else:
        _out.print(f"Kafka broker running at {status.bootstrap} (pid {status.pid}, "
                   f"log {status.log_file})")


@kafka_app.command()
def stop(ctx: typer.Context,
         grace: float = typer.Option(30.0, "--grace",
                                     help="seconds to wait after SIGTERM before SIGKILL")) -> None:
    """Stop the broker this home started (by its pid file; other brokers are left alone)."""
    broker = _broker(_settings(ctx))
    try:
        stopped = broker.stop(grace)
    except BrokerError as exc:
        _fail(str(exc))
    if stopped:
        _out.print(f"Kafka broker at {broker.bootstrap} stopped")
    else:
        _out.print(f"no Kafka broker started by corelane is running (pid file "
                   f"{broker.pid_file})")


@kafka_app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the broker runs and answers; exit 0 if it does, 3 if not."""
    broker = _broker(_settings(ctx))
    try:
        found = broker.status()
    except BrokerError as exc:
        _fail(str(exc))
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
    _out.print(table)
    if not (found.running or found.answering):
        raise typer.Exit(EXIT_NOT_RUNNING)
