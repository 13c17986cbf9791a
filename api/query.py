"""`/api/v1/query`: read-only SQL over the history of the running instance.

POST a JSON body ``{"sql": "..."}`` (or GET ``?sql=...``). The answer is
``{"columns", "types", "rows", "truncated", "truncated_by", "elapsed_s"}`` with JSON-safe
values; ``truncated_by`` names the limit that cut the rows (storage.query_max_rows or
storage.query_max_bytes).
Errors are ``{"message": ...}``: 400 for SQL that is refused, invalid or fails, 408 when the
query ran past storage.query_timeout_s, 503 while the history is not open. The router
writes its own error bodies, so it answers the same way on any FastAPI app.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pydantic import BaseModel

from api.paths import QUERY_PATH
from storage.query import QueryEngine, QueryError, QueryTimeout, result_to_dict

MAX_SQL_CHARS = 100_000


class QueryAnswer(BaseModel):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    truncated_by: str | None = None
    elapsed_s: float


class QueryFailure(BaseModel):
    message: str


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": QueryAnswer, "description": "the result"},
    400: {"model": QueryFailure, "description": "SQL refused, invalid or failed"},
    408: {"model": QueryFailure, "description": "the query ran past the time limit"},
    503: {"model": QueryFailure, "description": "the history is not open"},
}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["sql"],
    "properties": {"sql": {"type": "string", "maxLength": MAX_SQL_CHARS}}}}}}}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def query_router(get_engine: Callable[[], QueryEngine | None]) -> APIRouter:
    """The query endpoint; ``get_engine`` returns None while the history is not open."""
    router = APIRouter()

    async def answer(sql: Any) -> JSONResponse:
        if not isinstance(sql, str) or not sql.strip():
            return _error(400, "bad request: give one SQL statement as 'sql' "
                               "(JSON body {\"sql\": \"SELECT ...\"} or ?sql=...)")
        if len(sql) > MAX_SQL_CHARS:
            return _error(400, f"bad request: the SQL is {len(sql)} characters long, "
                               f"more than the {MAX_SQL_CHARS} allowed")
        engine = get_engine()
        if engine is None:
            return _error(503, "the history is not open yet (corelane is starting or its "
                               "storage is off); try again shortly")
        try:
            # DuckDB blocks while it works: a worker thread keeps the event loop serving.
            result = await run_in_threadpool(engine.run, sql)
            return JSONResponse(result_to_dict(result))
        except QueryTimeout as exc:
            return _error(408, str(exc))
        except QueryError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # never a traceback to the caller
            first = str(exc).splitlines()[0] if str(exc) else ""
            return _error(400, f"the query failed unexpectedly: {type(exc).__name__} {first}"
                          .rstrip())

    @router.post(QUERY_PATH, responses=_RESPONSES, openapi_extra=_BODY)
    async def query_post(request: Request) -> JSONResponse:
        """Run one read-only SQL statement over the history."""
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            return _error(400, "bad request: the body is not valid JSON; send {\"sql\": \"...\"}")
        if not isinstance(payload, dict):
            return _error(400, "bad request: send a JSON object such as {\"sql\": \"SELECT 1\"}")
        return await answer(payload.get("sql"))

    @router.get(QUERY_PATH, responses=_RESPONSES, openapi_extra={"parameters": [
        {"name": "sql", "in": "query", "required": True,
         "schema": {"type": "string", "maxLength": MAX_SQL_CHARS}}]})
    async def query_get(request: Request) -> JSONResponse:
        """The same as POST, with the SQL in ``?sql=``."""
        return await answer(request.query_params.get("sql"))

    return router
