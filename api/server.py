"""The HTTP API of a running corelane: health and metrics; query and commands build on it.

Every error is JSON with a ``message``: a bad request is a 4xx that says what was wrong,
never a traceback.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.paths import API_PREFIX, HEALTH_PATH, METRICS_PATH
from api.query import query_router
from pipeline.health import HealthDocument, Reporting, health_document
from pipeline.stats import StatsExporter
from storage.query import QueryEngine


def metrics_registry(parts: Mapping[str, Reporting]) -> CollectorRegistry:
    """Every part's stats, and this process's own CPU and memory."""
    registry = CollectorRegistry()
    registry.register(StatsExporter(lambda: {name: p.stats for name, p in parts.items()}))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def create_api(host: str, parts: Mapping[str, Reporting],
               get_engine: Callable[[], QueryEngine | None] | None = None,
               started_at: float | None = None) -> FastAPI:
    """The API of a running instance; ``parts`` are read live by /health and /metrics."""
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

    @app.get(HEALTH_PATH, response_model=HealthDocument)
    async def health() -> HealthDocument:
        """Each part's state (ok, degraded, down), the reason and its lag, and its stats."""
        now = time.time()
        return health_document(host, now - started, parts, now)

    if get_engine is not None:
        app.include_router(query_router(get_engine))

    app.mount(METRICS_PATH, make_asgi_app(registry=metrics_registry(parts)))
    return app
