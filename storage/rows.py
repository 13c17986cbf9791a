"""Envelopes -> one Arrow table per history table, by the columns ``storage.schema`` derives
from the event classes, and rows back to envelopes (``Unflattener``). Pure: no I/O, no
DuckDB.

This is the recorder's hot path (a 1,000-process sweep every second per host), so columns
are built with one list comprehension per attribute over all items of all envelopes at
once, never a dict per row; envelope and payload columns are built once per envelope and
repeated with an Arrow ``take``.

Rules that the exactly-once checks rely on:

- a batched event (process/container samples, classifications, decisions, enforcements)
  gives one row per item; a chunk with no items gives ONE row with only the envelope and
  batch columns set, so the distinct ``event_id``s of a table equal the messages on its
  topic;
- every other event gives one row.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi
import numpy as np
import pyarrow as pa

from pipeline.events import EVENT_TYPES, SCHEMA_VERSION, Envelope
from storage.schema import SPECS, Column, TableSpec

Extractor = Callable[[Sequence[Any]], tuple[list, ...]]


def _extractor(attrs: Sequence[str]) -> Extractor:
    """One function holding one list comprehension per attribute.

    Generated because a literal ``s.pid`` comprehension is about twice as fast as
    ``getattr(s, name)`` in a loop, and this runs over every sampled process.
    """
    for attr in attrs:
        if not attr.isidentifier():
            raise ValueError(f"not an attribute name: {attr!r}")
    body = ", ".join(f"[s.{attr} for s in items]" for attr in attrs)
    return eval(f"lambda items: ({body},)")  # noqa: S307 - attrs are field names of structs


class _Builder:
    """Builds one table's columns, level by level, with one extractor per level."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.schema = spec.arrow_schema
        self.by_level: dict[str, list[Column]] = defaultdict(list)
        for c in spec.columns:
            self.by_level[c.level].append(c)
        self.attrs = {level: list(dict.fromkeys(c.attr for c in cols))
                      for level, cols in self.by_level.items()}
        self.extract = {level: _extractor(attrs) for level, attrs in self.attrs.items()}

    def columns(self, level: str, objects: Sequence[Any], pad: int = 0) -> dict[str, pa.Array]:
        cols = self.by_level.get(level)
        if not cols:
            return {}
        values = dict(zip(self.attrs[level], self.extract[level](objects)))
        out = {}
        for c in cols:
            got = values[c.attr]
            if c.convert is not None:
                got = [c.convert(v) for v in got]
            if pad:
                got = got + [None] * pad
            out[c.name] = pa.array(got, c.arrow)
        return out

    def single(self, envelopes: Sequence[Envelope]) -> pa.Table:
        columns = {**self.columns("envelope", envelopes),
                   **self.columns("payload", [e.data for e in envelopes])}
        return pa.Table.from_pydict(columns, schema=self.schema)

    def batched(self, envelopes: Sequence[Envelope]) -> pa.Table:
        attr = self.spec.rows_field
        assert attr is not None
        # Envelopes with items first, empty chunks last: then item columns only need None
        # padding at the end, and the per-envelope columns one index array.
        full = [e for e in envelopes if getattr(e.data, attr)]
        empty = [e for e in envelopes if not getattr(e.data, attr)]
        ordered = full + empty
        lists = [getattr(e.data, attr) for e in full]
        items = [item for part in lists for item in part]
        counts = np.fromiter((len(part) for part in lists), dtype=np.int64, count=len(lists))
        index = pa.array(np.concatenate([
            np.repeat(np.arange(len(full), dtype=np.int64), counts),
            np.arange(len(full), len(ordered), dtype=np.int64)]))
        per_envelope = {**self.columns("envelope", ordered),
                        **self.columns("payload", [e.data for e in ordered])}
        columns = {k: v.take(index) for k, v in per_envelope.items()}
        columns.update(self.columns("item", items, pad=len(empty)))
        return pa.Table.from_pydict(columns, schema=self.schema)

    def table(self, envelopes: Sequence[Envelope]) -> pa.Table:
        return self.batched(envelopes) if self.spec.rows_field else self.single(envelopes)


_BUILDERS: dict[str, _Builder] = {t: _Builder(spec) for t, spec in SPECS.items()}


