"""The history's tables come from the event classes: every field of every event is stored
with its value, and a file written by an older schema gains the new columns on open with
nothing lost."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import msgspec.inspect as mi
import pytest

from pipeline import events as ev
from pipeline.settings import StorageSettings
from storage.history import HistoryStore
from storage.schema import SCHEMA_VERSION, SPECS

T = 1_764_230_400.5


def value_for(t: Any, name: str, n: int = 0) -> Any:
    """A value of type ``t`` that is not any field's default, different per position."""
    extra = t.extra if isinstance(t, mi.Metadata) else {}
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        return value_for(next(x for x in t.types if not isinstance(x, mi.NoneType)), name, n)
    if isinstance(t, mi.IntType):
        return 7 + n
    if isinstance(t, mi.FloatType):
        return T + n if (extra or {}).get("timestamp") else 2.5 + n
    if isinstance(t, mi.StrType):
        return f"{name}-{n}"
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.ListType):
        return [value_for(t.item_type, name, i) for i in range(2)]
    if isinstance(t, mi.TupleType):
        return tuple(value_for(x, name, i) for i, x in enumerate(t.item_types))
    if isinstance(t, mi.DictType):
        if isinstance(t.value_type, mi.AnyType):
            return {"a": 1, "b": [1, "two"]}
        return {"k": value_for(t.value_type, name, n)}
    if isinstance(t, mi.StructType):
        return t.cls(**{f.name: value_for(f.type, f.name, n) for f in t.fields})
    raise TypeError(f"no test value for {t}")


def full_payload(event_type: str) -> msgspec.Struct:
    kind = ev.EVENT_TYPES[event_type]
    return value_for(mi.type_info(kind.payload), event_type)


def stored(value: Any, sql_type: str) -> Any:
    """A value read back from DuckDB, in the shape the event holds it."""
    if value is None:
        return None
    if sql_type == "JSON":
        return json.loads(value)
    if sql_type == "TIMESTAMP":
        return value.replace(tzinfo=timezone.utc).timestamp()
    if sql_type.startswith("MAP"):
        return dict(value)
    return value


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_every_field_of_every_event_is_stored_with_its_value(tmp_path: Path,
                                                             event_type: str) -> None:
    payload = full_payload(event_type)
    event = ev.envelope(payload, "h1", 5, ts=T, event_id="e-1")
    spec = SPECS[event_type]
    with HistoryStore(tmp_path / "h.duckdb", StorageSettings()) as store:
        store.write([("t", 0, 0, event)])
        cur = store.cursor()
        rows = cur.execute(f"SELECT * FROM {spec.table}").fetchall()
        names = [d[0] for d in cur.description]
        types = {c.name: c.sql for c in spec.columns}
    read = [dict(zip(names, row)) for row in rows]

    def check(obj: msgspec.Struct, row: dict[str, Any], level: str) -> None:
        for field in msgspec.structs.fields(obj):
            if field.name == spec.rows_field:
                continue
            columns = [c for c in spec.columns if c.level == level and c.attr == field.name]
            assert columns, f"{type(obj).__name__}.{field.name} has no column in {spec.table}"
            got = tuple(stored(row[c.name], types[c.name]) for c in columns)
            want = getattr(obj, field.name)
            if len(columns) == 1:
                got, want = got[0], (list(want) if isinstance(want, tuple) else want)
            assert got == pytest.approx(want) if isinstance(want, (float, tuple)) \
                else got == want, f"{type(obj).__name__}.{field.name}: {got!r} != {want!r}"

    assert read[0]["event_id"] == "e-1" and read[0]["host"] == "h1" and read[0]["seq"] == 5
    check(payload, read[0], "payload")
    if spec.rows_field:
        items = getattr(payload, spec.rows_field)
        assert len(read) == len(items) == 2
        for item in items:
            row = next(r for r in read if all(
                stored(r[c.name], types[c.name]) == getattr(item, c.attr)
                for c in spec.columns if c.level == "item" and c.sql == "VARCHAR"))
            check(item, row, "item")
    else:
        assert len(read) == 1


