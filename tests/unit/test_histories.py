"""Several history files read as one: what recorders that each own some hosts wrote."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipeline.events import (Classification, Classifications, ProcessSample, ProcessSamples,
                             envelope)
from pipeline.settings import StorageSettings
from storage.histories import open_histories
from storage.history import HistoryStore, StoreError

T = 1_764_230_400.0  # 2025-11-27 08:00:00 UTC


def sweep(host: str, pid: int, cpu_s: float, ts: float, seq: int):
    return envelope(ProcessSamples(batch=f"{host}-{seq}", interval_s=1.0, samples=[
        ProcessSample(pid=pid, start_time=77, ppid=1, name=f"work-{host}", state="R",
                      cmdline="work", uid=0, cgroup="/", cpu_share=1.0, cpu_time_s=cpu_s,
                      rss_bytes=1, vm_bytes=1, threads=1, vol_ctx=1, invol_ctx=1,
                      run_time_ns=1, run_delay_ns=seq * 10**6, timeslices=1)]),
        host, seq, ts=ts)


def write_host(path: Path, host: str, pid: int, cpu_per_s: float, partition: int) -> None:
    """Ten sweeps and a classification of one host, as its own recorder writes them."""
    with HistoryStore(path, StorageSettings()) as store:
        records = [("corelane.samples.process", partition, i,
                    sweep(host, pid, cpu_per_s * i, T + i, i + 1)) for i in range(10)]
        records.append(("corelane.classifications", partition, 0, envelope(
            Classifications(batch="c", items=[Classification(
                pid=pid, start_time=77, cls="compute_batch", tier="low", confidence=0.9,
                source="rule")]), host, 1, ts=T)))
        store.write(records)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "part-0.duckdb", tmp_path / "part-1.duckdb"
    write_host(a, "web-1", 100, 0.5, partition=0)
    write_host(b, "db-1", 200, 2.0, partition=1)
    return [a, b]


def test_every_table_is_the_union_of_the_files(files: list[Path]) -> None:
    con = open_histories(files)
    by_host = dict(con.execute("SELECT host, count(*) FROM process_samples GROUP BY host")
                   .fetchall())
    assert by_host == {"web-1": 10, "db-1": 10}
    offsets = con.execute('SELECT topic, "partition", next_offset FROM recorder_offsets '
                          'ORDER BY "partition", topic').fetchall()
    assert ("corelane.samples.process", 0, 10) in offsets
    assert ("corelane.samples.process", 1, 10) in offsets


def test_the_history_macros_run_over_every_file(files: list[Path]) -> None:
    con = open_histories(files)
    top = con.execute("SELECT host, pid, tier, round(cpu_s, 3) FROM top_processes_by_cpu("
                      "TIMESTAMP '2025-11-27 07:00', TIMESTAMP '2025-11-27 09:00', 5)").fetchall()
    assert top == [("db-1", 200, "low", 18.0), ("web-1", 100, "low", 4.5)]


def test_reading_many_files_refuses_files_and_writes(files: list[Path], tmp_path: Path) -> None:
    con = open_histories(files)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("ATTACH '" + str(tmp_path / "x.duckdb") + "' AS x")
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO history_0.main.labels BY NAME SELECT 'x' AS host").fetchall()


def test_a_missing_or_foreign_file_is_named(files: list[Path], tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nope.duckdb"):
        open_histories([files[0], tmp_path / "nope.duckdb"])
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(StoreError, match="other.duckdb: holds no corelane history"):
        open_histories([files[0], other])