def rows_in(event: Envelope) -> int:
    """Rows an event becomes: one per item of a batch, and at least one (empty chunks too)."""
    spec = SPECS.get(event.type)
    if spec is None or spec.rows_field is None:
        return 1
    return max(len(getattr(event.data, spec.rows_field)), 1)


def flatten(envelopes: Iterable[Envelope]) -> dict[str, pa.Table]:
    """Group envelopes by type and build each type's table; only tables with rows appear.

    Raises ValueError for an event type that has no table.
    """
    by_type: dict[str, list[Envelope]] = defaultdict(list)
    for env in envelopes:
        by_type[env.type].append(env)
    out: dict[str, pa.Table] = {}
    for event_type, group in by_type.items():
        builder = _BUILDERS.get(event_type)
        if builder is None:
            raise ValueError(f"event type {event_type!r} has no history table")
        out[builder.spec.table] = builder.table(group)
    return out


# --- and back: rows -> envelopes (a replay reads the history as the events it was) ----------

def select_list(spec: TableSpec) -> str:
    """The SELECT list that ``Unflattener`` reads: timestamps as microseconds since the
    epoch (exactly what was stored), everything else as stored."""
    return ", ".join(f'epoch_us("{c.name}") AS "{c.name}"' if c.sql == "TIMESTAMP"
                     else f'"{c.name}"' for c in spec.columns)


def _reader(c: Column) -> Callable[[Any], Any] | None:
    """How a stored value becomes the field's value again (None: as it is)."""
    if c.sql == "TIMESTAMP":
        return lambda v: v / 1_000_000
    if c.sql == "JSON":
        return msgspec.json.decode
    if c.sql.startswith("MAP"):
        return dict
    return None


class Unflattener:
    """Rows of one event table (Arrow record batches of ``select_list``, in event order:
    the rows of one event together, its items in the order written) back into envelopes.

    The inverse of ``flatten``: a batched event's rows become one envelope with its items,
    an empty chunk's row (item columns NULL) one with none; a NULL becomes the field's
    default.
    """

    def __init__(self, event_type: str) -> None:
        self.spec = SPECS[event_type]
        self.event_type = event_type
        self.payload = EVENT_TYPES[event_type].payload
        self._levels: dict[str, list[tuple[Column, Callable[[Any], Any] | None]]] = \
            defaultdict(list)
        for c in self.spec.columns:
            self._levels[c.level].append((c, _reader(c)))
        self.item: type | None = None
        if self.spec.rows_field:
            info = mi.type_info(self.payload)
            rows = next(f for f in info.fields if f.name == self.spec.rows_field)
            self.item = rows.type.item_type.cls
        self._pending: tuple[str, dict[str, Any], dict[str, Any], list[Any]] | None = None

    @staticmethod
    def _fields(cols: list[tuple[Column, Callable[[Any], Any] | None]],
                values: dict[str, list], i: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        parts: dict[str, list] = {}
        for c, read in cols:
            v = values[c.name][i]
            if v is not None and read is not None:
                v = read(v)
            if c.part is not None:
                parts.setdefault(c.attr, []).append(v)
            elif v is not None:
                out[c.attr] = v
        for attr, items in parts.items():
            if all(p is not None for p in items):
                out[attr] = tuple(items)
        return out

    def feed(self, batch: pa.RecordBatch) -> Iterator[Envelope]:
        """The envelopes this batch completes; the last one may wait for the next batch."""
        values = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        levels = self._levels
        ids = values["event_id"]
        items = levels.get("item")
        for i in range(batch.num_rows):
            if self._pending is None or self._pending[0] != ids[i]:
                if self._pending is not None:
                    yield self._finish()
                self._pending = (ids[i], self._fields(levels["envelope"], values, i),
                                 self._fields(levels["payload"], values, i), [])
            if items:
                item = self._fields(items, values, i)
                if item:
                    self._pending[3].append(self.item(**item))   # type: ignore[misc]

    def close(self) -> Iterator[Envelope]:
        """The last envelope, once the rows have ended."""
        if self._pending is not None:
            yield self._finish()

    def _finish(self) -> Envelope:
        assert self._pending is not None
        _, head, fields, items = self._pending
        self._pending = None
        if self.spec.rows_field:
            fields[self.spec.rows_field] = items
        return Envelope(id=head["id"], type=self.event_type, v=SCHEMA_VERSION, ts=head["ts"],
                        host=head["host"], seq=head.get("seq", 0), data=self.payload(**fields))
