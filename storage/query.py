"""Read-only SQL over the history: one checked statement, a time limit, a row limit.

A query runs on its own cursor of the connection that owns the DuckDB file (or of a
read-only ``HistoryStore.open_readonly`` when no corelane runs), inside a READ ONLY
transaction. Three guards keep it from changing anything or reaching outside the database:

* the statement type: exactly one statement, and only reads (SELECT, WITH, FROM, VALUES,
  DESCRIBE, SHOW, SUMMARIZE, and EXPLAIN [ANALYZE] of one of those);
* the READ ONLY transaction: a write the parser calls a SELECT (a data-modifying CTE,
  ``nextval``) still fails;
* ``enable_external_access = false`` on the database: no file or network access
  (``read_csv``, ``COPY``, ``ATTACH``, ``INSTALL``), which the engine checks it was given.

Errors are :class:`QueryError` with one line meant for a person.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
from rich.table import Table
from rich.text import Text

# Statement types that only read. EXPLAIN is checked further: its inner statement must be one.
READ_TYPES = frozenset({duckdb.StatementType.SELECT})

# Names a person recognises, for the refusal message.
_TYPE_NAMES = {
    duckdb.StatementType.LOAD: "INSTALL/LOAD",
    duckdb.StatementType.EXTENSION: "extension",
    duckdb.StatementType.CREATE_FUNC: "CREATE MACRO/FUNCTION",
    duckdb.StatementType.COPY_DATABASE: "COPY DATABASE",
    duckdb.StatementType.VARIABLE_SET: "SET VARIABLE",
    duckdb.StatementType.MERGE_INTO: "MERGE INTO",
    duckdb.StatementType.VACUUM: "VACUUM/ANALYZE",
    duckdb.StatementType.TRANSACTION: "transaction (BEGIN/COMMIT/ROLLBACK)",
    duckdb.StatementType.MULTI: "multi-part statement (such as PIVOT without an IN list)",
}

_EXPLAIN_PREFIX = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*"     # leading blanks and comments
    r"explain\b\s*(?:analy[sz]e\b\s*)?"          # EXPLAIN [ANALYZE]
    r"(?:\([^()]*\)\s*)?",                       # optional (FORMAT json) style options
    re.IGNORECASE | re.DOTALL)

_MAX_MESSAGE = 400


class QueryError(Exception):
    """A query that cannot run or failed; the message is one line for a person."""


class QueryTimeout(QueryError):
    """The query ran past storage.query_timeout_s and was interrupted."""


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool
    elapsed_s: float
    # The limit that cut it: "storage.query_max_rows" or "storage.query_max_bytes".
    truncated_by: str | None = None


class QueryEngine:
    """Runs one read statement at a time per call; safe to call from many threads."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_s: float, max_rows: int,
                 max_bytes: int = 16 << 20) -> None:
        if timeout_s <= 0 or max_rows < 1 or max_bytes < 1:
            raise ValueError("timeout_s must be > 0, max_rows and max_bytes >= 1")
        # The statement check alone cannot stop read_csv('/etc/passwd') inside a SELECT:
        # that needs external access off for the whole database, set by its owner at open.
        if _external_access_on(con):
            raise ValueError("the history connection allows external access; open it with "
                             "config={'enable_external_access': False} before serving queries")
        self._con = con
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    def run(self, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
        """Check and run one read statement (``?`` placeholders take ``params``); raises
        QueryError (QueryTimeout) on failure."""
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("no SQL given: pass one SELECT statement")
        started = time.monotonic()
        try:
            cur = self._con.cursor()
        except duckdb.Error as exc:
            raise QueryError(f"the history is not open for queries: {one_line(exc)}") from None
        fired = threading.Event()
        guard = threading.Lock()   # the timer must not interrupt a cursor being closed
        finished = False

        def stop() -> None:
            with guard:
                if not finished:
                    fired.set()
                    cur.interrupt()

        timer = threading.Timer(self.timeout_s, stop)
        timer.daemon = True
        try:
            _check_statement(cur, sql)
            timer.start()
            cur.execute("BEGIN TRANSACTION READ ONLY")
            cur.execute(sql, params) if params else cur.execute(sql)
            description = cur.description or []
            # One row more than the limit tells a truncated result from one that fits,
            # without ever materialising an unbounded result; rows come in batches so that
            # the bytes are counted as they arrive, not after.
            rows, cut_by = self._fetch(cur) if description else ([], None)
        except duckdb.InterruptException:
            if fired.is_set():
                raise QueryTimeout(
                    f"the query was stopped after the time limit of {self.timeout_s:g} s "
                    f"(raise storage.query_timeout_s in the configuration to allow longer)"
                ) from None
            raise QueryError("the query was interrupted (corelane is stopping?)") from None
        except duckdb.Error as exc:
            raise QueryError(_describe_error(exc)) from None
        finally:
            timer.cancel()
            with guard:
                finished = True
            try:
                cur.close()  # also ends the READ ONLY transaction and any unread result
            except duckdb.Error:
                pass
        return QueryResult(
            columns=[str(d[0]) for d in description],
            types=[str(d[1]) for d in description],
            rows=[tuple(r) for r in rows],
            truncated=cut_by is not None,
            elapsed_s=round(time.monotonic() - started, 6),
            truncated_by=cut_by,
        )

    def _fetch(self, cur: duckdb.DuckDBPyConnection) -> tuple[list[tuple], str | None]:
        rows: list[tuple] = []
        size = 0
        while True:
            # One row first, then as many as the bytes left would hold at the average so
            # far: a result of a few huge values is never fetched a thousand at a time.
            fits = (self.max_bytes - size) * len(rows) // size if size else 1
            batch = cur.fetchmany(max(1, min(1024, fits, self.max_rows + 1 - len(rows))))
            if not batch:
                return rows, None
            for row in batch:
                if len(rows) == self.max_rows:
                    return rows, "storage.query_max_rows"
                size += value_bytes(row)
                if size > self.max_bytes:
                    return rows, "storage.query_max_bytes"
                rows.append(row)


def value_bytes(value: Any) -> int:
    """About how many bytes ``value`` takes in an answer (strings and blobs by length)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 2
    if isinstance(value, (list, tuple)):
        return sum(value_bytes(v) for v in value) + 2
    if isinstance(value, dict):
        return sum(value_bytes(k) + value_bytes(v) for k, v in value.items()) + 2
    return 8


def truncation_note(result: QueryResult) -> str:
    """What a person is told when a result was cut."""
    if result.truncated_by == "storage.query_max_bytes":
        return (f"only the first {len(result.rows)} rows were returned: the answer reached "
                f"storage.query_max_bytes; select fewer or narrower columns, or raise it")
    return (f"only the first {len(result.rows)} rows were returned (storage.query_max_rows); "
            f"add a LIMIT or raise it")


# --- checks and messages ---------------------------------------------------------------------

def _external_access_on(con: duckdb.DuckDBPyConnection) -> bool:
    cur = con.cursor()
    try:
        value = cur.execute("SELECT current_setting('enable_external_access')").fetchone()
    finally:
        cur.close()
    return bool(value and value[0])


def _statements(cur: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return cur.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(one_line(exc)) from None
    except ValueError:
        # The parser knows the statement but the Python binding has no name for its type
        # (UPDATE EXTENSIONS, for one): not a read either way.
        raise QueryError("refused: not a read statement; only SELECT-style queries "
                         "can run here") from None


def _check_statement(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    statements = _statements(cur, sql)
    if not statements:
        raise QueryError("no SQL statement given (only comments or blanks?)")
    if len(statements) > 1:
        raise QueryError(f"one statement at a time, got {len(statements)}: "
                         f"remove the extra ';'-separated statements")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        match = _EXPLAIN_PREFIX.match(sql)
        inner = _statements(cur, sql[match.end():]) if match else []
        if len(inner) != 1 or inner[0].type not in READ_TYPES:
            shown = _type_name(inner[0].type) if len(inner) == 1 else "unrecognised statement"
            raise QueryError(f"refused EXPLAIN of a {shown} statement: EXPLAIN is allowed "
                             f"only for a SELECT")
        return
    if kind not in READ_TYPES:
        raise QueryError(f"refused {_type_name(kind)} statement: the history is read-only "
                         f"here, only SELECT-style queries can run")


def _type_name(kind: Any) -> str:
    return _TYPE_NAMES.get(kind, getattr(kind, "name", str(kind)))


def _describe_error(exc: duckdb.Error) -> str:
    message = one_line(exc)
    if "read-only mode" in message:
        return ("refused: this query would write to the history (data-modifying CTE, "
                "nextval, ...); only reads can run here")
    return message


def one_line(exc: BaseException) -> str:
    """DuckDB's message without the caret diagram: its opening lines joined into one."""
    lines: list[str] = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or line.startswith("LINE "):
            if lines:
                break
            continue
        lines.append(line)
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


# --- values and output formats ---------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """A value json.dumps writes as standard JSON.

    Timestamps, dates and times become ISO strings, intervals seconds, decimals numbers
    (a string when a float would lose digits), UUIDs strings, blobs base64, NaN and
    infinities the strings "nan", "inf", "-inf"; lists, structs and maps recurse.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value).lower()
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value.normalize() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return str(value)


