"""The `corelane` command line. Each command is a thin shell over a library function."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from pipeline.kafka.cli import kafka_app
from pipeline.admin_commands import revert_command, status_command
from pipeline.label_command import label_command
from pipeline.mode_command import mode_command
from pipeline.query_command import query_command
from pipeline.settings import ConfigError, Settings, load_settings

app = typer.Typer(name="corelane", no_args_is_help=True, add_completion=False,
                  help="Keeps latency-critical work on quiet CPU cores.")
app.add_typer(kafka_app, name="kafka")
app.command("query")(query_command)
app.command("label")(label_command)
app.command("status")(status_command)
app.command("mode")(mode_command)
app.command("revert")(revert_command)

err = Console(stderr=True)
_config_path: Optional[Path] = None


def fail(message: str, code: int = 1) -> None:
    """One clear line (or a few) on stderr and a non-zero exit; never a traceback."""
    # Text, not markup: messages quote SQL and paths with brackets; soft_wrap keeps one line.
    err.print(Text.assemble(("corelane: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return load_settings(_config_path)
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable: fail() exits


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[RichHandler(console=err, show_path=False)])
    for noisy in ("aiokafka", "kafka", "uvicorn", "faust", "docker", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


@app.callback()
def _main(config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML configuration (default: CORELANE_CONFIG or "
                                     "config/default.yml)")) -> None:
    global _config_path
    _config_path = config


@app.command()
def up(dry_run: bool = typer.Option(False, "--dry-run",
                                    help="observe and decide, change nothing on this host")) -> None:
    """Run corelane on this host: broker if none answers, collector, HTTP API."""
    from pipeline.kafka.broker import BrokerError
    from pipeline.up import UpError, up as run
    cfg = settings()
    _logging(cfg.log_level)
    try:
        run(cfg, dry_run=dry_run)
    except (UpError, BrokerError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command()
def collect(count: Optional[int] = typer.Option(None, "--count", "-n", min=1,
                                                help="sweeps to make, then stop (default: run on)"),
            interval: Optional[float] = typer.Option(None, "--interval", "-i", min=0.01,
                                                     help="seconds between sweeps "
                                                          "(default: collector.interval_s)"),
            stdout: bool = typer.Option(False, "--stdout",
                                        help="write events as JSON lines instead of publishing")
            ) -> None:
    """Run the collectors alone: to the broker, or to stdout as JSON lines."""
    from pipeline.bus import Publisher, Stamper, ensure_topics
    from pipeline.collect import Collector, KafkaSink, StdoutSink, run_collector
    from pipeline.kafka.broker import is_answering

    cfg = settings()
    _logging(cfg.log_level if not stdout else "warning")

    async def main() -> None:
        stamper = Stamper(cfg.host)
        collector = Collector(cfg, stamper)
        if stdout:
            await run_collector(collector, StdoutSink(), count=count, interval_s=interval)
            return
        if not await asyncio.to_thread(is_answering, cfg.kafka.bootstrap, 5.0):
            fail(f"no Kafka broker answers at {cfg.kafka.bootstrap} (CORELANE_KAFKA); start one "
                 f"with 'corelane kafka start' or use --stdout")
        await ensure_topics(cfg)
        async with Publisher(cfg, stamper) as publisher:
            stats = await run_collector(collector, KafkaSink(publisher), count=count,
                                        interval_s=interval)
        err.print(f"{stats.sweeps} sweeps, {publisher.sent} messages published to "
                  f"{cfg.kafka.bootstrap}", highlight=False)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@app.command()
def topology(profile: Optional[str] = typer.Option(None, "--profile", "-p",
                                                   help="a named profile instead of this host"),
             root: Optional[Path] = typer.Option(None, "--root", "-r",
                                                 help="a saved sysfs tree (DIR/sys/devices/...)"),
             as_json: bool = typer.Option(False, "--json", help="JSON for programs")) -> None:
    """Show the CPU topology: this host's, a named profile's, or a saved sysfs tree's."""
    from pipeline.topology import TopologyError, load_profile, read_topology, render_table
    if profile and root:
        fail("give --profile or --root, not both")
    cfg = settings()
    try:
        if profile or (root is None and cfg.topology.profile):
            topo = load_profile(profile or cfg.topology.profile)  # type: ignore[arg-type]
        else:
            topo = read_topology(root if root is not None else cfg.topology.sys_root)
    except TopologyError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(topo.to_dict(), indent=2) + "\n")
    else:
        Console().print(render_table(topo))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
