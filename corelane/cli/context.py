"""What every command shares: the configuration, one way to fail, and output.

The main command puts a ``CliContext`` on typer's context; a command takes it with
``context(ctx)``. Errors are one line on stderr and a non-zero exit, never a traceback;
results go to stdout, messages for a person to stderr.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from pipeline.settings import ConfigError, Settings, load_settings
from storage.query import QueryResult, render_table, to_csv, to_json, truncation_note

# Output formats of commands that print a result.
FORMATS = ("table", "csv", "json")
# Width of tables written to a pipe or a file: wide enough that a name is never folded in
# two where a script or grep reads it (a terminal's own width, or COLUMNS, wins).
PIPE_WIDTH = 200
# Libraries whose start-up chatter stays at warning unless corelane logs at debug.
_NOISY = ("aiokafka", "kafka", "uvicorn", "faust", "docker", "urllib3", "mode")


def _out_width() -> int | None:
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return None
    return PIPE_WIDTH


@dataclass
class CliContext:
    config_path: Path | None = None
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False,
                                                         soft_wrap=True))
    out: Console = field(default_factory=lambda: Console(highlight=False, width=_out_width()))
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The configuration (``--config``, else ``CORELANE_CONFIG``, else the default),
        read once; a bad one ends the command with exit code 2."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                self.fail(str(exc), 2)
        return self._settings

    def fail(self, message: str, code: int = 1) -> NoReturn:
        """One clear line (or a few) on stderr and a non-zero exit; never a traceback."""
        # Text, not markup: messages quote SQL and paths with brackets; soft_wrap keeps one line.
        self.err.print(Text.assemble(("corelane: ", "bold red"), message))
        raise typer.Exit(code)

    def say(self, message: str) -> None:
        """A line for the person at the terminal (stderr, so stdout stays data)."""
        self.err.print(Text(message))

    def command(self, path: str, body: dict, event: object) -> str:
        """Give a command through the running instance's API (``path`` under /api/v1), or,
        when none answers, publish ``event`` onto its topic; returns the event's id."""
        import asyncio

        from api.client import CommandRefused, post_command
        from pipeline.bus import BrokerUnreachable, send_one

        cfg = self.settings()
        try:
            answer = post_command(cfg, path, body)
        except CommandRefused as exc:
            self.fail(str(exc))
        if answer is not None:
            return str(answer.get("id"))
        try:
            return asyncio.run(send_one(cfg, event)).id
        except BrokerUnreachable as exc:
            self.fail(str(exc))

    def check_format(self, fmt: str) -> str:
        chosen = fmt.strip().lower()
        if chosen not in FORMATS:
            self.fail(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}", 2)
        return chosen

    def show(self, result: QueryResult, fmt: str = "table") -> None:
        """A query result on stdout: a table for people, CSV (a header and one line per
        row, nothing else) or one JSON object."""
        if fmt == "csv":
            sys.stdout.write(to_csv(result))
            if result.truncated:  # CSV has no room to say so; stderr does, stdout stays data
                self.say(f"corelane: {truncation_note(result)}")
        elif fmt == "json":
            sys.stdout.write(to_json(result) + "\n")
        else:
            self.out.print(render_table(result))

    def print_json(self, value: object) -> None:
        sys.stdout.write(json.dumps(value, indent=2) + "\n")

    def start_logging(self, level: str) -> None:
        """Rich lines on a terminal; plain, unwrapped lines with a timestamp in a file or a
        journal, one per event, so that grep and log shippers read them whole."""
        handler: logging.Handler
        if self.err.is_terminal:
            handler = RichHandler(console=self.err, show_path=False)
            fmt = "%(message)s"
        else:
            handler = logging.StreamHandler(sys.stderr)
            fmt = "%(asctime)s %(levelname)s %(message)s"
        # A broker outage makes the Kafka client say the same thing hundreds of times a
        # second: once per message, then a reminder with the count, is enough.
        handler.addFilter(RepeatFilter(prefixes=("aiokafka", "kafka", "faust", "mode")))
        if level.upper() != "DEBUG":
            handler.addFilter(TransientFilter())
        logging.basicConfig(level=level.upper(), format=fmt, datefmt="%H:%M:%S",
                            handlers=[handler])
        for noisy in _NOISY:
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


class TransientFilter(logging.Filter):
    """Holds back what the Kafka client and faust log as errors in the normal course of a
    consumer group: the coordinator not elected yet a moment after a broker starts (the
    client retries), and an agent's task cancelled to be restarted on a rebalance (faust
    logs that as a crash, with its traceback). At debug level everything shows."""
    TRANSIENT = ("Group Coordinator Request failed", "GroupCoordinatorNotAvailable")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("aiokafka", "faust", "mode")):
            return True
        message = str(record.msg)
        if "Crashed reason=" in message and isinstance(record.args, tuple) and any(
                isinstance(a, asyncio.CancelledError) for a in record.args):
            return False
        return not any(t in message for t in self.TRANSIENT)


class RepeatFilter(logging.Filter):
    """Lets a library's log line through once, then holds back the same line (by logger and
    format) for ``every_s``, and then lets it through again saying how many were held."""

    def __init__(self, prefixes: tuple[str, ...], every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes, self.every_s, self.clock = prefixes, every_s, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        if len(self._seen) > 1000:
            self._seen.clear()
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last " \
                         f"{self.every_s:.0f} s)"
        return True


def context(ctx: typer.Context) -> CliContext:
    """The shared context of the command being run."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliContext):
        root.obj = CliContext()
    return root.obj