# The tables of decisions and alerts as schema version 1 wrote them: a file of that age.
VERSION_1 = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)",
    "INSERT INTO schema_version VALUES (1, TIMESTAMP '2026-11-20 10:00:00')",
    """CREATE TABLE decisions (event_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL, seq BIGINT, batch VARCHAR, chunk INTEGER, chunks INTEGER,
        plan_seq BIGINT, mode VARCHAR, target VARCHAR, tier VARCHAR, cpus VARCHAR,
        pid INTEGER, start_time BIGINT, container_id VARCHAR, nice INTEGER,
        ioclass VARCHAR, iolevel INTEGER, policy VARCHAR, cpu_shares INTEGER,
        reason VARCHAR)""",
    """INSERT INTO decisions VALUES ('old-1', 'h1', TIMESTAMP '2026-11-20 10:00:01', 1,
        'b-old', 0, 1, 41, 'balanced', 'process', 'low', '1', 4242, 99, NULL, 10, 'be', 6,
        'batch', NULL, 'compute_batch')""",
    """CREATE TABLE alerts (event_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL, seq BIGINT, kind VARCHAR, message VARCHAR, severity VARCHAR,
        details JSON)""",
    """INSERT INTO alerts VALUES ('old-a', 'h1', TIMESTAMP '2026-11-20 10:00:02', 1,
        'model_drift', 'drifted', 'warning', '{}')""",
    """CREATE TABLE enforcements (event_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL, seq BIGINT, batch VARCHAR, chunk INTEGER, chunks INTEGER,
        plan_seq BIGINT, target VARCHAR, outcome VARCHAR, pid INTEGER, start_time BIGINT,
        container_id VARCHAR, reason VARCHAR, "before" JSON, "after" JSON)""",
    # plan 41 of an earlier run, then plan 41 of this one: each apply names its own
    """INSERT INTO decisions VALUES ('older-1', 'h1', TIMESTAMP '2026-11-19 09:00:00', 1,
        'b-older', 0, 1, 41, 'balanced', 'process', 'low', '0', 4242, 99, NULL, 10, 'be', 6,
        'batch', NULL, 'compute_batch')""",
    """INSERT INTO enforcements VALUES ('enf-older', 'h1', TIMESTAMP '2026-11-19 09:00:01', 1,
        'e-older', 0, 1, 41, 'process', 'applied', 4242, 99, NULL, '', '{}', '{}')""",
    """INSERT INTO enforcements VALUES ('enf-old', 'h1', TIMESTAMP '2026-11-20 10:00:03', 1,
        'e-old', 0, 1, 41, 'process', 'skipped', 4242, 99, NULL, 'gone', '{}', '{}')""",
]


def test_an_older_file_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for stmt in VERSION_1:
        con.execute(stmt)
    con.close()

    cpu_limit = ev.envelope(ev.Decisions(batch="b-new", plan_seq=42, items=[ev.Decision(
        target="cpu", tier="ultra_critical", cpus="1", idle_latency_us=0, reason="poll")]),
        "h1", 2, ts=T, event_id="new-1")
    with HistoryStore(path, StorageSettings()) as store:
        store.write([("t", 0, 0, cpu_limit)])
        cur = store.cursor()
        version = cur.execute("SELECT max(version) FROM schema_version").fetchall()
        got = cur.execute("SELECT event_id, plan_seq, target, nice, idle_latency_us "
                          "FROM decisions ORDER BY event_id").fetchall()
        alert = cur.execute("SELECT kind, message, rule FROM alerts").fetchall()
        plans = cur.execute("SELECT event_id, plan_id FROM enforcements ORDER BY ALL").fetchall()
        outcomes = cur.execute("SELECT decision_event_id, outcome FROM decision_outcomes "
                               "WHERE plan_seq = 41 ORDER BY ALL").fetchall()
    assert version == [(SCHEMA_VERSION,)]
    assert got == [("new-1", 42, "cpu", None, 0), ("old-1", 41, "process", 10, None),
                   ("older-1", 41, "process", 10, None)]
    assert plans == [("enf-old", "b-old"), ("enf-older", "b-older")]
    assert outcomes == [("old-1", "skipped"), ("older-1", "applied")]   # runs never mix
    # a column the classes no longer have stays, with what it held
    assert alert == [("model_drift", "drifted", None)]


def test_reopening_a_current_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    HistoryStore(path, StorageSettings()).close()
    con = duckdb.connect(str(path))
    before = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                         "ORDER BY ALL").fetchall()
    con.close()
    HistoryStore(path, StorageSettings()).close()
    con = duckdb.connect(str(path))
    after = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() "
                        "ORDER BY ALL").fetchall()
    versions = con.execute("SELECT count(*) FROM schema_version").fetchall()
    con.close()
    assert before == after and versions == [(1,)]


def test_a_field_with_no_column_type_is_refused_at_import() -> None:
    from storage.schema import table_spec

    class Odd(ev.Batch, kw_only=True):
        items: list[ev.Label] = []
        when: datetime | None = None

    saved = ev.EVENT_TYPES.get("odd")
    ev.EVENT_TYPES["odd"] = ev.EventType("odd", Odd, "odd", "odd")
    try:
        with pytest.raises(TypeError, match="Odd.when"):
            table_spec("odd")
    finally:
        del ev.EVENT_TYPES["odd"]
        assert saved is None
