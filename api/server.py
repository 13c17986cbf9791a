"""The HTTP API of a running corelane: health now; query and commands build on it.

Every error is JSON with a ``message``: a bad request is a 4xx that says what was wrong,
never a traceback.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.query import query_router
from pipeline.collect import CollectorStats
from storage.query import QueryEngine

API_PREFIX = "/api/v1"


# Health turns "degraded" when nothing was swept or published for this long.
STALE_AFTER_S = 30.0


def create_api(host: str, kafka_bootstrap: str, collector_stats: CollectorStats,
               recorder_stats: Any | None = None,
               agent_stats: dict[str, dict[str, int]] | None = None,
               get_engine: Callable[[], QueryEngine | None] | None = None,
               started_at: float | None = None) -> FastAPI:
    """The API of a running instance; each part's stats object is read live by /health."""
    app = FastAPI(title="corelane", version="0.1.0", docs_url=f"{API_PREFIX}/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json")
    started = started_at or time.time()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse({"message": f"bad request: {problems}"}, status_code=400)

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, Any]:
        now = time.time()
        swept = _recent(collector_stats.last_sweep_ts, now)
        published = _recent(collector_stats.last_emit_ts, now)
        return {
            "status": "ok" if swept and published else "degraded",
            "host": host,
            "uptime_s": round(now - started, 3),
            "kafka": {"bootstrap": kafka_bootstrap, "publishing": published,
                      "last_publish_ts": collector_stats.last_emit_ts},
            "collector": asdict(collector_stats),
            "recorder": asdict(recorder_stats) if recorder_stats is not None else None,
            **(agent_stats or {}),
        }

    if get_engine is not None:
        app.include_router(query_router(get_engine))

    app.mount("/metrics", make_asgi_app())
    return app


def _recent(ts: float | None, now: float) -> bool:
    return ts is not None and now - ts < STALE_AFTER_S
