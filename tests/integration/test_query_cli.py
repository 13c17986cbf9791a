"""`corelane query` as a user runs it: from the file when nothing runs, else over HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import duckdb
import httpx
import pytest

from api.client import query_running_instance
from storage.history import HistoryStore, StoreError
from storage.query import QueryError
from support.ports import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import sys
    import duckdb, uvicorn
    from api.server import create_api
    from api.service import ApiService
    from pipeline.bus import Publisher
    from pipeline.settings import load_settings
    from pipeline.topology import read_topology
    from storage.query import QueryEngine

    db, port = sys.argv[1], int(sys.argv[2])
    # Held read-write for as long as this process runs, as a running corelane holds it.
    con = duckdb.connect(db, config={"enable_external_access": False})
    engine = QueryEngine(con, timeout_s=5.0, max_rows=100)
    settings = load_settings(env={})
    # A real publisher, never started: this server only answers queries.
    app = create_api(ApiService(settings=settings, parts={}, topology=read_topology("/"),
                                publish=Publisher(settings).publish,
                                get_engine=lambda: engine))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
""")

EXPECTED_CSV = ("pid,host,ts,class,cores\n"
                "10,h1,2025-11-27T08:00:00,latency,\"[0, 1]\"\n"
                "11,h1,2025-11-27T08:00:02.250000,,[]\n")
SQL = ("SELECT pid, host, ts, class, CASE pid WHEN 10 THEN [0, 1] ELSE []::INTEGER[] END "
       "AS cores FROM classifications ORDER BY pid")



def make_history(path: Path) -> None:
    HistoryStore(path).close()   # a history file as corelane makes it
    con = duckdb.connect(str(path))
    con.execute("""
        INSERT INTO classifications (event_id, host, ts, pid, start_time, class, tier) VALUES
          ('e1', 'h1', TIMESTAMP '2025-11-27 08:00:00', 10, 111, 'latency', 'critical'),
          ('e2', 'h1', TIMESTAMP '2025-11-27 08:00:02.25', 11, 222, NULL, 'low');
    """)
    con.close()


def query(*args: str, db: Path, api: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORELANE_DB": str(db), "CORELANE_API": api,
           "CORELANE_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("CORELANE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "corelane", "query", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def one_line(stderr: str) -> str:
    # The error console wraps long lines at the terminal width; the message is one line.
    return " ".join(stderr.split())


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "corelane.duckdb"
    make_history(path)
    return path


@pytest.fixture
def nobody() -> str:
    """An API address nothing listens on: no running instance."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def server(history: Path, tmp_path: Path) -> Iterator[str]:
    """A process that holds the history and serves /api/v1/query on 127.0.0.1."""
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(SERVER)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, str(script), str(history), str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2,
                             trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the query server did not start in 60 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


# --- nothing runs: straight from the file -----------------------------------------------------

def test_csv_from_the_file_is_exactly_header_and_rows(history: Path, nobody: str,
                                                      tmp_path: Path) -> None:
    done = query(SQL, "--format", "csv", db=history, api=nobody, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED_CSV
    assert done.stderr == ""


def test_json_and_table_from_the_file(history: Path, nobody: str, tmp_path: Path) -> None:
    done = query(SQL, "-f", "json", db=history, api=nobody, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "columns": ["pid", "host", "ts", "class", "cores"],
        "rows": [[10, "h1", "2025-11-27T08:00:00", "latency", [0, 1]],
                 [11, "h1", "2025-11-27T08:00:02.250000", None, []]],
        "truncated": False}
    table = query(SQL, db=history, api=nobody, tmp=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "latency" in table.stdout and "NULL" in table.stdout and "2 rows in" in table.stdout


def test_errors_are_one_line_on_stderr_and_exit_1(history: Path, nobody: str,
                                                  tmp_path: Path) -> None:
    refused = query("DELETE FROM classifications", "-f", "csv", db=history, api=nobody,
                    tmp=tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "refused DELETE statement" in one_line(refused.stderr)
    assert "Traceback" not in refused.stderr

    bad = query("SELECT [1][2", "-f", "csv", db=history, api=nobody, tmp=tmp_path)
    assert bad.returncode == 1 and bad.stdout == "" and "Parser Error" in bad.stderr

    leak = query("SELECT * FROM read_text('/etc/passwd')", "-f", "csv", db=history, api=nobody,
                 tmp=tmp_path)
    assert leak.returncode == 1 and "root:" not in leak.stdout + leak.stderr

    missing = tmp_path / "never.duckdb"
    none = query("SELECT 1", db=missing, api=nobody, tmp=tmp_path)
    assert none.returncode == 1 and none.stdout == ""
    assert f"no history at {missing} yet" in one_line(none.stderr)
    assert "corelane up" in one_line(none.stderr) and not missing.exists()


def test_an_unknown_format_is_a_usage_error(history: Path, nobody: str, tmp_path: Path) -> None:
    done = query("SELECT 1", "--format", "xml", db=history, api=nobody, tmp=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "table, csv, json" in one_line(done.stderr)


# --- a running instance holds the file: through its HTTP API -----------------------------------

def test_through_the_running_instance(server: str, history: Path, tmp_path: Path) -> None:
    # The file is locked by the server process, so only the HTTP path can answer.
    with pytest.raises(StoreError, match="in use by another process"):
        HistoryStore.open_readonly(history)

    done = query(SQL, "--format", "csv", db=history, api=server, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED_CSV and done.stderr == ""

    as_json = query("SELECT count(*) AS n, max(ts) AS newest FROM classifications", "-f", "json",
                    db=history, api=server, tmp=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"columns": ["n", "newest"],
                                          "rows": [[2, "2025-11-27T08:00:02.250000"]],
                                          "truncated": False}


def test_the_running_instance_answers_even_without_the_file_path(
        server: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-here.duckdb"
    done = query("SELECT count(*) AS n FROM classifications", "-f", "csv", db=elsewhere,
                 api=server, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "n\n2\n"


def test_the_running_instance_refusal_reaches_the_user(server: str, history: Path,
                                                       tmp_path: Path) -> None:
    done = query("DROP TABLE classifications", "-f", "csv", db=history, api=server, tmp=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "refused DROP statement" in one_line(done.stderr)
    again = query("SELECT count(*) AS n FROM classifications", "-f", "csv", db=history,
                  api=server, tmp=tmp_path)
    assert again.stdout == "n\n2\n"


def test_client_tells_no_instance_from_an_error(server: str, nobody: str) -> None:
    assert query_running_instance(nobody, "SELECT 1", 5.0) is None
    result = query_running_instance(server, "SELECT 1 AS one, [2] AS two", 5.0)
    assert result is not None
    assert (result.columns, result.types, result.rows) == (["one", "two"],
                                                           ["INTEGER", "INTEGER[]"],
                                                           [(1, [2])])
    with pytest.raises(QueryError, match="refused UPDATE statement"):
        query_running_instance(server, "UPDATE classifications SET tier = 'low'", 5.0)
    port = server.rpartition(":")[2]
    with pytest.raises(QueryError, match="Not Found"):
        # Something answers, but not a query endpoint: an error, not "no instance".
        query_running_instance(f"127.0.0.1:{port}/nothing", "SELECT 1", 5.0)