def result_to_dict(result: QueryResult) -> dict[str, Any]:
    """The HTTP answer's shape, every value JSON-safe."""
    return {"columns": list(result.columns), "types": list(result.types),
            "rows": [[json_safe(v) for v in row] for row in result.rows],
            "truncated": result.truncated, "truncated_by": result.truncated_by,
            "elapsed_s": result.elapsed_s}


def to_json(result: QueryResult) -> str:
    """One object: columns, rows (lists of JSON-safe values), truncated."""
    return json.dumps({"columns": list(result.columns),
                       "rows": [[json_safe(v) for v in row] for row in result.rows],
                       "truncated": result.truncated}, allow_nan=False)


def _csv_cell(value: Any) -> str:
    # Through json_safe first, so a result read from the file and one that came over HTTP
    # (already JSON-safe) print the same cells.
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=False)
    return str(value)


def to_csv(result: QueryResult) -> str:
    """A header line and one line per row; NULL is an empty cell, nested values JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()


def render_table(result: QueryResult) -> Table:
    """A rich table for people; the caption says how many rows and whether some were cut."""
    count = len(result.rows)
    caption = f"{count} row{'s' if count != 1 else ''} in {result.elapsed_s:.3f} s"
    if result.truncated:
        caption = f"first {count} rows only: more left off ({result.truncated_by})"
    # A caption wraps to the table's width: keep the table wide enough to hold it on a line.
    table = Table(caption=caption, min_width=len(caption) + 2)
    for name, kind in zip(result.columns, result.types):
        numeric = any(t in kind.upper() for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL"))
        table.add_column(name, justify="right" if numeric and "[]" not in kind else "left",
                         overflow="fold")
    for row in result.rows:
        table.add_row(*[_table_cell(v) for v in row])
    return table


def _table_cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    return Text(_csv_cell(value))  # Text, not markup: values may hold '[' and ']'
