"""The DuckDB history store: one file, one owning process, batched atomic writes.

``HistoryStore.write`` inserts a batch of consumed records into their tables and moves the
recorder's offsets forward in the same transaction: after a crash either both happened or
neither did, so a restarted recorder that seeks to ``offsets()`` neither loses nor
duplicates a row.

The connection refuses file and network access (``enable_external_access = false``) for its
whole life, so no query run through the store can read or write anything but the database.
"""
from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from pipeline.events import Envelope
from pipeline.settings import StorageSettings
from storage import rows as _rows
from storage.schema import SchemaError, ensure_schema, stored_version

WAL_CHECKPOINT = "256MiB"

# (topic, partition, offset, event); an event of None only advances the offset.
Record = tuple[str, int, int, Envelope | None]


class StoreError(Exception):
    """The history file cannot be used; the message is one line meant for a person."""


def _explain(path: Path, exc: Exception) -> StoreError:
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = re.search(r"\(PID (\d+)\)", text)
        holder = f"process {pid.group(1)}" if pid else "another process"
        return StoreError(f"the history at {path} is in use by another process ({holder}, a "
                          f"running corelane?), and DuckDB lets one process open it at a "
                          f"time: query through that instance's API (CORELANE_API), stop it, "
                          f"or point CORELANE_DB at another file")
    if "not a valid DuckDB database" in text:
        return StoreError(f"{path} is not a DuckDB database file; move it away or point "
                          f"CORELANE_DB at another file")
    if "version" in text and ("older" in text or "newer" in text):
        return StoreError(f"{path} was written by a different DuckDB version: "
                          f"{text.splitlines()[0]}")
    first = text.splitlines()[0] if text else type(exc).__name__
    return StoreError(f"cannot open history database {path}: {first}")


def connection_config(memory_limit: str | None = None, *, external_access: bool = False,
                      locked: bool = False) -> dict[str, Any]:
    """A history connection's DuckDB settings: no extension is fetched or loaded, and
    external access stays off (``external_access``: until the caller turns it off, once
    it has attached what it reads) and, ``locked``, no query can loosen them."""
    config: dict[str, Any] = {"autoinstall_known_extensions": False,
                              "autoload_known_extensions": False}
    if not external_access:
        config["enable_external_access"] = False
    if memory_limit:
        config["memory_limit"] = memory_limit
    if locked:
        config["lock_configuration"] = True
    return config


def _connect(path: Path, read_only: bool, memory_limit: str | None = None
             ) -> duckdb.DuckDBPyConnection:
    # External access is off from the first statement on and cannot be turned back on; a
    # reader's settings are locked too, so no query can loosen them.
    config = connection_config(memory_limit, locked=read_only)
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise _explain(path, exc) from None


class HistoryStore:
    """The history file, owned by this process. Not for concurrent ``write`` calls: one
    writer (the recorder) and any number of readers, each on its own ``cursor()``."""

    def __init__(self, path: Path | str, settings: StorageSettings | None = None, *,
                 _read_only: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.settings = settings or StorageSettings()
        self.read_only = _read_only
        if not _read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for {self.path}: "
                                 f"{exc.strerror}") from None
        elif not self.path.exists():
            raise StoreError(f"no history at {self.path} yet (it does not exist): run "
                             f"'corelane up' first, or point CORELANE_DB at an existing file")
        elif not self.path.is_file():
            raise StoreError(f"the history path {self.path} is not a file")
        self._con = _connect(self.path, _read_only, self.settings.memory_limit)
        self._lock = threading.Lock()  # serialises writes and retention on one connection
        if not _read_only:
            # Each checkpoint rewrites the row group still being filled; at the default
            # 16 MiB of WAL that happens every few seconds of ingest and costs ~40% of
            # the insert rate. A larger WAL only lengthens the replay after a crash.
            self._con.execute(f"SET checkpoint_threshold = '{WAL_CHECKPOINT}'")
        try:
            if _read_only:
                version = stored_version(self._con)
                if version is None:
                    raise StoreError(f"{self.path} holds no corelane history")
            else:
                ensure_schema(self._con, str(self.path))
        except SchemaError as exc:
            self._con.close()
            raise StoreError(str(exc)) from None
        except BaseException:
            self._con.close()
            raise

    @classmethod
    def open_readonly(cls, path: Path | str,
                      settings: StorageSettings | None = None) -> "HistoryStore":
        """Open a file no running corelane holds, for reading only (``corelane query`` when
        no instance runs)."""
        return cls(path, settings, _read_only=True)

    # --- reading ---------------------------------------------------------------------------

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The owning connection. Other threads must use ``cursor()`` instead."""
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for one reader thread (shares the database and its settings)."""
        return self._con.cursor()

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset to read; empty for a new database."""
        with self._lock:
            found = self._con.execute(
                'SELECT topic, "partition", next_offset FROM recorder_offsets').fetchall()
        return {(topic, int(part)): int(nxt) for topic, part, nxt in found}

    # --- writing ---------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> int:
        """Insert the records' rows and advance their offsets, all in one transaction.

        Returns the number of rows inserted. On any error nothing of the batch is kept and
        the error is raised again.
        """
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        if not records:
            return 0
        # An event of None only advances its offset: the message went to dead-letter instead.
        tables = _rows.flatten(rec[3] for rec in records if rec[3] is not None)
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, partition, offset, _ in records:
            key = (topic, partition)
            if offset + 1 > next_offsets.get(key, -1):
                next_offsets[key] = offset + 1
        with self.transaction() as con:
            inserted = 0
            for table, data in tables.items():
                self._insert(table, data)
                inserted += data.num_rows
            # one statement for all partitions: executemany costs ~1 ms per row
            values = ", ".join(["(?, ?, ?)"] * len(next_offsets))
            con.execute(
                f'INSERT INTO recorder_offsets (topic, "partition", next_offset) '
                f'VALUES {values} ON CONFLICT (topic, "partition") '
                f"DO UPDATE SET next_offset = excluded.next_offset",
                [x for (t, p), n in next_offsets.items() for x in (t, p, n)])
        return inserted

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The owning connection inside BEGIN ... COMMIT, rolled back on any error; writers
        (the recorder's ``write`` and retention) take turns through it."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
                self._con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended it already
                    self._con.execute("ROLLBACK")
                raise

    def _insert(self, table: str, data: Any) -> None:
        # A replacement scan of a Python variable is file access as far as DuckDB is
        # concerned and is refused; a registered Arrow table is not.
        view = f"_ingest_{table}"
        self._con.register(view, data)
        self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
        # After a failed insert the transaction refuses everything until ROLLBACK; the
        # name is simply registered again by the next write.
        self._con.unregister(view)

    # --- lifetime --------------------------------------------------------------------------

    def checkpoint(self) -> None:
        with self._lock:
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
