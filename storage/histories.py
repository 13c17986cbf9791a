"""Several history files read as one: a fleet's history past what one writer takes.

DuckDB lets one process write a file, so one recorder is as far as one file goes. Past it,
recorders each own a range of partitions (a host's events share one partition, so each
recorder owns whole hosts) and write a file of their own. Reading them together needs no
copy: an in-memory DuckDB attaches every file read-only, each table becomes a view of that
table in all of them (``UNION ALL BY NAME``: a file written before a column existed reads
NULL there), and the views and macros of ``storage.views`` are created over those views,
so every query written for one file runs unchanged over many.

A file can be read here only while no recorder holds it (DuckDB refuses a second process,
even a reader): closed files, or a recorder's closed segments.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from storage.history import StoreError, _explain, connection_config
from storage.status import sql_text


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_histories(paths: Sequence[Path | str],
                   memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """One read-only connection over every history file in ``paths``: each corelane table
    is the union of that table in all of them, with the history's views and macros on top.
    File and network access are off once the files are attached."""
    from storage.views import VIEW_STATEMENTS

    files = [Path(p).expanduser() for p in paths]
    if not files:
        raise StoreError("no history files to read")
    for path in files:
        if not path.is_file():
            raise StoreError(f"no history at {path} (it does not exist or is not a file)")
    # external access until the files are attached; it is turned off below
    con = duckdb.connect(":memory:", config=connection_config(memory_limit,
                                                              external_access=True))
    try:
        aliases = []
        for i, path in enumerate(files):
            alias = f"history_{i}"
            try:
                con.execute(f"ATTACH {sql_text(str(path))} AS {alias} (READ_ONLY)")
            except duckdb.Error as exc:
                raise _explain(path, exc) from None
            aliases.append(alias)
        tables: dict[str, list[str]] = {}
        for database, table in con.execute(
                "SELECT database_name, table_name FROM duckdb_tables() "
                "WHERE schema_name = 'main' ORDER BY table_name").fetchall():
            if database in aliases:
                tables.setdefault(table, []).append(database)
        if "schema_version" not in tables or len(tables["schema_version"]) != len(files):
            having = set(tables.get("schema_version", []))
            bad = [str(f) for f, a in zip(files, aliases) if a not in having]
            raise StoreError(f"{', '.join(bad)}: holds no corelane history")
        for table, databases in tables.items():
            union = " UNION ALL BY NAME ".join(
                f"SELECT * FROM {db}.main.{_quote(table)}" for db in databases)
            con.execute(f"CREATE VIEW main.{_quote(table)} AS {union}")
        for statement in VIEW_STATEMENTS:
            con.execute(statement)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con

