"""A CPU's idle-state limit, on a fake sysfs tree: applied, read back, journalled, given back."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.enforcement import Identity, Journal, enforce_cpu_idle, restorer
from agents.enforcement.cpu import apply_limit, limit_path, limit_text, read_limit
from pipeline.hostpaths import HostPaths


def fake_sys(root: Path, cpus: dict[int, str]) -> HostPaths:
    paths = HostPaths(sys_root=str(root))
    for cpu, text in cpus.items():
        path = limit_path(cpu, paths)
        path.parent.mkdir(parents=True)
        path.write_text(text + "\n")
    return paths


def test_limit_text_reads_the_kernels_inverted_words() -> None:
    assert limit_text(0) == "n/a" and limit_text(20) == "20"
    with pytest.raises(ValueError, match="0 µs or more"):
        limit_text(-1)


def test_a_limit_is_applied_journalled_and_given_back(tmp_path: Path) -> None:
    root = fake_sys(tmp_path / "sys", {0: "0", 1: "0"})
    with Journal(tmp_path / "journal") as journal:
        result = enforce_cpu_idle(journal, 1, 0, paths=root)
        assert (result.outcome, result.reason, result.changes) == ("applied", "", 1)
        assert result.before == {"cpu": 1, "idle_limit": "0"}
        assert result.after == {"cpu": 1, "idle_limit": "n/a"}
        assert read_limit(1, root) == "n/a" and read_limit(0, root) == "0"
        entry = journal.get(Identity.of_cpu(1))
        assert entry is not None and entry.original == {"idle_limit": "0"}
        again = enforce_cpu_idle(journal, 1, 0, paths=root)
        assert (again.outcome, again.reason, again.changes) == ("applied", "already in place", 0)
        restored = journal.restore_all(restorer(paths=root))
        assert [(r.target, r.outcome) for r in restored] == [("cpu", "applied")]
        assert read_limit(1, root) == "0" and journal.entries() == []


def test_someone_elses_limit_is_left_and_said(tmp_path: Path) -> None:
    root = fake_sys(tmp_path / "sys", {1: "0"})
    with Journal(tmp_path / "journal") as journal:
        enforce_cpu_idle(journal, 1, 0, paths=root)
        limit_path(1, root).write_text("50\n")               # an operator's own choice
        result = enforce_cpu_idle(journal, 1, 0, paths=root)
        assert result.outcome == "skipped" and "changed by someone else" in result.reason
        assert read_limit(1, root) == "50"
        restored = journal.restore_all(restorer(paths=root))
        assert restored[0].outcome == "skipped" and read_limit(1, root) == "50"


def test_a_cpu_without_the_file_is_skipped(tmp_path: Path) -> None:
    result = apply_limit(3, "n/a", paths=HostPaths(sys_root=str(tmp_path)))
    assert (result.outcome, result.reason) == (
        "skipped", "no idle-state limit on this CPU (no cpuidle PM QoS in sysfs)")


def test_only_journalled_cpus_are_given_back_by_restore_targets(tmp_path: Path) -> None:
    root = fake_sys(tmp_path / "sys", {0: "0", 1: "0"})
    with Journal(tmp_path / "journal") as journal:
        enforce_cpu_idle(journal, 0, 0, paths=root)
        enforce_cpu_idle(journal, 1, 0, paths=root)
        back = journal.restore_targets([Identity.of_cpu(0), Identity.of_cpu(7)],
                                       restorer(paths=root))
        assert [r.outcome for r in back] == ["applied"]
        assert (read_limit(0, root), read_limit(1, root)) == ("0", "n/a")
        assert [e.identity.key for e in journal.entries()] == ["cpu:1"]
