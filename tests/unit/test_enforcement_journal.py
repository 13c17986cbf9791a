"""The journal: persistence, torn writes, compaction, restore order and reconcile (fakes only)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.enforcement.journal import (JOURNAL_FILE, Identity, Journal, JournalEntry,
                                        JournalError)
from agents.enforcement.process import ApplyResult

A = Identity.process(100, 5000)
B = Identity.process(200, 6000)
C = Identity.container("c" * 64)


def restored(entry: JournalEntry) -> ApplyResult:
    identity = entry.identity
    return ApplyResult(identity.target, "applied", pid=identity.pid,
                       start_time=identity.start_time, container_id=identity.container_id)


def all_alive(_: Identity) -> None:
    return None


def test_first_original_wins_and_survives_a_reopen(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        assert journal.record_original(A, {"nice": 0, "cpus": "0-3"}) is True
        # a later "original" is the state after corelane's own change: never recorded
        assert journal.record_original(A, {"nice": 10, "cpus": "1"}) is False
        journal.mark_applied(A, {"nice": 10})
        journal.record_original(C, {"cpuset": "", "cpu_shares": 0})
    with Journal(tmp_path) as journal:
        entries = journal.entries()
        assert [e.identity for e in entries] == [A, C]
        assert entries[0].original == {"nice": 0, "cpus": "0-3"}
        assert entries[0].applied == {"nice": 10}
        assert entries[1].applied is None


def test_mark_applied_without_an_original_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        with pytest.raises(JournalError, match="no original settings on record"):
            journal.mark_applied(B, {"nice": 5})


def test_forget(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record_original(A, {"nice": 0})
        journal.record_original(B, {"nice": 0})
        assert journal.forget(A) is True
        assert journal.forget(A) is False
    with Journal(tmp_path) as journal:
        assert [e.identity for e in journal.entries()] == [B]


def test_every_cut_of_the_file_leaves_a_readable_journal(tmp_path: Path) -> None:
    """A crash can stop a write at any byte: each cut reads as a prefix of the history."""
    with Journal(tmp_path / "full") as journal:
        journal.record_original(A, {"nice": 0})
        journal.mark_applied(A, {"nice": 10})
        journal.record_original(B, {"nice": 1})
        journal.forget(A)
        journal.record_original(C, {"cpuset": "", "cpu_shares": 0})
    data = (tmp_path / "full" / JOURNAL_FILE).read_bytes()
    line_ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    # the state after each complete line
    expected_after_lines = [set(), {A.key}, {A.key}, {A.key, B.key}, {B.key}, {B.key, C.key}]
    for cut in range(len(data) + 1):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / JOURNAL_FILE).write_bytes(data[:cut])
        with Journal(folder) as journal:
            # a line whose newline alone is missing holds a whole record: it counts
            complete = sum(1 for end in line_ends if end - 1 <= cut)
            keys = {e.identity.key for e in journal.entries()}
            assert keys == expected_after_lines[complete], f"cut at byte {cut}"
            # and the journal keeps working: the next record is not glued to a torn line
            journal.record_original(Identity.process(999, 1), {"nice": 3})
        with Journal(folder) as journal:
            assert Identity.process(999, 1).key in {e.identity.key for e in journal.entries()}


def test_garbage_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record_original(A, {"nice": 0})
    with open(tmp_path / JOURNAL_FILE, "ab") as f:
        f.write(b'{"op": "original", "key": \n\x00\xff not json\n{"op": "explode", "key": "x"}\n')
    with Journal(tmp_path) as journal:
        assert [e.identity for e in journal.entries()] == [A]
        journal.record_original(B, {"nice": 0})
    with Journal(tmp_path) as journal:
        assert [e.identity for e in journal.entries()] == [A, B]


def test_compaction_keeps_only_live_entries(tmp_path: Path) -> None:
    with Journal(tmp_path, compact_after=10) as journal:
        for pid in range(30):
            identity = Identity.process(pid + 1000, 1)
            journal.record_original(identity, {"nice": 0})
            journal.mark_applied(identity, {"nice": pid % 20})
            if pid % 3:
                journal.forget(identity)
        live = [(e.identity, e.original, e.applied) for e in journal.entries()]
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    assert len(lines) < 3 * 30                  # without compaction: 30 + 30 + 20 lines
    assert not (tmp_path / (JOURNAL_FILE + ".tmp")).exists()
    with Journal(tmp_path) as journal:
        assert [(e.identity, e.original, e.applied) for e in journal.entries()] == live
        assert [e.identity.pid for e in journal.entries()] == [1000 + p for p in range(0, 30, 3)]


def test_a_leftover_temporary_file_from_a_crashed_compaction_is_ignored(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record_original(A, {"nice": 0})
    (tmp_path / (JOURNAL_FILE + ".tmp")).write_bytes(b'{"op":"orig')
    with Journal(tmp_path) as journal:
        assert [e.identity for e in journal.entries()] == [A]


def test_a_second_journal_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    with pytest.raises(JournalError, match="in use by another process"):
        Journal(tmp_path)
    first.close()
    Journal(tmp_path).close()


def test_restore_runs_in_reverse_order_and_forgets_what_is_done(tmp_path: Path) -> None:
    calls: list[Identity] = []

    def restore(entry: JournalEntry) -> ApplyResult:
        calls.append(entry.identity)
        return restored(entry)

    with Journal(tmp_path) as journal:
        for identity in (A, B, C):
            journal.record_original(identity, {"nice": 0})
        results = journal.restore_all(restore, alive=all_alive)
        assert calls == [C, B, A]                # undo order: last changed first
        assert [r.outcome for r in results] == ["applied"] * 3
        assert journal.entries() == []
    with Journal(tmp_path) as journal:
        assert journal.entries() == []


def test_restore_skips_dead_and_reused_and_keeps_failures(tmp_path: Path) -> None:
    problems = {A.key: "gone", B.key: "pid reused (started at tick 7, not 6000)"}
    calls: list[Identity] = []
    d = Identity.process(300, 1)
    e = Identity.process(400, 1)

    def restore(entry: JournalEntry) -> ApplyResult:
        calls.append(entry.identity)
        if entry.identity == C:
            return ApplyResult("container", "failed", "the engine refused", container_id="c" * 64)
        if entry.identity == d:
            return ApplyResult("process", "skipped", "not permitted: nice 0 on thread 300")
        raise RuntimeError("boom")

    with Journal(tmp_path) as journal:
        for identity in (A, B, C, d, e):
            journal.record_original(identity, {"nice": 0})
        results = journal.restore_all(restore, alive=lambda i: problems.get(i.key))
        assert calls == [e, d, C]                # dead and reused ones are never touched
        by_key = {(r.pid, r.container_id): r for r in results}
        assert by_key[(100, None)].reason == "gone"
        assert by_key[(200, None)].reason.startswith("pid reused")
        assert by_key[(400, None)].outcome == "failed"
        assert "boom" in by_key[(400, None)].reason
        # nothing left to restore for gone/reused; failures stay for the next try
        assert [x.identity for x in journal.entries()] == [C, d, e]


def test_reconcile_restores_the_unmanaged_and_keeps_the_managed(tmp_path: Path) -> None:
    calls: list[Identity] = []

    def restore(entry: JournalEntry) -> ApplyResult:
        calls.append(entry.identity)
        return restored(entry)

    with Journal(tmp_path) as journal:
        for identity in (A, B, C):
            journal.record_original(identity, {"nice": 0})
        journal.mark_applied(B, {"nice": 10})
    # a restart after a crash: the new plan still manages B only
    with Journal(tmp_path) as journal:
        results = journal.reconcile([B], restore, alive=all_alive)
        assert calls == [C, A]
        assert [r.outcome for r in results] == ["applied", "applied"]
        kept = journal.entries()
        assert [e.identity for e in kept] == [B]
        assert kept[0].original == {"nice": 0} and kept[0].applied == {"nice": 10}


def test_the_file_is_plain_json_lines(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record_original(A, {"nice": 0})
    record = json.loads((tmp_path / JOURNAL_FILE).read_text().splitlines()[0])
    assert record["op"] == "original"
    assert record["identity"] == {"target": "process", "pid": 100, "start_time": 5000}
    assert record["original"] == {"nice": 0}
