"""The on-disk journal of every target's original settings, so corelane can undo its changes.

Before corelane changes a target for the first time, its settings as they were are recorded
(``record_original``); after each apply the settings corelane left are noted
(``mark_applied``), which later tells an operator's change from corelane's own. On a stop,
``restore_all`` puts every journalled target that still lives back; after a crash,
``reconcile`` restores what is no longer managed and keeps what still is.

The file is JSON lines, one record per line, appended with a single ``write`` and fsync'd
before the call returns. A crash can only tear the last line; reading skips a line that does
not parse, and the next append starts on a fresh line. When dead records pile up, the live
state is rewritten to a temporary file, fsync'd, and renamed over the journal (atomic), then
the folder is fsync'd so the rename itself survives a power cut. A lock file keeps a second
applier on the same host from writing the same journal.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.enforcement.process import GONE, NOT_PERMITTED, PID_REUSED, ApplyResult
from pipeline import procfs
from pipeline.hostpaths import LIVE, HostPaths

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "journal.lock"
FORMAT_VERSION = 1


class JournalError(Exception):
    """The journal cannot be used as asked; the text says why, for a person."""


@dataclass(frozen=True)
class Identity:
    """A process is (pid, start_time), never the pid alone; a container is its full id; a
    CPU (its idle-state limit) is its number."""
    target: str                               # "process" | "container" | "cpu"
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    cpu: int | None = None

    @classmethod
    def process(cls, pid: int, start_time: int) -> Identity:
        return cls("process", pid=int(pid), start_time=int(start_time))

    @classmethod
    def membership(cls, pid: int, start_time: int) -> Identity:
        """A process's cgroups, journalled apart from its other settings: they are moved
        and given back on their own."""
        return cls("cgroup", pid=int(pid), start_time=int(start_time))

    @classmethod
    def container(cls, container_id: str) -> Identity:
        return cls("container", container_id=container_id)

    @classmethod
    def of_cpu(cls, cpu: int) -> Identity:
        return cls("cpu", cpu=int(cpu))

    @property
    def key(self) -> str:
        if self.target in ("process", "cgroup"):
            return f"{self.target}:{self.pid}:{self.start_time}"
        if self.target == "cpu":
            return f"cpu:{self.cpu}"
        return f"container:{self.container_id}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("target", self.target), ("pid", self.pid),
                                  ("start_time", self.start_time),
                                  ("container_id", self.container_id), ("cpu", self.cpu))
                if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        if data.get("target") == "process":
            return cls.process(data["pid"], data["start_time"])
        if data.get("target") == "cgroup":
            return cls.membership(data["pid"], data["start_time"])
        if data.get("target") == "container":
            return cls.container(data["container_id"])
        if data.get("target") == "cpu":
            return cls.of_cpu(data["cpu"])
        raise ValueError(f"not a journal identity: {data!r}")


@dataclass
class JournalEntry:
    identity: Identity
    original: dict[str, Any]                  # the settings before corelane's first change
    applied: dict[str, Any] | None = None     # what corelane left the last time it applied
    recorded_at: float = 0.0
    seq: int = 0                              # order of first change (restores run backwards)


RestoreFn = Callable[[JournalEntry], ApplyResult]
AliveFn = Callable[[Identity], str | None]


def process_problem(identity: Identity, paths: HostPaths = LIVE) -> str | None:
    """Why a journalled target can no longer be restored (gone, pid reused), or None.
    Containers are left to the restore function, which asks the engine."""
    if identity.target not in ("process", "cgroup"):
        return None
    stat = procfs.read_stat(paths.proc, int(identity.pid or 0))
    if stat is None:
        return GONE
    if stat.start_time != identity.start_time:
        return f"{PID_REUSED} (started at tick {stat.start_time}, not {identity.start_time})"
    return None


def _keep_after(result: ApplyResult) -> bool:
    """A failed or refused restore stays journalled to be tried again; anything else
    (restored, already as it was, gone, changed by someone else) is done with."""
    return result.outcome == "failed" or result.reason.startswith(NOT_PERMITTED)


@dataclass
class _State:
    entries: dict[str, JournalEntry] = field(default_factory=dict)
    next_seq: int = 0
    records: int = 0                          # lines in the file, live or not
    damaged: int = 0                          # lines that did not parse (a torn write)


class Journal:
    """The journal in ``folder`` (created if missing). One process at a time: a second
    ``Journal`` on the same folder raises JournalError until the first is closed."""

    def __init__(self, folder: str | os.PathLike[str], *, compact_after: int = 1000) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / JOURNAL_FILE
        self.compact_after = compact_after
        self._mutex = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the journal folder {self.folder}: {exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalError(f"the journal in {self.folder} is in use by another process "
                               "(another corelane applier on this host?)") from None
        self._state = self._load()
        if self._state.damaged:
            log.warning("journal %s: skipped %d unreadable line(s) (a write cut short by a "
                        "crash); the entries before them are intact", self.path,
                        self._state.damaged)

    # --- file ----------------------------------------------------------------------------

    def _load(self) -> _State:
        state = _State()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from None
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            state.records += 1
            try:
                self._replay(state, json.loads(line))
            except (ValueError, KeyError, TypeError):
                state.damaged += 1
        return state

    @staticmethod
    def _replay(state: _State, record: dict[str, Any]) -> None:
        op, key = record["op"], record["key"]
        if op == "original":
            if key not in state.entries:      # the first original wins: it predates corelane
                state.entries[key] = JournalEntry(
                    Identity.from_dict(record["identity"]), dict(record["original"]),
                    record.get("applied"), float(record.get("ts", 0.0)), state.next_seq)
                state.next_seq += 1
        elif op == "applied":
            if key in state.entries:
                state.entries[key].applied = dict(record["applied"])
        elif op == "forget":
            state.entries.pop(key, None)
        else:
            raise ValueError(f"unknown journal op {op!r}")

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from None
        try:
            size = os.fstat(fd).st_size
            if size:
                # a crash may have cut the last line short: keep it apart from this one
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            created = size == 0
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from None
        finally:
            os.close(fd)
        if created:
            self._fsync_folder()
        self._state.records += 1
        self._replay(self._state, record)
        if self._state.records > self.compact_after + 2 * len(self._state.entries):
            self._compact()

    def _fsync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _compact(self) -> None:
        """Rewrite the live entries alone: temporary file, fsync, rename, fsync the folder."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        lines = []
        for entry in sorted(self._state.entries.values(), key=lambda e: e.seq):
            lines.append(json.dumps(self._original_record(entry), separators=(",", ":"),
                                    sort_keys=True))
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._fsync_folder()
        except OSError as exc:
            raise JournalError(f"cannot rewrite the journal {self.path}: {exc}") from None
        self._state.records = len(lines)

    @staticmethod
    def _original_record(entry: JournalEntry) -> dict[str, Any]:
        record = {"v": FORMAT_VERSION, "op": "original", "key": entry.identity.key,
                  "identity": entry.identity.to_dict(), "original": entry.original,
                  "ts": entry.recorded_at}
        if entry.applied is not None:
            record["applied"] = entry.applied
        return record

    # --- the API -------------------------------------------------------------------------

    def record_original(self, identity: Identity, original: dict[str, Any]) -> bool:
        """Record a target's settings before corelane's first change to it. Returns False
        (and records nothing) when the target is already journalled: the first record is
        the one from before corelane touched it."""
        with self._mutex:
            if identity.key in self._state.entries:
                return False
            self._append(self._original_record(
                JournalEntry(identity, dict(original), None, time.time())))
            return True

    def mark_applied(self, identity: Identity, applied: dict[str, Any]) -> None:
        """Note the settings corelane left on a journalled target."""
        with self._mutex:
            entry = self._state.entries.get(identity.key)
            if entry is None:
                raise JournalError(f"{identity.key} has no original settings on record: record "
                                   "them before the first change")
            if entry.applied == applied:
                return                        # nothing new: keep the file from growing
            self._append({"v": FORMAT_VERSION, "op": "applied", "key": identity.key,
                          "applied": dict(applied), "ts": time.time()})

    def get(self, identity: Identity) -> JournalEntry | None:
        with self._mutex:
            return self._state.entries.get(identity.key)

    def entries(self) -> list[JournalEntry]:
        """Every journalled target, in the order corelane first changed them."""
        with self._mutex:
            return sorted(self._state.entries.values(), key=lambda e: e.seq)

    def forget(self, identity: Identity) -> bool:
        """Drop a target (restored, or nothing left to restore). False if it was not there."""
        with self._mutex:
            if identity.key not in self._state.entries:
                return False
            self._append({"v": FORMAT_VERSION, "op": "forget", "key": identity.key,
                          "ts": time.time()})
            return True

    def restore_all(self, apply_fn: RestoreFn, alive: AliveFn | None = None) -> list[ApplyResult]:
        """Put every journalled target back, the last one first changed first (undo order).

        ``apply_fn(entry)`` restores one target. A process that is gone or whose pid was
        reused is skipped without calling it. Entries are forgotten once done with; a failed
        or not permitted restore stays in the journal for the next try.
        """
        return self._restore(self.entries()[::-1], apply_fn, alive or process_problem)

    def reconcile(self, managed_identities: Iterable[Identity], apply_fn: RestoreFn,
                  alive: AliveFn | None = None) -> list[ApplyResult]:
        """After a restart: restore the targets corelane no longer manages and keep the
        entries of those it still does (their originals are still the ones to go back to)."""
        managed = {identity.key for identity in managed_identities}
        stale = [e for e in self.entries()[::-1] if e.identity.key not in managed]
        return self._restore(stale, apply_fn, alive or process_problem)

    def restore_targets(self, identities: Iterable[Identity], apply_fn: RestoreFn,
                        alive: AliveFn | None = None) -> list[ApplyResult]:
        """Put these journalled targets back (those not journalled are ignored)."""
        keys = {identity.key for identity in identities}
        chosen = [e for e in self.entries()[::-1] if e.identity.key in keys]
        return self._restore(chosen, apply_fn, alive or process_problem)

    def _restore(self, entries: list[JournalEntry], apply_fn: RestoreFn,
                 alive: AliveFn) -> list[ApplyResult]:
        results = []
        for entry in entries:
            identity = entry.identity
            problem = alive(identity)
            if problem is not None:
                result = ApplyResult(identity.target, "skipped", problem, pid=identity.pid,
                                     start_time=identity.start_time,
                                     container_id=identity.container_id)
            else:
                try:
                    result = apply_fn(entry)
                except Exception as exc:       # one bad target must not stop the others
                    log.exception("restoring %s failed", identity.key)
                    result = ApplyResult(identity.target, "failed", f"restore raised: {exc}",
                                         pid=identity.pid, start_time=identity.start_time,
                                         container_id=identity.container_id)
            if not _keep_after(result):
                self.forget(identity)
            results.append(result)
        return results

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)       # closing releases the lock
                self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
