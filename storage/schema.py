"""The history database's tables: one per topic, rollups, the recorder's offsets.

Every event table starts with ``event_id, host, ts, seq`` (``ts`` is a UTC ``TIMESTAMP``
made from the envelope's float seconds); the tables of batched events add ``batch, chunk,
chunks``. The columns after that are the payload's fields, typed, one row per item of the
batch (an empty chunk is still one row, its item columns NULL). Free-form dicts are JSON.

``SCHEMA_VERSION`` is stored in ``schema_version``; a later change adds a step to
``MIGRATIONS`` so an existing file is brought forward when it is opened.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 1

_EVENT = "event_id VARCHAR NOT NULL, host VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, seq BIGINT"
_BATCH = "batch VARCHAR, chunk INTEGER, chunks INTEGER"

# table -> column definitions (in order). rows.py builds Arrow tables with the same names.
TABLES: dict[str, str] = {
    "host_samples": f"""{_EVENT},
        cpu_percent DOUBLE[], cpu_freq_khz DOUBLE[],
        load1 DOUBLE, load5 DOUBLE, load15 DOUBLE,
        mem_total_bytes BIGINT, mem_available_bytes BIGINT, swap_used_bytes BIGINT,
        temperatures_c MAP(VARCHAR, DOUBLE), boot_time DOUBLE, interval_s DOUBLE""",
    "process_samples": f"""{_EVENT}, {_BATCH}, interval_s DOUBLE,
        pid INTEGER, start_time BIGINT, ppid INTEGER, name VARCHAR, state VARCHAR,
        cmdline VARCHAR, uid BIGINT, cgroup VARCHAR, container_id VARCHAR,
        cpu_share DOUBLE, cpu_time_s DOUBLE, rss_bytes BIGINT, vm_bytes BIGINT,
        threads INTEGER, vol_ctx BIGINT, invol_ctx BIGINT,
        run_time_ns BIGINT, run_delay_ns BIGINT, timeslices BIGINT,
        io_read_bytes BIGINT, io_write_bytes BIGINT, io_rchar BIGINT, io_wchar BIGINT,
        last_cpu INTEGER, nice INTEGER, policy INTEGER, rt_priority INTEGER,
        affinity VARCHAR, kernel_thread BOOLEAN""",
    "container_samples": f"""{_EVENT}, {_BATCH}, interval_s DOUBLE,
        container_id VARCHAR, name VARCHAR, image VARCHAR, status VARCHAR,
        labels MAP(VARCHAR, VARCHAR), pids INTEGER[], cpuset VARCHAR, cpu_shares INTEGER,
        cpu_share DOUBLE, memory_bytes BIGINT""",
    "labels": f"""{_EVENT},
        class VARCHAR, pid INTEGER, start_time BIGINT, match VARCHAR, author VARCHAR""",
    "classifications": f"""{_EVENT}, {_BATCH},
        pid INTEGER, start_time BIGINT, class VARCHAR, tier VARCHAR, confidence DOUBLE,
        source VARCHAR, reason VARCHAR""",
    "decisions": f"""{_EVENT}, {_BATCH}, plan_seq BIGINT, mode VARCHAR,
        target VARCHAR, tier VARCHAR, cpus VARCHAR, pid INTEGER, start_time BIGINT,
        container_id VARCHAR, nice INTEGER, ioclass VARCHAR, iolevel INTEGER,
        policy VARCHAR, cpu_shares INTEGER, reason VARCHAR""",
    "enforcements": f"""{_EVENT}, {_BATCH}, plan_seq BIGINT,
        target VARCHAR, outcome VARCHAR, pid INTEGER, start_time BIGINT,
        container_id VARCHAR, reason VARCHAR, "before" JSON, "after" JSON""",
    "alerts": f"""{_EVENT},
        kind VARCHAR, message VARCHAR, severity VARCHAR, details JSON""",
    "commands": f"""{_EVENT},
        name VARCHAR, args JSON""",
    # topic/partition/offset say where the unreadable message sat; "offset" needs quotes.
    "deadletter": f"""{_EVENT},
        topic VARCHAR, "partition" INTEGER, "offset" BIGINT, reason VARCHAR,
        "key" VARCHAR, payload VARCHAR""",
}

# event type -> table
TABLE_OF_TYPE: dict[str, str] = {
    "host_sample": "host_samples",
    "process_samples": "process_samples",
    "container_samples": "container_samples",
    "label": "labels",
    "classifications": "classifications",
    "decisions": "decisions",
    "enforcements": "enforcements",
    "alert": "alerts",
    "command": "commands",
    "deadletter": "deadletter",
}

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

# version reached -> statements that take a file from the version before to it.
MIGRATIONS: dict[int, list[str]] = {}


class SchemaError(Exception):
    """A database whose schema this code cannot use; the message is meant for a person."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # TIMESTAMP columns hold UTC


def _create_statements() -> list[str]:
    tables = {**TABLES, **ROLLUP_TABLES, **BOOKKEEPING}
    return [f"CREATE TABLE IF NOT EXISTS {name} ({cols})" for name, cols in tables.items()]


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
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS.get(target, []):
                    con.execute(stmt)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [target, _utcnow()])
            # tables added without a version bump (e.g. a new rollup) appear here
            for stmt in _create_statements():
                con.execute(stmt)
        for stmt in VIEW_STATEMENTS:
            con.execute(stmt)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
