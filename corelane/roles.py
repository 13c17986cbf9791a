"""Which parts each role of `corelane up` runs: the one place that says so.

``all`` is one process with every part (a single host). A fleet splits it: an ``edge`` per
host observes and enforces there, ``worker``s judge and plan as one faust consumer group
that splits the partitions (and so the hosts) among them, and one ``recorder`` keeps the
history and serves the API. No role needs another on the same machine: they meet only on
the broker.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:       # the command line imports this module before it needs settings
    from pipeline.settings import Settings

Role = Literal["all", "edge", "worker", "recorder"]

# Part names as the runtime builds them (and as the health document names them).
COLLECTOR, APPLIER, TUNER = "collector", "applier", "tuner"
CLASSIFIER, ALLOCATOR, ALERTER, NOTIFIER, SHADOWS = ("classifier", "allocator", "alerter",
                                                     "notifier", "shadows")
RECORDER, API = "recorder", "api"

_SPLIT: Final[dict[str, frozenset[str]]] = {
    # host-local: what is measured and changed on this host (the tuner probes its cores)
    "edge": frozenset({COLLECTOR, APPLIER, TUNER}),
    # keyed by host, so any number of workers split the hosts by partition
    "worker": frozenset({CLASSIFIER, ALLOCATOR, ALERTER, NOTIFIER, SHADOWS}),
    # one DuckDB file has one owner; the full API reads it
    "recorder": frozenset({RECORDER, API}),
}
PARTS: Final[dict[str, frozenset[str]]] = {**_SPLIT, "all": frozenset().union(*_SPLIT.values())}
ROLES: Final[tuple[str, ...]] = get_args(Role)


def parts_of(role: str) -> frozenset[str]:
    """The parts ``role`` runs; a ValueError names the roles there are."""
    try:
        return PARTS[role]
    except KeyError:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}") from None


def agent_group(role: str, settings: "Settings") -> str:
    """The faust app id (the Kafka consumer group) of ``role``'s agents.

    Workers share one group, so that they split the partitions; ``all`` keeps the group it
    always had. An edge's applier and tuner need every decision for their own host, so each
    edge is a group of its own rather than a member that would get some hosts' partitions.
    """
    prefix = settings.kafka.topic_prefix
    if role == "edge":
        return f"{prefix}edge.{settings.host}"
    return prefix + "agents"


def partitioned(role: str) -> bool:
    """Whether the role's agents own only the hosts of the partitions assigned to them (and
    take over a host's state when its partition moves), rather than every host."""
    return role == "worker"
