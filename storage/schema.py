"""The history database's tables: one per event type, derived from the event classes; the
rollups; the recorder's bookkeeping.

An event table is not written down here: ``table_spec`` reads it off the payload class in
``pipeline.events`` (``msgspec.inspect``), so the schema of a message and the columns of
its table cannot drift apart. Every event table starts with ``event_id, host, ts, seq``
(``ts`` a UTC ``TIMESTAMP`` made from the envelope's float seconds); the tables of batched
events add ``batch, chunk, chunks`` and the batch's other fields, then one column per field
of a row, one row per item (an empty chunk is still one row, its item columns NULL).

How a field becomes a column:

- ``int`` is BIGINT, or INTEGER where its declared range fits 32 bits (``Int32``);
  ``float`` is DOUBLE, or TIMESTAMP for ``Timestamp``; ``str`` VARCHAR; ``bool`` BOOLEAN;
- a list of those is an array column (``DOUBLE[]``), a ``dict[str, scalar]`` a MAP, any
  other dict JSON;
- ``Meta(extra={"column": name})`` stores the field under another name,
  ``Meta(extra={"columns": (...)})`` spreads a fixed tuple over several columns.

A new field is a new column: opening an older file adds it (``ensure_schema``), and
nothing stored is lost. A rename or a change of type is a ``MIGRATIONS`` step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

import msgspec
import msgspec.inspect as mi
import pyarrow as pa

from pipeline.events import EVENT_TYPES, Batch

SCHEMA_VERSION = 2

Level = Literal["envelope", "payload", "item"]


@dataclass(frozen=True)
class Column:
    """One column of an event table and where its values come from."""
    name: str
    sql: str
    arrow: pa.DataType
    level: Level                             # the envelope, its payload, or one row of it
    attr: str                                # the attribute read at that level
    convert: Callable[[Any], Any] | None = None
    part: int | None = None                  # which item of a tuple spread over columns


@dataclass(frozen=True)
class TableSpec:
    event_type: str
    table: str
    columns: tuple[Column, ...]
    rows_field: str | None                   # a batched payload's list of rows, else None

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.arrow) for c in self.columns])

    @property
    def ddl(self) -> str:
        return ", ".join(f'"{c.name}" {c.sql}' + (" NOT NULL" if c.name in _REQUIRED else "")
                         for c in self.columns)


class SchemaError(Exception):
    """A database whose schema this code cannot use; the message is meant for a person."""


_json_encode = msgspec.json.Encoder().encode
_REQUIRED = ("event_id", "host", "ts")


def _json(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


def _items(value: dict | None) -> list | None:
    return None if value is None else list(value.items())


def _micros(value: float | None) -> int | None:
    return None if value is None else round(value * 1_000_000)


def _scalar(t: Any, where: str) -> tuple[str, pa.DataType, Callable[[Any], Any] | None]:
    extra = t.extra if isinstance(t, mi.Metadata) else {}
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(inner) == 1:
            return _scalar(inner[0], where)
    if isinstance(t, mi.IntType):
        narrow = (t.ge is not None and t.ge >= -(2 ** 31)) and (t.le is not None and t.le < 2 ** 31)
        return ("INTEGER", pa.int32(), None) if narrow else ("BIGINT", pa.int64(), None)
    if isinstance(t, mi.FloatType):
        if (extra or {}).get("timestamp"):
            return "TIMESTAMP", pa.timestamp("us"), _micros
        return "DOUBLE", pa.float64(), None
    if isinstance(t, mi.StrType):
        return "VARCHAR", pa.string(), None
    if isinstance(t, mi.BoolType):
        return "BOOLEAN", pa.bool_(), None
    if isinstance(t, mi.ListType):
        sql, arrow, convert = _scalar(t.item_type, where)
        if convert is not None or sql.endswith("]"):
            raise TypeError(f"{where}: a list of {sql} has no column type")
        return f"{sql}[]", pa.list_(arrow), None
    if isinstance(t, mi.DictType):
        value = t.value_type.type if isinstance(t.value_type, mi.Metadata) else t.value_type
        if isinstance(t.key_type, mi.StrType) and not isinstance(value, (mi.AnyType,
                                                                         mi.DictType,
                                                                         mi.ListType)):
            sql, arrow, _ = _scalar(value, where)
            return f"MAP(VARCHAR, {sql})", pa.map_(pa.string(), arrow), _items
        return "JSON", pa.string(), _json
    if isinstance(t, mi.AnyType):
        return "JSON", pa.string(), _json
    raise TypeError(f"{where}: no column type for {type(t).__name__}; give the field a "
                    f"type listed in storage/schema.py")


def _index(i: int) -> Callable[[Any], Any]:
    return lambda value: None if value is None else value[i]


def _field_columns(field: mi.Field, level: Level, where: str) -> list[Column]:
    t = field.type
    extra = dict(t.extra or {}) if isinstance(t, mi.Metadata) else {}
    spread = extra.get("columns")
    if spread:
        inner = t.type if isinstance(t, mi.Metadata) else t
        if not isinstance(inner, mi.TupleType) or len(inner.item_types) != len(spread):
            raise TypeError(f"{where}.{field.name}: 'columns' needs a tuple of as many items")
        out = []
        for i, (name, item) in enumerate(zip(spread, inner.item_types)):
            sql, arrow, _ = _scalar(item, f"{where}.{field.name}")
            out.append(Column(name, sql, arrow, level, field.name, _index(i), part=i))
        return out
    sql, arrow, convert = _scalar(t, f"{where}.{field.name}")
    return [Column(extra.get("column", field.name), sql, arrow, level, field.name, convert)]


_ENVELOPE_COLUMNS = (
    Column("event_id", "VARCHAR", pa.string(), "envelope", "id"),
    Column("host", "VARCHAR", pa.string(), "envelope", "host"),
    Column("ts", "TIMESTAMP", pa.timestamp("us"), "envelope", "ts", _micros),
    Column("seq", "BIGINT", pa.int64(), "envelope", "seq"),
)


def table_spec(event_type: str) -> TableSpec:
    """The table of one event type, read off its payload class."""
    kind = EVENT_TYPES[event_type]
    info = mi.type_info(kind.payload)
    assert isinstance(info, mi.StructType)
    where = kind.payload.__name__
    columns = list(_ENVELOPE_COLUMNS)
    rows_field = None
    if issubclass(kind.payload, Batch):
        lists = [f for f in info.fields if isinstance(f.type, mi.ListType)
                 and isinstance(f.type.item_type, mi.StructType)]
        if len(lists) != 1:
            raise TypeError(f"{where}: a batched payload needs exactly one list of rows")
        rows_field = lists[0].name
        for f in info.fields:
            if f is not lists[0]:
                columns += _field_columns(f, "payload", where)
        row_type = lists[0].type.item_type
        renamed = getattr(kind.payload, "item_columns", {})   # a row field named as a batch's
        for f in row_type.fields:
            for c in _field_columns(f, "item", row_type.cls.__name__):
                columns.append(replace(c, name=renamed[c.name]) if c.name in renamed else c)
    else:
        for f in info.fields:
            columns += _field_columns(f, "payload", where)
    names = [c.name for c in columns]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise TypeError(f"{where}: columns {doubled} would appear twice")
    return TableSpec(event_type, kind.table, tuple(columns), rows_field)


SPECS: dict[str, TableSpec] = {name: table_spec(name) for name in EVENT_TYPES}
# event type -> table
TABLE_OF_TYPE: dict[str, str] = {name: spec.table for name, spec in SPECS.items()}

# 1-minute aggregates written by retention.py; "minute" is the start of the minute (UTC).
ROLLUP_TABLES: dict[str, str] = {
    "process_samples_1m": """host VARCHAR NOT NULL, pid INTEGER NOT NULL,
        start_time BIGINT NOT NULL, minute TIMESTAMP NOT NULL,
        name VARCHAR, cmdline VARCHAR, container_id VARCHAR, samples INTEGER,
        cpu_share_avg DOUBLE, cpu_share_max DOUBLE, cpu_s DOUBLE,
        run_time_ns BIGINT, run_delay_ns BIGINT, vol_ctx BIGINT, invol_ctx BIGINT,
        io_read_bytes BIGINT, io_write_bytes BIGINT,
        rss_bytes_avg DOUBLE, rss_bytes_max BIGINT, threads_max INTEGER,
        nice INTEGER, policy INTEGER, affinity VARCHAR""",
    "host_samples_1m": """host VARCHAR NOT NULL, minute TIMESTAMP NOT NULL, samples INTEGER,
        cpu_percent_avg DOUBLE[], cpu_percent_max DOUBLE[],
        load1_avg DOUBLE, load1_max DOUBLE, load5_avg DOUBLE, load15_avg DOUBLE,
        mem_total_bytes BIGINT, mem_available_bytes_avg DOUBLE,
        mem_available_bytes_min BIGINT, swap_used_bytes_max BIGINT""",
    "container_samples_1m": """host VARCHAR NOT NULL, container_id VARCHAR NOT NULL,
        minute TIMESTAMP NOT NULL, name VARCHAR, image VARCHAR, samples INTEGER,
        cpu_share_avg DOUBLE, cpu_share_max DOUBLE,
        memory_bytes_avg DOUBLE, memory_bytes_max BIGINT, pids_max INTEGER""",
}

BOOKKEEPING: dict[str, str] = {
    "schema_version": "version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL",
    # (topic, partition) -> the next offset to read; written with the rows, atomically.
    "recorder_offsets": """topic VARCHAR, "partition" INTEGER, next_offset BIGINT NOT NULL,
        PRIMARY KEY (topic, "partition")""",
    # retention.py's progress per task ("rollup:<table>", "purge:<table>"): everything
    # before "until" is done.
    "retention_state": "task VARCHAR PRIMARY KEY, until TIMESTAMP NOT NULL",
}

# version reached -> statements that take a file from the version before to it. They run
# after every missing column has been added, so a step may fill a new column from old ones.
MIGRATIONS: dict[int, list[str]] = {
    # Enforcements name the plan they applied; before, only its number, which starts again
    # after a restart. The plan of that number the host published last before the apply.
    2: ["""UPDATE enforcements AS e SET plan_id = (
            SELECT arg_max(d.batch, d.ts) FROM decisions d
            WHERE d.host = e.host AND d.plan_seq = e.plan_seq AND d.ts <= e.ts)
        WHERE coalesce(e.plan_id, '') = ''"""],
}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # TIMESTAMP columns hold UTC


def _create_statements() -> list[str]:
    tables = {**{s.table: s.ddl for s in SPECS.values()}, **ROLLUP_TABLES, **BOOKKEEPING}
    return [f"CREATE TABLE IF NOT EXISTS {name} ({cols})" for name, cols in tables.items()]


def _missing_columns(con: Any) -> list[str]:
    """ALTER statements for every event column the file's tables lack."""
    found: dict[str, set[str]] = {}
    for table, column_name in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE schema_name = 'main'").fetchall():
        found.setdefault(table, set()).add(column_name)
    out = []
    for spec in SPECS.values():
        have = found.get(spec.table)
        if have is None:
            continue                         # a new table: CREATE makes it whole
        out += [f'ALTER TABLE {spec.table} ADD COLUMN "{c.name}" {c.sql}'
                for c in spec.columns if c.name not in have]
    return out


def stored_version(con: Any) -> int | None:
    """The schema version recorded in the file, or None for a file without corelane tables."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' "
        "AND schema_name = 'main'").fetchall()[0][0]
    if not exists:
        return None
    row = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return None if row is None else int(row)


def ensure_schema(con: Any, where: str = "the database") -> int:
    """Create what is missing, migrate an older file, refuse a newer one. Idempotent.

    Returns the schema version now in the file.
    """
    from storage.views import VIEW_STATEMENTS  # views depend on the tables

    version = stored_version(con)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaError(f"{where} has history schema version {version}, newer than this "
                          f"corelane's {SCHEMA_VERSION}: upgrade corelane to read it")
    con.execute("BEGIN TRANSACTION")
    try:
        if version is None:
            for stmt in _create_statements():
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, _utcnow()])
        else:
            # new columns of existing tables and new tables, then the steps that fill them
            for stmt in _missing_columns(con) + _create_statements():
                con.execute(stmt)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS.get(target, []):
                    con.execute(stmt)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [target, _utcnow()])
        for stmt in VIEW_STATEMENTS:
            con.execute(stmt)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
