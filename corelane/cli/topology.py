"""`corelane topology`: this host's CPU topology, a named profile's, or a saved sysfs tree's."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from corelane.cli.context import context

NAME = "topology"


def run(ctx: typer.Context,
        profile: Optional[str] = typer.Option(None, "--profile", "-p",
                                              help="a named profile instead of this host"),
        root: Optional[Path] = typer.Option(None, "--root", "-r",
                                            help="a saved sysfs tree (DIR/sys/devices/...)"),
        as_json: bool = typer.Option(False, "--json", help="JSON for programs")) -> None:
    """Show the CPU topology: this host's, a named profile's, or a saved sysfs tree's."""
    from pipeline.topology import TopologyError, load_profile, read_topology, render_table

    cli = context(ctx)
    if profile and root:
        cli.fail("give --profile or --root, not both")
    cfg = cli.settings()
    try:
        if profile or (root is None and cfg.topology.profile):
            topo = load_profile(profile or cfg.topology.profile)  # type: ignore[arg-type]
        else:
            topo = read_topology(root if root is not None else cfg.topology.sys_root)
    except TopologyError as exc:
        cli.fail(str(exc))
    if as_json:
        cli.print_json(topo.to_dict())
    else:
        cli.out.print(render_table(topo))
