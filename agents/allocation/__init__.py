"""The allocator as a pure library: topology, classifications, utilization, mode, policy
and the previous plan in; a ``Plan`` (core pools and one decision per target) out.

No Kafka, no /proc, no system calls: the same functions run live in the allocator agent and
offline in replay.
"""
from agents.allocation.plan import (
    Assignment, ContainerTarget, CpuIdleLimit, Plan, ProcessTarget, Target, Utilization, action,
    plan, plan_from_decisions, pool_cores, pool_states, process_targets, to_decisions,
)
from agents.allocation.pools import AllocationError, Pool

__all__ = [
    "AllocationError", "Assignment", "ContainerTarget", "CpuIdleLimit", "Plan", "Pool",
    "ProcessTarget", "Target",
    "Utilization", "action", "plan", "plan_from_decisions", "pool_cores", "pool_states", "process_targets",
    "to_decisions",
]
