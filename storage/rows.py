"""Envelopes -> one Arrow table per history table. Pure: no I/O, no DuckDB.

This is the recorder's hot path (a 1,000-process sweep every second per host), so columns
are built with one list comprehension per field over all items of all envelopes at once,
never a dict per row; envelope-level columns (event_id, ts, ...) are built once per
envelope and repeated with an Arrow ``take``.

Rules that the exactly-once checks rely on:

- a batched event (process/container samples, classifications, decisions, enforcements)
  gives one row per item; a chunk with no items gives ONE row with only the envelope and
  batch columns set, so the distinct ``event_id``s of a table equal the messages on its
  topic;
- every other event gives one row.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from pipeline.events import Envelope
from storage.schema import TABLE_OF_TYPE

_I32, _I64, _F64, _STR, _BOOL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.bool_()
_TS = pa.timestamp("us")

_EVENT_COLS: list[tuple[str, pa.DataType]] = [
    ("event_id", _STR), ("host", _STR), ("ts", _TS), ("seq", _I64)]
_BATCH_COLS: list[tuple[str, pa.DataType]] = [
    ("batch", _STR), ("chunk", _I32), ("chunks", _I32)]

_json_encode = msgspec.json.Encoder().encode


def _json(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


def _items_of_map(value: dict | None) -> list | None:
    return None if value is None else list(value.items())


# Per batched table: (envelope fields after the batch columns, item fields, the payload's
# list attribute). Item fields are (column, attribute, arrow type, conversion or None).
_ItemField = tuple[str, str, pa.DataType, Callable[[Any], Any] | None]

_PROCESS_FIELDS: list[_ItemField] = [
    ("pid", "pid", _I32, None), ("start_time", "start_time", _I64, None),
    ("ppid", "ppid", _I32, None), ("name", "name", _STR, None),
    ("state", "state", _STR, None), ("cmdline", "cmdline", _STR, None),
    ("uid", "uid", _I64, None), ("cgroup", "cgroup", _STR, None),
    ("container_id", "container_id", _STR, None), ("cpu_share", "cpu_share", _F64, None),
    ("cpu_time_s", "cpu_time_s", _F64, None), ("rss_bytes", "rss_bytes", _I64, None),
    ("vm_bytes", "vm_bytes", _I64, None), ("threads", "threads", _I32, None),
    ("vol_ctx", "vol_ctx", _I64, None), ("invol_ctx", "invol_ctx", _I64, None),
    ("run_time_ns", "run_time_ns", _I64, None), ("run_delay_ns", "run_delay_ns", _I64, None),
    ("timeslices", "timeslices", _I64, None),
    ("io_read_bytes", "io_read_bytes", _I64, None),
    ("io_write_bytes", "io_write_bytes", _I64, None),
    ("io_rchar", "io_rchar", _I64, None), ("io_wchar", "io_wchar", _I64, None),
    ("last_cpu", "last_cpu", _I32, None), ("nice", "nice", _I32, None),
    ("policy", "policy", _I32, None), ("rt_priority", "rt_priority", _I32, None),
    ("affinity", "affinity", _STR, None), ("kernel_thread", "kernel_thread", _BOOL, None),
]
_CONTAINER_FIELDS: list[_ItemField] = [
    ("container_id", "id", _STR, None), ("name", "name", _STR, None),
    ("image", "image", _STR, None), ("status", "status", _STR, None),
    ("labels", "labels", pa.map_(_STR, _STR), _items_of_map),
    ("pids", "pids", pa.list_(_I32), None), ("cpuset", "cpuset", _STR, None),
    ("cpu_shares", "cpu_shares", _I32, None), ("cpu_share", "cpu_share", _F64, None),
    ("memory_bytes", "memory_bytes", _I64, None),
]
_CLASSIFICATION_FIELDS: list[_ItemField] = [
    ("pid", "pid", _I32, None), ("start_time", "start_time", _I64, None),
    ("class", "cls", _STR, None), ("tier", "tier", _STR, None),
    ("confidence", "confidence", _F64, None), ("source", "source", _STR, None),
    ("reason", "reason", _STR, None),
]
_DECISION_FIELDS: list[_ItemField] = [
    ("target", "target", _STR, None), ("tier", "tier", _STR, None),
    ("cpus", "cpus", _STR, None), ("pid", "pid", _I32, None),
    ("start_time", "start_time", _I64, None), ("container_id", "container_id", _STR, None),
    ("nice", "nice", _I32, None), ("ioclass", "ioclass", _STR, None),
    ("iolevel", "iolevel", _I32, None), ("policy", "policy", _STR, None),
    ("cpu_shares", "cpu_shares", _I32, None), ("reason", "reason", _STR, None),
]
_ENFORCEMENT_FIELDS: list[_ItemField] = [
    ("target", "target", _STR, None), ("outcome", "outcome", _STR, None),
    ("pid", "pid", _I32, None), ("start_time", "start_time", _I64, None),
    ("container_id", "container_id", _STR, None), ("reason", "reason", _STR, None),
    ("before", "before", _STR, _json), ("after", "after", _STR, _json),
]

# event type -> (extra envelope-level columns from data, item fields, list attribute)
_BATCHED: dict[str, tuple[list[tuple[str, pa.DataType]], list[_ItemField], str]] = {
    "process_samples": ([("interval_s", _F64)], _PROCESS_FIELDS, "samples"),
    "container_samples": ([("interval_s", _F64)], _CONTAINER_FIELDS, "samples"),
    "classifications": ([], _CLASSIFICATION_FIELDS, "items"),
    "decisions": ([("plan_seq", _I64), ("mode", _STR)], _DECISION_FIELDS, "items"),
    "enforcements": ([("plan_seq", _I64)], _ENFORCEMENT_FIELDS, "items"),
}

# Single-row events: (column, attribute of data, arrow type, conversion or None).
_SINGLE: dict[str, list[_ItemField]] = {
    "host_sample": [
        ("cpu_percent", "cpu_percent", pa.list_(_F64), None),
        ("cpu_freq_khz", "cpu_freq_khz", pa.list_(_F64), None),
        ("load1", "load", _F64, lambda v: v[0]), ("load5", "load", _F64, lambda v: v[1]),
        ("load15", "load", _F64, lambda v: v[2]),
        ("mem_total_bytes", "mem_total_bytes", _I64, None),
        ("mem_available_bytes", "mem_available_bytes", _I64, None),
        ("swap_used_bytes", "swap_used_bytes", _I64, None),
        ("temperatures_c", "temperatures_c", pa.map_(_STR, _F64), _items_of_map),
        ("boot_time", "boot_time", _F64, None), ("interval_s", "interval_s", _F64, None),
    ],
    "label": [
        ("class", "cls", _STR, None), ("pid", "pid", _I32, None),
        ("start_time", "start_time", _I64, None), ("match", "match", _STR, None),
        ("author", "author", _STR, None),
    ],
    "alert": [
        ("kind", "kind", _STR, None), ("message", "message", _STR, None),
        ("severity", "severity", _STR, None), ("details", "details", _STR, _json),
    ],
    "command": [("name", "name", _STR, None), ("args", "args", _STR, _json)],
    "deadletter": [
        ("topic", "topic", _STR, None), ("partition", "partition", _I32, None),
        ("offset", "offset", _I64, None), ("reason", "reason", _STR, None),
        ("key", "key", _STR, None), ("payload", "payload", _STR, None),
    ],
}


def _extractor(attrs: Sequence[str]) -> Callable[[Sequence[Any]], tuple[list, ...]]:
    """One function holding one list comprehension per attribute.

    Generated because a literal ``s.pid`` comprehension is about twice as fast as
    ``getattr(s, name)`` in a loop, and this runs over every sampled process.
    """
    for attr in attrs:
        if not attr.isidentifier():
            raise ValueError(f"not an attribute name: {attr!r}")
    body = ", ".join(f"[s.{attr} for s in items]" for attr in attrs)
    return eval(f"lambda items: ({body},)")  # noqa: S307 - attrs are the literals above


_EXTRACTORS: dict[str, Callable[[Sequence[Any]], tuple[list, ...]]] = {
    **{t: _extractor([f[1] for f in spec[1]]) for t, spec in _BATCHED.items()},
    **{t: _extractor([f[1] for f in spec]) for t, spec in _SINGLE.items()},
}


def _ts_micros(envelopes: Sequence[Envelope]) -> list[int]:
    return [round(e.ts * 1_000_000) for e in envelopes]


def _envelope_columns(envelopes: Sequence[Envelope]) -> dict[str, pa.Array]:
    return {
        "event_id": pa.array([e.id for e in envelopes], _STR),
        "host": pa.array([e.host for e in envelopes], _STR),
        "ts": pa.array(_ts_micros(envelopes), _TS),
        "seq": pa.array([e.seq for e in envelopes], _I64),
    }


def _schema(event_type: str) -> pa.Schema:
    if event_type in _BATCHED:
        extra, fields, _ = _BATCHED[event_type]
        cols = _EVENT_COLS + _BATCH_COLS + extra + [(f[0], f[2]) for f in fields]
    else:
        cols = _EVENT_COLS + [(f[0], f[2]) for f in _SINGLE[event_type]]
    return pa.schema(cols)


SCHEMAS: dict[str, pa.Schema] = {t: _schema(t) for t in [*_BATCHED, *_SINGLE]}


def _batched_table(event_type: str, envelopes: Sequence[Envelope]) -> pa.Table:
    extra, fields, attr = _BATCHED[event_type]
    # Envelopes with items first, empty chunks last: then item columns only need None
    # padding at the end, and the per-envelope columns one index array.
    full = [e for e in envelopes if getattr(e.data, attr)]
    empty = [e for e in envelopes if not getattr(e.data, attr)]
    ordered = full + empty
    lists = [getattr(e.data, attr) for e in full]
    items = [item for part in lists for item in part]
    counts = np.fromiter((len(part) for part in lists), dtype=np.int64, count=len(lists))
    index = np.concatenate([np.repeat(np.arange(len(full), dtype=np.int64), counts),
                            np.arange(len(full), len(ordered), dtype=np.int64)])

    per_envelope = _envelope_columns(ordered)
    per_envelope["batch"] = pa.array([e.data.batch for e in ordered], _STR)
    per_envelope["chunk"] = pa.array([e.data.chunk for e in ordered], _I32)
    per_envelope["chunks"] = pa.array([e.data.chunks for e in ordered], _I32)
    for name, typ in extra:
        per_envelope[name] = pa.array([getattr(e.data, name) for e in ordered], typ)
    index_arr = pa.array(index)
    columns: dict[str, pa.Array] = {k: v.take(index_arr) for k, v in per_envelope.items()}

    pad = [None] * len(empty)
    for (name, _, typ, convert), values in zip(fields, _EXTRACTORS[event_type](items)):
        if convert is not None:
            values = [convert(v) for v in values]
        if pad:
            values = values + pad
        columns[name] = pa.array(values, typ)
    return pa.Table.from_pydict(columns, schema=SCHEMAS[event_type])


def _single_table(event_type: str, envelopes: Sequence[Envelope]) -> pa.Table:
    fields = _SINGLE[event_type]
    columns: dict[str, pa.Array] = _envelope_columns(envelopes)
    data = [e.data for e in envelopes]
    for (name, _, typ, convert), values in zip(fields, _EXTRACTORS[event_type](data)):
        if convert is not None:
            values = [convert(v) for v in values]
        columns[name] = pa.array(values, typ)
    return pa.Table.from_pydict(columns, schema=SCHEMAS[event_type])


def flatten(envelopes: Iterable[Envelope]) -> dict[str, pa.Table]:
    """Group envelopes by type and build each type's table; only tables with rows appear.

    Raises ValueError for an event type that has no table.
    """
    by_type: dict[str, list[Envelope]] = defaultdict(list)
    for env in envelopes:
        by_type[env.type].append(env)
    out: dict[str, pa.Table] = {}
    for event_type, group in by_type.items():
        table = TABLE_OF_TYPE.get(event_type)
        if table is None:
            raise ValueError(f"event type {event_type!r} has no history table")
        if event_type in _BATCHED:
            out[table] = _batched_table(event_type, group)
        else:
            out[table] = _single_table(event_type, group)
    return out
