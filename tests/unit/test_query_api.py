"""`/api/v1/query` over a real DuckDB file: answers, refusals and errors as JSON for people."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import duckdb
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.query import query_router
from support.api_world import bare_api
from storage.query import QueryEngine

SLOW_SQL = "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b"


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(tmp_path / "corelane.duckdb"),
                         config={"enable_external_access": False})
    con.execute("""
        CREATE TABLE enforcements (event_id VARCHAR, host VARCHAR, ts TIMESTAMP, pid INTEGER,
                                   status VARCHAR, cpus INTEGER[], weight DECIMAL(8,3));
        INSERT INTO enforcements VALUES
          ('e1', 'h1', TIMESTAMP '2025-11-27 08:00:00', 10, 'applied', [2, 3], 1.5),
          ('e1', 'h1', TIMESTAMP '2025-11-27 08:00:00', 11, 'skipped', NULL, NULL);
    """)
    yield con
    con.close()


@pytest.fixture
def engine(owner: duckdb.DuckDBPyConnection) -> QueryEngine:
    return QueryEngine(owner, timeout_s=5.0, max_rows=1)


@pytest.fixture
def api(engine: QueryEngine) -> TestClient:
    """The router on the real application, with its error handlers."""
    app = bare_api(get_engine=lambda: engine)
    return TestClient(app, raise_server_exceptions=False)


def test_post_answers_columns_types_rows_truncated(api: TestClient) -> None:
    response = api.post("/api/v1/query", json={"sql": "SELECT pid, ts, status, cpus, weight "
                                                      "FROM enforcements ORDER BY pid"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"columns", "types", "rows", "truncated", "truncated_by", "elapsed_s"}
    assert body["columns"] == ["pid", "ts", "status", "cpus", "weight"]
    assert body["types"] == ["INTEGER", "TIMESTAMP", "VARCHAR", "INTEGER[]", "DECIMAL(8,3)"]
    assert body["rows"] == [[10, "2025-11-27T08:00:00", "applied", [2, 3], 1.5]]
    assert body["truncated"] is True  # max_rows is 1 and there are 2 rows
    assert body["truncated_by"] == "storage.query_max_rows"
    assert isinstance(body["elapsed_s"], float) and body["elapsed_s"] >= 0


def test_get_with_sql_in_the_query_string(api: TestClient) -> None:
    response = api.get("/api/v1/query", params={"sql": "SELECT count(*) AS n FROM enforcements"})
    assert response.status_code == 200
    assert response.json()["rows"] == [[2]] and response.json()["truncated"] is False


@pytest.mark.parametrize("sql, expected", [
    ("DROP TABLE enforcements", "refused DROP"),
    ("INSERT INTO enforcements (pid) VALUES (1)", "refused INSERT"),
    ("SELECT 1; SELECT 2", "one statement at a time"),
    ("SELECT * FROM nowhere", "Catalog Error"),
    ("SELECT FROM WHERE", "Parser Error"),
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
])
def test_refused_or_bad_sql_is_400_with_a_message(api: TestClient, sql: str,
                                                  expected: str) -> None:
    response = api.post("/api/v1/query", json={"sql": sql})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"message"} and expected in body["message"]
    assert "Traceback" not in body["message"] and "\n" not in body["message"]
    assert api.get("/api/v1/query", params={"sql": "SELECT count(*) FROM enforcements"}
                   ).json()["rows"] == [[2]]


@pytest.mark.parametrize("request_kw", [
    {"json": {}},
    {"json": {"sql": ""}},
    {"json": {"sql": "   "}},
    {"json": {"sql": 42}},
    {"json": ["SELECT 1"]},
    {"content": b"SELECT 1", "headers": {"content-type": "application/json"}},
    {},
])
def test_missing_or_malformed_sql_is_400(api: TestClient, request_kw: dict) -> None:
    response = api.post("/api/v1/query", **request_kw)
    assert response.status_code == 400
    assert "sql" in response.json()["message"] or "JSON" in response.json()["message"]


def test_get_without_sql_is_400(api: TestClient) -> None:
    response = api.get("/api/v1/query")
    assert response.status_code == 400 and "sql" in response.json()["message"]


def test_no_engine_is_503(owner: duckdb.DuckDBPyConnection) -> None:
    app = bare_api(get_engine=lambda: None)
    response = TestClient(app).post("/api/v1/query", json={"sql": "SELECT 1"})
    assert response.status_code == 503
    assert "not open" in response.json()["message"]


def test_timeout_is_408_with_how_to_change_it(owner: duckdb.DuckDBPyConnection) -> None:
    app = FastAPI()  # a bare app: the router writes its own error bodies
    app.include_router(query_router(lambda: QueryEngine(owner, timeout_s=0.5, max_rows=5)))
    started = time.monotonic()
    response = TestClient(app).post("/api/v1/query", json={"sql": SLOW_SQL})
    assert time.monotonic() - started < 3
    assert response.status_code == 408
    assert "storage.query_timeout_s" in response.json()["message"]


def test_bare_app_errors_are_also_message_json(engine: QueryEngine) -> None:
    app = FastAPI()
    app.include_router(query_router(lambda: engine))
    client = TestClient(app)
    assert client.post("/api/v1/query", json={"sql": "DELETE FROM enforcements"}).json() == {
        "message": "refused DELETE statement: the history is read-only here, only "
                   "SELECT-style queries can run"}
    assert client.post("/api/v1/query", json={}).status_code == 400


def test_an_unexpected_failure_is_not_a_500(owner: duckdb.DuckDBPyConnection) -> None:
    class Broken:
        def run(self, sql: str) -> None:
            raise RuntimeError("disk on fire\nwith a second line")

    app = FastAPI()
    app.include_router(query_router(lambda: Broken()))  # type: ignore[arg-type, return-value]
    response = TestClient(app, raise_server_exceptions=False).post(
        "/api/v1/query", json={"sql": "SELECT 1"})
    assert response.status_code == 400
    assert response.json()["message"] == ("the query failed unexpectedly: RuntimeError "
                                          "disk on fire")


def test_a_slow_query_does_not_block_the_event_loop(owner: duckdb.DuckDBPyConnection) -> None:
    app = bare_api(get_engine=lambda: QueryEngine(owner, timeout_s=2.0, max_rows=5))
    with TestClient(app) as client:
        slow: list[int] = []
        thread = threading.Thread(target=lambda: slow.append(
            client.post("/api/v1/query", json={"sql": SLOW_SQL}).status_code))
        thread.start()
        time.sleep(0.3)  # the slow query is running
        started = time.monotonic()
        assert client.get("/api/v1/health").status_code == 200
        assert time.monotonic() - started < 1.0
        thread.join(10)
    assert slow == [408]


def test_a_huge_result_is_cut_by_bytes_and_says_so(owner: duckdb.DuckDBPyConnection) -> None:
    app = bare_api(get_engine=lambda: QueryEngine(owner, timeout_s=30.0, max_rows=100,
                                                  max_bytes=16 << 20))
    response = TestClient(app).post("/api/v1/query", json={
        "sql": "SELECT repeat('x', 5000000) AS big FROM range(10)"})
    assert response.status_code == 200
    body = response.json()
    assert len(response.content) < 17 << 20
    assert body["truncated"] and body["truncated_by"] == "storage.query_max_bytes"
    assert len(body["rows"]) == 3
