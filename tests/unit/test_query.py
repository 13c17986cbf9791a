"""Read-only SQL over a real DuckDB file: what runs, what is refused, limits, formats."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import duckdb
import pytest
from rich.console import Console

from pipeline.events import Classification, Classifications, envelope
from storage.history import HistoryStore, StoreError
from storage.query import (QueryEngine, QueryError, QueryResult, QueryTimeout, json_safe,
                           truncation_note,
                           render_table, to_csv, to_json)

SLOW_SQL = "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b"


def make_history(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("""
        CREATE TABLE classifications (event_id VARCHAR, host VARCHAR, ts TIMESTAMP,
                                      pid INTEGER, start_time BIGINT, class VARCHAR,
                                      tier INTEGER, cores INTEGER[], share DECIMAL(6,2));
        INSERT INTO classifications VALUES
          ('e1', 'h1', TIMESTAMP '2025-11-27 08:00:00', 10, 111, 'latency', 0, [0, 1], 12.50),
          ('e1', 'h1', TIMESTAMP '2025-11-27 08:00:00', 11, 222, 'batch', 2, [], NULL),
          ('e2', 'h2', TIMESTAMP '2025-11-27 08:00:01.5', 12, 333, NULL, NULL, NULL, 0.25);
        CREATE SEQUENCE ids;
    """)
    con.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "corelane.duckdb"
    make_history(path)
    return path


@pytest.fixture
def owner(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The connection a running corelane holds: read-write, external access off."""
    con = duckdb.connect(str(db), config={"enable_external_access": False})
    yield con
    con.close()


@pytest.fixture
def engine(owner: duckdb.DuckDBPyConnection) -> QueryEngine:
    return QueryEngine(owner, timeout_s=5.0, max_rows=100)


# --- what runs ------------------------------------------------------------------------------

def test_select_returns_columns_types_and_rows(engine: QueryEngine) -> None:
    result = engine.run("SELECT pid, class, ts, cores FROM classifications ORDER BY pid")
    assert result.columns == ["pid", "class", "ts", "cores"]
    assert result.types == ["INTEGER", "VARCHAR", "TIMESTAMP", "INTEGER[]"]
    assert [r[0] for r in result.rows] == [10, 11, 12]
    assert result.rows[0][2] == datetime(2025, 11, 27, 8, 0, 0)
    assert result.rows[0][3] == [0, 1]
    assert result.truncated is False
    assert 0 <= result.elapsed_s < 5


@pytest.mark.parametrize("sql", [
    "WITH x AS (SELECT tier FROM classifications) SELECT count(*) FROM x",
    "FROM classifications SELECT count(*)",
    "VALUES (1), (2)",
    "DESCRIBE classifications",
    "SHOW TABLES",
    "-- a comment first\nSELECT 1;",
])
def test_other_read_forms_run(engine: QueryEngine, sql: str) -> None:
    assert engine.run(sql).rows


def test_explain_of_a_select_runs(engine: QueryEngine) -> None:
    plan = engine.run("EXPLAIN SELECT * FROM classifications WHERE tier = 0")
    assert plan.columns and plan.rows
    assert engine.run("/* why slow */ EXPLAIN ANALYZE SELECT count(*) FROM classifications").rows


