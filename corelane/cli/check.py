"""`corelane check [FILE]`: validate a configuration and the rules file it names, without
starting anything (no broker, no history, no port): what `corelane up` and a SIGHUP reload
would refuse, it refuses the same way, in one line naming the file and the key."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from corelane.cli.context import context

NAME = "check"


def run(ctx: typer.Context,
        file: Optional[Path] = typer.Argument(None, help="the configuration to check "
                                                         "(default: --config, else "
                                                         "CORELANE_CONFIG, else the shipped "
                                                         "one)")) -> None:
    """Check a configuration and its rules file; exit 0 when both can be used, 2 if not."""
    from agents.classification.rules import RulesError, load_rule_set
    from pipeline.settings import ConfigError, load_settings

    cli = context(ctx)
    try:
        settings = load_settings(file) if file is not None else cli.settings()
    except ConfigError as exc:
        cli.fail(str(exc), 2)
    try:
        rules = load_rule_set(settings)
    except RulesError as exc:
        cli.fail(f"{exc} (classifier.rules_file)", 2)
    where = settings.classifier.rules_file or "no rules"
    cli.say(f"{settings.source}: valid; {len(rules.rules)} classifier rule(s) from {where}, "
            f"{len(settings.alerts.rules)} alert rule(s), {len(settings.alerts.webhooks)} "
            f"webhook(s), mode {settings.allocator.mode}")
