"""`corelane explain --pid P [--json]`: why a process is where it is.

It asks the running instance (the classifier's windows live there): the judgement in
force with its source (label, rule or model) and reason, the behaviour guess behind it,
the features of the process's window, where the newest plan puts it, and its trail of
classifications, decisions and enforcements. The same judgement is
``POST /api/v1/classify-workload``; the trail is ``GET /api/v1/processes/{pid}``.
"""
from __future__ import annotations

import typer

from corelane.cli.context import context

NAME = "explain"


def run(ctx: typer.Context,
        pid: int = typer.Option(..., "--pid", "-p", help="a live process of this host"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
        trail: int = typer.Option(5, "--trail", min=0, max=1000,
                                  help="how many of each past event to show")) -> None:
    """Why a process has its class and its cores: the judgement, features and trail."""
    from rich.table import Table
    from rich.text import Text

    from api.client import CommandRefused, get_json, post_command

    cli = context(ctx)
    cfg = cli.settings()
    if pid < 1:
        cli.fail(f"--pid {pid} is not a process id", 2)
    try:
        judgement = post_command(cfg, "/classify-workload", {"pid": pid})
        history = get_json(cfg, f"/processes/{pid}?limit={max(trail, 1)}")
    except CommandRefused as exc:
        cli.fail(str(exc))
    if judgement is None or history is None:
        cli.fail(f"no corelane answers at {cfg.api.listen} (api.listen / CORELANE_API): "
                 f"explain asks the running classifier; start it with `corelane up`")
    if as_json:
        cli.print_json({"judgement": judgement, "trail": history})
        return
    out = cli.out
    j = judgement
    out.print(Text.assemble((f"pid {j['pid']} ({j['name']})", "bold"),
                            f" started at tick {j['start_time']}"))
    out.print(f"  judged  {j.get('class') or 'not yet'} → tier {j.get('tier') or '-'}"
              f"  (source {j.get('source') or '-'}, confidence {j['confidence']:.2f})")
    out.print(Text(f"  because {j['reason'] or 'no judgement yet: too few samples'}"))
    if j.get("guess"):
        out.print(Text(f"  behaviour says {j['guess']} ({j['guess_reason']})"))
    d = j.get("decision")
    if d:
        out.print(Text(f"  placed  cpus {d['cpus']}, nice {d.get('nice')}, policy "
                       f"{d.get('policy')}, io {d.get('ioclass') or '-'} in plan "
                       f"{d['plan_seq']} ({d['mode']}, {d.get('strategy') or '-'}): "
                       f"{d['reason']}"))
    features = Table(title=f"features over {j['span_s']:.1f} s ({j['samples']} samples)",
                     show_header=True)
    features.add_column("feature")
    features.add_column("value", justify="right")
    for name, value in j["features"].items():
        features.add_row(name, f"{value:.4g}")
    out.print(features)
    if trail:
        events = Table(title="trail (newest first)")
        for column in ("when", "what", "detail"):
            events.add_column(column)
        for c in history["classifications"][:trail]:
            events.add_row(c["ts"], f"class {c['class']} → {c['tier']}",
                           Text(f"{c['source']}: {c['reason']}"))
        for dd in history["decisions"][:trail]:
            events.add_row(dd["ts"], f"cpus {dd['cpus']} ({dd['tier']})", Text(dd["reason"]))
        for e in history["enforcements"][:trail]:
            events.add_row(e["ts"], e["outcome"], Text(f"{e['before']} → {e['after']} "
                                                       f"{e['reason']}".strip()))
        out.print(events)
