"""`corelane replay --from T1 --to T2 [--policy FILE] [--against FILE] [--shadow NAME]`:
what a window of history looked like, and what another policy would have done in it.

Through the running instance when one answers at CORELANE_API (it owns the history file
and streams the window itself); otherwise from the file, read-only. It never publishes
an event nor touches a process.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from corelane.cli.context import CliContext, context

NAME = "replay"


def _policy(cli: CliContext, path: Optional[Path], option: str) -> tuple[str, str] | None:
    if path is None:
        return None
    try:
        return str(path), path.read_text()
    except OSError as exc:
        cli.fail(f"{option} {path}: cannot read it: {exc.strerror}", 2)


def run(ctx: typer.Context,
        t_from: str = typer.Option(..., "--from", help="start: ISO 8601 (UTC unless an "
                                   "offset is given), relative (-1h, -15m) or epoch seconds"),
        t_to: str = typer.Option("now", "--to", help="end, in the same forms"),
        host: Optional[str] = typer.Option(None, "--host", help="the host to replay "
                                           "(default: this one, or the only one recorded)"),
        policy: Optional[Path] = typer.Option(None, "--policy", help="a configuration to "
                                              "replay the window under"),
        against: Optional[Path] = typer.Option(None, "--against", help="compare --policy "
                                               "with this configuration, not the recorded "
                                               "one"),
        fresh_model: bool = typer.Option(False, "--fresh-model", help="start from an "
                                         "untrained model that learns as it goes"),
        shadow: Optional[str] = typer.Option(None, "--shadow", help="compare a shadow "
                                             "policy's recorded decisions with the live ones"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON (the "
                                     "same bytes for the same window)"),
        html: Optional[Path] = typer.Option(None, "--html", help="write the report as one "
                                            "self-contained HTML page"),
        ) -> None:
    """Replay a window of history under the recorded configuration or another policy."""
    from agents.replay.render import to_json
    from agents.replay.run import ReplayError, request_from
    from api.client import ReplayRefused, replay_through_instance

    cli = context(ctx)
    settings = cli.settings()
    given = {"policy": _policy(cli, policy, "--policy"),
             "against": _policy(cli, against, "--against")}
    try:
        request = request_from(t_from, t_to, host=host, fresh_model=fresh_model,
                               shadow=shadow, **given)
    except ReplayError as exc:
        cli.fail(str(exc), 2)
    body: dict[str, Any] = {"from": t_from, "to": t_to, "host": host,
                            "fresh_model": fresh_model, "shadow": shadow}
    for key, value in given.items():
        body[key] = {"name": value[0], "yaml": value[1]} if value else None
    try:
        with cli.err.status("replaying through the running instance…"):
            report = replay_through_instance(settings, body)
    except ReplayRefused as exc:
        cli.fail(str(exc), 2)
    if report is None:
        report = _replay_file(cli, request)
    if html is not None:
        from agents.replay.render import html_page
        try:
            html.write_text(html_page(report))
        except OSError as exc:
            cli.fail(f"--html {html}: cannot write it: {exc.strerror}")
        cli.say(f"report written to {html}")
    if as_json:
        cli.out.file.write(to_json(report).decode())
    elif html is None:
        show(cli, report)


def _replay_file(cli: CliContext, request: Any) -> dict[str, Any]:
    from agents.replay.run import ReplayError, replay
    from storage.history import HistoryStore, StoreError

    settings = cli.settings()
    try:
        store = HistoryStore.open_readonly(settings.db_path, settings.storage)
    except StoreError as exc:
        cli.fail(str(exc))
    try:
        with Progress(TextColumn("replaying"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=cli.err, transient=True) as bar:
            task = bar.add_task("replay", total=1.0)
            return replay(store.cursor, settings, request, time.time(),
                          progress=lambda done: bar.update(task, completed=done))
    except ReplayError as exc:
        cli.fail(str(exc), 2)
    finally:
        store.close()


def show(cli: CliContext, report: dict[str, Any]) -> None:
    """The report as tables: each tier on both sides, then the differences."""
    out = cli.out
    out.print(Text.assemble(("replay ", "bold"), f"{report['host']} {report['from']} → "
                            f"{report['to']}: {report['compared']}"))
    out.print(Text(f"{report['configuration']}; model: {report['model']}", style="dim"))
    base, other = report["base"], report["other"]
    sides = report["sides"]
    table = Table(title="per tier", title_justify="left")
    for label in ("tier", "policy"):
        table.add_column(label)
    for label in ("procs", "class chg", "moves/min", "demand", "cores", "over s", "delay ms/s"):
        table.add_column(label, justify="right")
    tiers = sorted(set(sides[base]["tiers"]) | set(sides[other]["tiers"]))
    for tier in tiers:
        for name in (base, other):
            f = sides[name]["tiers"].get(tier)
            if f is None:
                continue
            table.add_row(tier, name, str(f["processes"]), str(f["class_changes"]),
                          f"{f['moves_per_minute']:g}", f"{f['demand_cores_avg']:.2f}",
                          f"{f['pool_cores_avg']:.1f}", f"{f['overcommitted_s']:g}",
                          f"{f['run_delay_ms_s']:.2f}")
    out.print(table)
    diffs = Table(title=f"differences ({report['difference_count']}, "
                        f"{report['unexplained']} unexplained; shorter than "
                        f"{report['tolerance_s']:g} s counted as timing: "
                        f"{sum(report['timing_only'].values())})", title_justify="left")
    for label in ("tier", "kind", "count", "seconds", "example", "why"):
        diffs.add_column(label)
    for tier, kinds in sorted(report["differences"].items()):
        for kind, d in sorted(kinds.items()):
            ex = d["examples"][0] if d["examples"] else None
            diffs.add_row(tier, kind, str(d["count"]), f"{d['seconds']:g}",
                          f"{ex['at']} {ex['target']}: {ex['base']} → {ex['other']}"
                          if ex else "", ex["reason"] if ex else "")
    out.print(diffs)
