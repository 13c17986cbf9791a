"""What an operator may ask of corelane, checked and turned into an event.

Every command is an event on the log, never a direct action: the CLI and the HTTP API both
build it here, so both refuse the same things with the same words, and the agent that acts
on it (the classifier for labels, the allocator for modes, plans and container tiers, the
running instance for a stop) reads it from its topic like any other event.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from pipeline import procfs
from pipeline.events import Command, Label
from pipeline.patterns import check_regex
from pipeline.vocabulary import AUTO, MODES, TIERS

# Command event names, as the agents that act on them know them.
MODE: Final = "mode"
REBALANCE: Final = "rebalance"
CONTAINER_PRIORITY: Final = "container_priority"
SHUTDOWN: Final = "shutdown"
PAUSE: Final = "pause"
RESUME: Final = "resume"


class CommandError(ValueError):
    """A command that cannot be given as asked; the message says what to give instead."""


def label(classes: Iterable[str], *, cls: str | None = None, tier: str | None = None,
          pid: int | None = None, match: str | None = None, author: str = "",
          proc_root: str = "/proc") -> Label:
    """A label for one live process of this host (``pid``: bound to its identity, read now,
    so a later process that reuses the pid is not labelled) or for every process whose
    name or command line ``match``es. It names a class, a tier, or both; the class ``auto``
    removes an earlier label."""
    classes = tuple(classes)
    if cls is None and tier is None:
        raise CommandError(f"give a class ({', '.join(classes)}, or '{AUTO}' to remove a "
                           f"label) or a tier ({', '.join(TIERS)})")
    if cls is not None and cls != AUTO and cls not in classes:
        raise CommandError(f"unknown class {cls!r}: choose one of {', '.join(classes)} "
                           f"(classifier.classes), or '{AUTO}' to remove a label")
    if tier is not None and tier not in TIERS:
        raise CommandError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
    if (pid is None) == (match is None):
        raise CommandError("give exactly one of a pid or a match pattern")
    start_time = None
    if pid is not None:
        stat = procfs.read_stat(proc_root, pid) if pid > 0 else None
        if stat is None:
            raise CommandError(f"no process {pid} on this host")
        start_time = stat.start_time
    else:
        try:
            check_regex(match or "")
        except ValueError as exc:
            raise CommandError(f"match {match!r} is {exc}") from None
    return Label(cls=cls, tier=tier, pid=pid, start_time=start_time, match=match,
                 author=author)


def mode(wanted: str, hosts: Sequence[str] = ()) -> Command:
    """Switch the allocation mode of ``hosts`` (every host when empty) until 'auto'."""
    if wanted != AUTO and wanted not in MODES:
        raise CommandError(f"unknown mode {wanted!r}: choose one of {', '.join(MODES)}, "
                           f"or '{AUTO}'")
    args: dict = {"mode": wanted}
    if hosts:
        args["hosts"] = list(hosts)
    return Command(name=MODE, args=args)


def pause(hosts: Sequence[str] = ()) -> Command:
    """Stop changing anything on ``hosts`` (every host when empty) until a resume: corelane
    goes on observing, judging and planning, and what it already changed stays."""
    return Command(name=PAUSE, args={"hosts": list(hosts)} if hosts else {})


def resume(hosts: Sequence[str] = ()) -> Command:
    """Enforce the plans on ``hosts`` (every host when empty) again, the newest at once."""
    return Command(name=RESUME, args={"hosts": list(hosts)} if hosts else {})


def applies_to(command: Command, host: str) -> bool:
    """Whether a command with an optional ``hosts`` list is meant for ``host``."""
    hosts = command.args.get("hosts")
    return not hosts or host in hosts


def rebalance(hosts: Sequence[str] = ()) -> Command:
    """Plan ``hosts`` (every host when empty) now, and publish the plan even if unchanged."""
    return Command(name=REBALANCE, args={"hosts": list(hosts)} if hosts else {})


def container_priority(container_id: str, tier: str, host: str) -> Command:
    """Keep a container of ``host`` at ``tier`` whatever its processes' classes say, or hand
    it back to them with 'auto'."""
    if not container_id.strip():
        raise CommandError("give a container id")
    if tier != AUTO and tier not in TIERS:
        raise CommandError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}, or "
                           f"'{AUTO}' to follow its processes again")
    return Command(name=CONTAINER_PRIORITY,
                   args={"container_id": container_id, "tier": tier, "host": host})


def shutdown(host: str, reason: str = "") -> Command:
    """Stop the instance of ``host`` in order, putting back everything it changed."""
    return Command(name=SHUTDOWN, args={"host": host, "reason": reason})