def test_readers_on_many_threads_at_once(engine: QueryEngine, owner: duckdb.DuckDBPyConnection
                                         ) -> None:
    answers: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(10):
                answers.append(engine.run("SELECT count(*) FROM classifications").rows[0][0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    owner.execute("INSERT INTO classifications (event_id, pid) VALUES ('e3', 13)")  # writer too
    for t in threads:
        t.join(30)
    assert not errors
    assert len(answers) == 40 and set(answers) <= {3, 4}


# --- what is refused -----------------------------------------------------------------------

@pytest.mark.parametrize("sql, named", [
    ("INSERT INTO classifications (pid) VALUES (1)", "INSERT"),
    ("UPDATE classifications SET tier = 9", "UPDATE"),
    ("DELETE FROM classifications", "DELETE"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("CREATE TABLE x AS SELECT 1", "CREATE"),
    ("DROP TABLE classifications", "DROP"),
    ("ALTER TABLE classifications ADD COLUMN b INT", "ALTER"),
    ("ATTACH ':memory:' AS other", "ATTACH"),
    ("DETACH other", "DETACH"),
    ("COPY classifications TO 'out.csv'", "COPY"),
    ("EXPORT DATABASE 'dump'", "EXPORT"),
    ("PRAGMA version", "PRAGMA"),
    ("SET threads = 1", "SET"),
    ("RESET threads", "SET"),
    ("INSTALL httpfs", "INSTALL/LOAD"),
    ("LOAD httpfs", "INSTALL/LOAD"),
    ("CALL pragma_version()", "CALL"),
    ("CHECKPOINT", "CALL"),
    ("VACUUM", "VACUUM"),
    ("BEGIN TRANSACTION", "transaction"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("CREATE MACRO m() AS 1", "CREATE"),
    ("EXPLAIN ANALYZE DELETE FROM classifications", "EXPLAIN"),
])
def test_writes_and_side_effects_are_refused_by_type(engine: QueryEngine, sql: str,
                                                     named: str) -> None:
    with pytest.raises(QueryError) as caught:
        engine.run(sql)
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert engine.run("SELECT count(*) FROM classifications").rows == [(3,)]


def test_explain_names_the_refused_inner_statement(engine: QueryEngine) -> None:
    with pytest.raises(QueryError, match="EXPLAIN of a DELETE"):
        engine.run("EXPLAIN ANALYZE DELETE FROM classifications")


def test_writes_that_parse_as_select_still_cannot_write(engine: QueryEngine) -> None:
    # A data-modifying CTE and nextval are SELECTs to the parser; the READ ONLY
    # transaction stops them.
    for sql in ["WITH x AS (INSERT INTO classifications (pid) VALUES (99) RETURNING pid) "
                "SELECT * FROM x", "SELECT nextval('ids')"]:
        with pytest.raises(QueryError, match="would write"):
            engine.run(sql)
    assert engine.run("SELECT count(*) FROM classifications WHERE pid = 99").rows == [(0,)]


def test_two_statements_are_refused_even_when_both_read(engine: QueryEngine) -> None:
    with pytest.raises(QueryError, match="one statement at a time, got 2"):
        engine.run("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="got 2"):
        engine.run("SELECT 1; DROP TABLE classifications")
    assert engine.run("SELECT count(*) FROM classifications").rows == [(3,)]


def test_a_semicolon_inside_a_string_is_one_statement(engine: QueryEngine) -> None:
    assert engine.run("SELECT 'a;b' AS \"x;y\"").rows == [("a;b",)]


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment"])
def test_empty_sql_is_an_error(engine: QueryEngine, sql: str) -> None:
    with pytest.raises(QueryError, match="no SQL"):
        engine.run(sql)


def test_duckdb_errors_become_one_line(engine: QueryEngine) -> None:
    with pytest.raises(QueryError) as syntax:
        engine.run("SELECT FROM WHERE")
    assert str(syntax.value).startswith("Parser Error")
    with pytest.raises(QueryError) as catalog:
        engine.run("SELECT * FROM classification")
    text = str(catalog.value)
    assert text.startswith("Catalog Error") and "classification" in text
    assert "Did you mean" in text  # the hint survives, the caret diagram does not
    for message in (str(syntax.value), text):
        assert "\n" not in message and "LINE 1" not in message and "Traceback" not in message


# --- nothing outside the database ----------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_json_auto('/etc/os-release')",
    "SELECT * FROM 'https://example.com/data.parquet'",
])
def test_a_query_cannot_read_files_or_the_network(engine: QueryEngine, sql: str) -> None:
    with pytest.raises(QueryError) as caught:
        engine.run(sql)
    assert "disabled by configuration" in str(caught.value) or "Permission" in str(caught.value)
    assert "root:" not in str(caught.value)


def test_copy_to_and_attach_fail_and_leave_no_file(engine: QueryEngine, tmp_path: Path) -> None:
    out, other = tmp_path / "leak.csv", tmp_path / "other.duckdb"
    with pytest.raises(QueryError, match="COPY"):
        engine.run(f"COPY classifications TO '{out}'")
    with pytest.raises(QueryError, match="ATTACH"):
        engine.run(f"ATTACH '{other}' AS other")
    assert not out.exists() and not other.exists()


def test_external_access_is_off_even_below_the_statement_check(
        owner: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    # What the engine relies on: even a COPY straight on a cursor cannot touch a file.
    out = tmp_path / "leak.csv"
    with pytest.raises(duckdb.PermissionException):
        owner.cursor().execute(f"COPY (SELECT 1) TO '{out}'")
    assert not out.exists()


def test_engine_refuses_a_connection_with_external_access_on(db: Path) -> None:
    con = duckdb.connect(str(db))
    try:
        with pytest.raises(ValueError, match="external access"):
            QueryEngine(con, timeout_s=1, max_rows=10)
    finally:
        con.close()


# --- limits ---------------------------------------------------------------------------------

def test_row_limit_truncates_and_says_so(owner: duckdb.DuckDBPyConnection) -> None:
    engine = QueryEngine(owner, timeout_s=5.0, max_rows=7)
    result = engine.run("SELECT range AS n FROM range(1000000)")
    assert [r[0] for r in result.rows] == list(range(7)) and result.truncated is True
    exact = engine.run("SELECT range AS n FROM range(7)")
    assert len(exact.rows) == 7 and exact.truncated is False


def test_timeout_interrupts_a_slow_query(owner: duckdb.DuckDBPyConnection) -> None:
    engine = QueryEngine(owner, timeout_s=1.0, max_rows=10)
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as caught:
        engine.run(SLOW_SQL)
    took = time.monotonic() - started
    assert took < 2.0, f"interrupted only after {took:.2f} s"
    message = str(caught.value)
    assert "1 s" in message and "storage.query_timeout_s" in message
    # The connection is still good for the next query.
    assert engine.run("SELECT count(*) FROM classifications").rows == [(3,)]


def test_a_timeout_stops_only_its_own_query(owner: duckdb.DuckDBPyConnection) -> None:
    slow = QueryEngine(owner, timeout_s=1.0, max_rows=10)
    fast = QueryEngine(owner, timeout_s=30.0, max_rows=10)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(outcome, slow.run, SLOW_SQL))
    thread.start()
    answers = [fast.run("SELECT count(*) FROM range(100000)").rows[0][0] for _ in range(20)]
    thread.join(10)
    assert answers == [100000] * 20
    assert len(outcome) == 1 and isinstance(outcome[0], QueryTimeout)


def _capture(into: list[BaseException], fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001
        into.append(exc)


# --- opening the file when no corelane runs --------------------------------------------------

@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A history file as corelane writes it, with three classifications."""
    path = tmp_path / "history.duckdb"
    with HistoryStore(path) as store:
        store.write([("t", 0, i, envelope(Classifications(batch="b", items=[Classification(
            pid=10 + i, start_time=1, cls="idle", tier="background", confidence=0.9,
            source="rule")]), "h1", i)) for i in range(3)])
    return path


def test_a_read_only_history_reads_with_external_access_off(history: Path) -> None:
    store = HistoryStore.open_readonly(history)
    try:
        engine = QueryEngine(store.connection, timeout_s=5.0, max_rows=10)
        assert engine.run("SELECT count(*) FROM classifications").rows == [(3,)]
        with pytest.raises(QueryError, match="disabled by configuration"):
            engine.run("SELECT * FROM read_text('/etc/passwd')")
        with pytest.raises(duckdb.Error):  # read-only at the file level too
            store.connection.execute("INSERT INTO classifications (pid) VALUES (1)")
        with pytest.raises(duckdb.Error):  # and no query may loosen its settings
            store.connection.execute("SET enable_external_access = true")
    finally:
        store.close()


def test_a_missing_history_says_run_up_first(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.duckdb"
    with pytest.raises(StoreError) as caught:
        HistoryStore.open_readonly(missing)
    assert str(missing) in str(caught.value) and "corelane up" in str(caught.value)
    assert not missing.exists()  # looking must not create an empty history


def test_a_file_that_is_not_duckdb(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database " * 500)
    with pytest.raises(StoreError, match="not a DuckDB database"):
        HistoryStore.open_readonly(junk)


def test_a_history_held_by_another_process_names_it(history: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys\n"
         f"con = duckdb.connect({str(history)!r})\n"
         "print('holding', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreError) as caught:
            HistoryStore.open_readonly(history)
        message = str(caught.value)
        assert f"process {holder.pid}" in message and str(history) in message
        assert "CORELANE_API" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait(10)
    HistoryStore.open_readonly(history).close()  # free again once the holder is gone


# --- output formats -------------------------------------------------------------------------

def _mixed(engine: QueryEngine) -> QueryResult:
    return engine.run("SELECT pid, ts, class, cores, share, {'a': 1, 'b': [2]} AS s, "
                      "INTERVAL 90 SECOND AS i, 'nan'::DOUBLE AS f, '\\x01'::BLOB AS b "
                      "FROM classifications ORDER BY pid")


def test_csv_is_a_header_and_one_line_per_row(engine: QueryEngine) -> None:
    text = to_csv(_mixed(engine))
    lines = text.splitlines()
    assert len(lines) == 4 and text.endswith("\n") and "\r" not in text
    assert lines[0] == "pid,ts,class,cores,share,s,i,f,b"
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert rows[0][:5] == ["10", "2025-11-27T08:00:00", "latency", "[0, 1]", "12.5"]
    assert json.loads(rows[0][5]) == {"a": 1, "b": [2]} and rows[0][6] == "90.0"
    assert rows[0][7] == "nan"
    assert rows[1][3] == "[]" and rows[1][4] == ""          # empty list vs NULL
    assert rows[2][1] == "2025-11-27T08:00:01.500000"
    assert rows[2][2] == "" and rows[2][3] == ""            # NULLs are empty cells


def test_csv_quotes_commas_quotes_and_newlines(engine: QueryEngine) -> None:
    text = to_csv(engine.run("SELECT 'a,b' AS x, 'say \"hi\"' AS y, 'two\nlines' AS z"))
    assert list(csv.reader(io.StringIO(text))) == [["x", "y", "z"],
                                                   ["a,b", 'say "hi"', "two\nlines"]]


def test_json_is_one_object_with_json_safe_values(engine: QueryEngine) -> None:
    text = to_json(_mixed(engine))
    body = json.loads(text)  # strict JSON: no NaN, no datetime objects
    assert set(body) == {"columns", "rows", "truncated"} and body["truncated"] is False
    first, second, third = body["rows"]
    assert first[:5] == [10, "2025-11-27T08:00:00", "latency", [0, 1], 12.5]
    assert first[5] == {"a": 1, "b": [2]} and first[6] == 90.0 and first[7] == "nan"
    assert first[8] == "AQ=="
    assert second[3] == [] and second[4] is None
    assert third[2] is None and third[4] == 0.25
    assert "NaN" not in text


def test_json_safe_keeps_decimal_digits_a_float_would_lose() -> None:
    assert json_safe(Decimal("12.50")) == 12.5
    assert json_safe(Decimal("12345678901234567890.123")) == "12345678901234567890.123"
    assert json_safe(float("inf")) == "inf" and json_safe(None) is None


def test_table_for_people_says_when_rows_were_left_off(owner: duckdb.DuckDBPyConnection) -> None:
    engine = QueryEngine(owner, timeout_s=5.0, max_rows=2)
    console = Console(record=True, width=120)
    console.print(render_table(engine.run("SELECT pid, class FROM classifications ORDER BY pid")))
    shown = console.export_text()
    assert "pid" in shown and "latency" in shown and "batch" in shown
    assert "12 │" not in shown and "first 2 rows only: more left off" in shown
    assert "storage.query_max_rows" in shown

    console = Console(record=True, width=120)
    console.print(render_table(engine.run("SELECT NULL AS n, '[b]x[/b]' AS markup")))
    shown = console.export_text()
    assert "NULL" in shown and "[b]x[/b]" in shown and "1 row in" in shown


def test_a_result_is_cut_by_its_bytes_as_well_as_its_rows(owner) -> None:  # noqa: ANN001
    engine = QueryEngine(owner, timeout_s=10.0, max_rows=1000, max_bytes=1_000_000)
    result = engine.run("SELECT repeat('x', 300000) AS big FROM range(10)")
    assert len(result.rows) == 3 and result.truncated
    assert result.truncated_by == "storage.query_max_bytes"
    assert "storage.query_max_bytes" in truncation_note(result)
    small = engine.run("SELECT range AS n FROM range(5)")
    assert not small.truncated and small.truncated_by is None and len(small.rows) == 5
    rows = QueryEngine(owner, timeout_s=10.0, max_rows=3).run("SELECT * FROM range(10)")
    assert (len(rows.rows), rows.truncated_by) == (3, "storage.query_max_rows")
