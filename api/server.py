"""The HTTP API of a running corelane, under ``/api/v1`` (schema at ``/api/v1/openapi.json``,
docs at ``/api/v1/docs``), its Prometheus metrics at ``/metrics``, and the operator's live
page at ``/`` (``api.page``).

Reads answer from the live view and the history (``api.reads``), commands publish events
(``api.commands``), the stream follows the events as they are read (``api.stream``), and
``api.query`` runs read-only SQL. Every error is JSON with a ``message``: a bad request is
a 4xx that says what was wrong, never a traceback. Request bodies are bounded in size and
in nesting before anything parses them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message as AsgiMessage, Receive, Scope, Send

from api.commands import commands_router
from api.page import page_router
from api.paths import API_PREFIX, HEALTH_PATH, METRICS_PATH, QUERY_PATH
from api.query import query_router
from api.reads import reads_router
from api.replay import replay_router
from api.service import ApiService
from api.stream import stream_router
from pipeline.health import HealthDocument, Reporting, current_stats, health_document
from pipeline.stats import StatsExporter

log = logging.getLogger(__name__)

# Deeper JSON than this is refused before a parser can recurse on it.
MAX_JSON_DEPTH = 64


def metrics_registry(parts: Mapping[str, Reporting]) -> CollectorRegistry:
    """Every part's stats, and this process's own CPU and memory."""
    registry = CollectorRegistry()
    registry.register(StatsExporter(lambda: current_stats(parts, time.time())))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``raw``'s brackets nest (strings skipped), counting no further than
    ``limit + 1``."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:       # backslash
                escaped = True
            elif byte == 0x22:       # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):   # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class BodyGuard:
    """Refuses a request body over ``max_bytes`` (413) or nested deeper than
    MAX_JSON_DEPTH (400) before the application sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, f"the request body is over the {self.max_bytes} "
                                         f"bytes allowed (api.max_body_bytes)")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if json_depth(body) > MAX_JSON_DEPTH:
            await _refuse(send, 400, f"bad request: the body nests deeper than "
                                     f"{MAX_JSON_DEPTH} levels")
            return
        given = False

        async def replay() -> AsgiMessage:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ReadCache:
    """Answers a GET under /api/v1 that was answered with a 200 less than ``ttl_s`` ago
    from memory: the same bytes, without routing, a query or serialising again. Many
    clients polling the same views cost one answer per ``ttl_s``, and requests that arrive
    while that answer is being made wait for it rather than make it again. The stream, the
    query endpoint and anything but a 200 are never kept."""

    def __init__(self, app: ASGIApp, ttl_s: float, max_entries: int = 512,
                 uncached: tuple[str, ...] = (f"{API_PREFIX}/stream", QUERY_PATH)) -> None:
        self.app, self.ttl_s, self.max_entries = app, ttl_s, max_entries
        self.uncached = uncached
        self._kept: OrderedDict[str, tuple[float, list[AsgiMessage]]] = OrderedDict()
        self._making: dict[str, asyncio.Future[list[AsgiMessage] | None]] = {}
        self.hits = self.misses = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "GET" or self.ttl_s <= 0
                or not path.startswith(API_PREFIX) or path in self.uncached):
            await self.app(scope, receive, send)
            return
        key = path + "?" + scope.get("query_string", b"").decode("latin-1")
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and now - kept[0] < self.ttl_s:
            self.hits += 1
            for message in kept[1]:
                await send(message)
            return
        making = self._making.get(key)
        if making is not None:
            made = await asyncio.shield(making)
            if made is not None:
                self.hits += 1
                for message in made:
                    await send(message)
                return
        self.misses += 1
        messages: list[AsgiMessage] = []
        future: asyncio.Future[list[AsgiMessage] | None] = \
            asyncio.get_running_loop().create_future()
        self._making[key] = future

        async def keep(message: AsgiMessage) -> None:
            messages.append(message)
            await send(message)

        good = False
        try:
            await self.app(scope, receive, keep)
            good = bool(messages) and messages[0].get("status") == 200
        finally:
            del self._making[key]
            future.set_result(messages if good else None)
        if good:
            self._kept[key] = (now, messages)
            self._kept.move_to_end(key)
            while len(self._kept) > self.max_entries:
                self._kept.popitem(last=False)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = msgspec.json.encode({"message": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _health_and_metrics(app: FastAPI, host: str, parts: Mapping[str, Reporting],
                        started_at: float, role: str) -> None:
    """``/api/v1/health`` and ``/metrics`` of this process's own parts, and no other's."""
    @app.get(HEALTH_PATH, response_model=HealthDocument)
    async def health() -> HealthDocument:
        """Liveness and readiness: each part's state (ok, degraded, down), the reason, its
        lag (consumer lag of an agent, the recorder's delay) and its stats."""
        now = time.time()
        return health_document(host, now - started_at, parts, now, role=role)

    app.mount(METRICS_PATH, make_asgi_app(registry=metrics_registry(parts)))


def create_part_api(host: str, parts: Mapping[str, Reporting], started_at: float,
                    role: str) -> FastAPI:
    """What an edge or a worker serves: its own health and metrics, nothing else (the
    history and the commands are the recorder's)."""
    app = FastAPI(title=f"corelane {role}", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = (f"a corelane {role} serves {HEALTH_PATH} and {METRICS_PATH} only; the "
                       f"rest of the API is the recorder's")
        return JSONResponse({"message": message}, status_code=exc.status_code)

    _health_and_metrics(app, host, parts, started_at, role)
    return app


def create_api(service: ApiService) -> FastAPI:
    """The API of a running instance (or of a test's ``ApiService``)."""
    app = FastAPI(title="corelane", version="0.1.0", docs_url=f"{API_PREFIX}/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json", redoc_url=None,
                  description="What corelane knows and did, commands as events, and a live "
                              f"stream. Prometheus metrics: [{METRICS_PATH}]({METRICS_PATH}).")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": f"bad request: {describe_errors(exc.errors())}"},
                            status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("the API failed on a request")
        return JSONResponse({"message": f"corelane failed on this request: "
                                        f"{type(exc).__name__}; the log has the details"},
                            status_code=500)

    _health_and_metrics(app, service.host, service.parts, service.started_at, service.role)
    app.include_router(reads_router(service), prefix=API_PREFIX)
    app.include_router(commands_router(service), prefix=API_PREFIX)
    app.include_router(stream_router(service), prefix=API_PREFIX)
    app.include_router(replay_router(service), prefix=API_PREFIX)
    app.include_router(query_router(service.get_engine))
    app.include_router(page_router())
    app.add_middleware(BodyGuard, max_bytes=service.settings.api.max_body_bytes)
    app.add_middleware(ReadCache, ttl_s=service.settings.api.read_cache_s)
    return app


def describe_errors(errors: Any) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
