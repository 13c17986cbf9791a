"""`corelane revert`: put back every setting corelane changed, while it is not running."""
from __future__ import annotations

import typer

from corelane.cli.context import context

NAME = "revert"


def run(ctx: typer.Context) -> None:
    """Put back every setting corelane changed (from its journal), while it is not running."""
    from agents.applier import journal_dir, make_guard
    from agents.enforcement import Journal, restorer
    from api.client import instance_answers
    from agents.enforcement.cgroup import remove_tier_groups
    from pipeline.cgroups import read_layout
    from pipeline.collectors.containers import engine_client

    cli = context(ctx)
    cfg = cli.settings()
    if instance_answers(cfg.api.listen):
        cli.fail(f"corelane is running (its API answers at {cfg.api.listen}); stop it "
                 f"instead: on stop it puts back everything it changed")
    folder = journal_dir(cfg)
    if not folder.exists():
        cli.say(f"nothing to revert: no journal at {folder}")
        return
    journal = Journal(folder)
    try:
        results = journal.restore_all(restorer(engine_client(cfg.collector.docker_host),
                                               guard=make_guard(cfg, ()),
                                               paths=cfg.host_paths))
        for folder in remove_tier_groups(read_layout(cfg.host_paths), cfg.applier.cgroup_root):
            cli.say(f"removed cgroup {folder}")
    finally:
        journal.close()
    for r in results:
        cli.say(f"{r.subject}: {r.outcome}{' (' + r.reason + ')' if r.reason else ''}")
    cli.say(f"{len(results)} target(s) handled")
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)
