"""Which parents' children are put back at fork: those corelane demoted in priority, and
those it moved into a limited tier group."""
from __future__ import annotations

from agents.enforcement.cgroup import FIELD as CGROUPS
from agents.enforcement.inheritance import demoted_parents, neutral_for
from agents.enforcement.journal import Identity, JournalEntry


def process(pid: int, original: dict, applied: dict) -> JournalEntry:
    return JournalEntry(Identity.process(pid, 100 + pid), original, applied=applied)


def moved(pid: int, start_time: int | None = None) -> JournalEntry:
    return JournalEntry(Identity.membership(pid, 100 + pid if start_time is None else start_time),
                        {CGROUPS: {"cpu": "/user.slice"}},
                        applied={CGROUPS: {"cpu": "/corelane/low"}})


def test_demoted_and_moved_parents_but_not_those_only_placed() -> None:
    niced = process(1, {"nice": 0}, {"nice": 19})
    placed = process(2, {"cpus": "0-1"}, {"cpus": "1"})            # cores only: no demotion
    placed_and_moved = process(3, {"cpus": "0-1"}, {"cpus": "0"})
    parents = demoted_parents([niced, placed, placed_and_moved, moved(3), moved(4)])
    assert set(parents) == {1, 3, 4}
    assert parents[1] is niced
    # a moved parent's process entry gives what its child gets back; without one, the
    # membership entry stands for it
    assert parents[3] is placed_and_moved
    assert parents[4].identity.target == "cgroup"
    assert neutral_for(parents[4], "0-1").cpus == "0-1"


def test_a_membership_given_back_or_of_another_process_is_no_parent() -> None:
    given_back = JournalEntry(Identity.membership(5, 105), {CGROUPS: {"cpu": "/"}}, applied=None)
    # pid 6's membership entry is of an earlier process of that pid (another start time)
    parents = demoted_parents([given_back, process(6, {"cpus": "0-1"}, {"cpus": "1"}),
                               moved(6, start_time=1)])
    assert set(parents) == {6} and parents[6].identity.target == "cgroup"
