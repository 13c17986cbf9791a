"""The ``corelane`` command line: one module per command, each a thin shell over a library
function, all sharing one ``CliContext``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from corelane.cli import (check, collect, explain, kafka, label, mode, pause, query, replay,
                          revert, status, top, topology, up)
from corelane.cli.context import CliContext

app = typer.Typer(name="corelane", no_args_is_help=True, add_completion=False,
                  help="Keeps latency-critical work on quiet CPU cores.")

for command in (up, collect, topology, query, label, status, explain, mode, revert, replay,
                check, top):
    app.command(command.NAME)(command.run)
app.command("pause")(pause.pause)
app.command("resume")(pause.resume)
app.add_typer(kafka.app, name="kafka")


@app.callback()
def _main(ctx: typer.Context, config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML configuration (default: CORELANE_CONFIG or "
                                     "config/default.yml)")) -> None:
    ctx.obj = CliContext(config_path=config)


def main() -> None:
    app()
