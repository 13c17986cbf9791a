"""corelane's words: behaviour classes, placement tiers, modes, days, and ``auto``.

Every list here is the one definition of its words; configuration types (``Tier``,
``Mode``, ``Day``) are built from the lists, so adding a word is one edit.

A class says what a process does (learnt from behaviour); a tier says how the allocator
treats it (which core pool, nice level, I/O class). Configuration may rename classes or
add new ones (``classifier.classes`` maps each class to a tier); the tiers are fixed,
because the allocator's pools are built around them.
"""
from __future__ import annotations

from typing import Final, Literal

# Most to least protected. The allocator gives the first tiers quiet (P-)cores.
TIERS: Final[tuple[str, ...]] = (
    "ultra_critical", "critical", "high", "normal", "low", "background",
)

CLASSES: Final[tuple[str, ...]] = (
    "latency_critical", "realtime_stream", "interactive", "compute_batch",
    "io_batch", "memory_heavy", "background", "idle",
)

# Why each class sits where it does:
# - latency_critical: many short wake-ups whose value is lost if they wait in a run queue
#   (request handlers, trading loops). Only isolation keeps their p99 low, so they get the
#   quietest cores.
# - realtime_stream: periodic work with a deadline every period (audio, video, telemetry);
#   a missed period is a glitch, but each wake-up has more slack than a request handler.
# - interactive: bursts a person waits on (shells, editors, UIs); they must not queue
#   behind batch work, but they tolerate a shared core.
# - memory_heavy: bound by memory, not by CPU time; moving it to a better core buys little,
#   starving it costs a lot (page cache, bandwidth), so it stays at the default.
# - compute_batch: throughput work that only cares about total CPU time; it fills what is
#   left and yields to everything above it.
# - io_batch: waits on storage most of the time; low CPU priority costs it little, and a
#   low I/O class keeps it from hurting interactive I/O.
# - background / idle: housekeeping and sleepers; the cheapest cores, the lowest priority.
TIER_RANK: Final[dict[str, int]] = {tier: i for i, tier in enumerate(TIERS)}

DEFAULT_TIER_OF: Final[dict[str, str]] = {
    "latency_critical": "ultra_critical",
    "realtime_stream": "critical",
    "interactive": "high",
    "memory_heavy": "normal",
    "compute_batch": "low",
    "io_batch": "low",
    "background": "background",
    "idle": "background",
}

# The class a tier-only rule reports when neither a label nor the model has an opinion:
# the tier is known (the rule pins it), the behaviour is not.
UNCLASSIFIED: Final[str] = "unclassified"


def check_class_map(tier_of: dict[str, str]) -> dict[str, str]:
    """Validate a class -> tier map; raises ValueError naming the bad entry."""
    if not tier_of:
        raise ValueError("at least one class is needed")
    for cls, tier in tier_of.items():
        if not cls or not cls.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"class name {cls!r} must be letters, digits, '_' or '-'")
        if cls == UNCLASSIFIED:
            raise ValueError(f"{UNCLASSIFIED!r} is reserved for tier-only rule matches")
        if tier not in TIERS:
            raise ValueError(f"class {cls!r} maps to unknown tier {tier!r}; "
                             f"tiers are {', '.join(TIERS)}")
    return tier_of


# The allocation modes, from most to least generous to the critical tiers' neighbours.
MODES: Final[tuple[str, ...]] = ("high_performance", "balanced", "power_save", "emergency")
EMERGENCY: Final = "emergency"
POWER_SAVE: Final = "power_save"

# The pool of everything that is not latency-critical by class: corelane itself, its broker,
# unclassified processes. It is also the decision tier of those targets.
HOUSEKEEPING: Final[str] = "housekeeping"

# Hands a choice back to corelane: `corelane mode auto` (the schedule and allocator.mode
# again) and `corelane label ... auto` (rules and the model again).
AUTO: Final[str] = "auto"

DAYS: Final[tuple[str, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# How the critical tiers are kept quiet; the closed loop measures them on each host and
# keeps the best:
# - exclusive_poll: cores of their own, kept polling when idle (a wake-up never waits for a
#   halted core to come back);
# - exclusive: cores of their own, which may halt when idle;
# - exclusive_lend: cores of their own, lent to batch work at SCHED_IDLE while the tier
#   sleeps (the kernel preempts SCHED_IDLE work at once, and the core never halts);
# - shared: every core for every tier, batch work at SCHED_IDLE.
STRATEGIES: Final[tuple[str, ...]] = ("exclusive_poll", "exclusive", "exclusive_lend", "shared")
# Tiers whose work is throughput only: what strategies lend cores to, at SCHED_IDLE.
BATCH_TIERS: Final[tuple[str, ...]] = ("low", "background")
# The class of a process that sleeps: never demoted, since its children would inherit it.
ASLEEP: Final[str] = "idle"

# Configuration types made from the lists above (Literal accepts a tuple of values).
Tier = Literal[TIERS]  # type: ignore[valid-type]
Mode = Literal[MODES]  # type: ignore[valid-type]
Day = Literal[DAYS]  # type: ignore[valid-type]
Strategy = Literal[STRATEGIES]  # type: ignore[valid-type]
