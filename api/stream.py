"""`GET /api/v1/stream`: events as they happen, as server-sent events.

Each event is ``id: <event id>``, ``event: <type>`` and ``data: <the envelope as JSON>``.
A client that falls behind loses its backlog (``api.stream_backlog`` events) and is told
with an ``event: dropped`` whose data says how many; corelane never waits for a client. A
comment line every few seconds keeps proxies from closing a quiet stream.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from api.models import Message
from api.service import ApiService
from pipeline.events import EVENT_TYPES, encode

DEFAULT_TYPES = ("classifications", "decisions", "enforcements", "alert")
KEEPALIVE_S = 10.0


def sse(event_id: str, kind: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def stream_router(service: ApiService) -> APIRouter:
    router = APIRouter()

    @router.get("/stream", response_class=StreamingResponse, responses={
        200: {"description": "server-sent events",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        400: {"model": Message, "description": "an unknown event type"}})
    async def stream(types: str | None = Query(
                         None, max_length=1000,
                         description=f"comma-separated event types (default: "
                                     f"{','.join(DEFAULT_TYPES)}); any of "
                                     f"{', '.join(EVENT_TYPES)}"),
                     host: str | None = Query(None, max_length=255),
                     seconds: float | None = Query(None, gt=0, le=86400,
                                                   description="end the stream after this "
                                                               "long (default: never)")
                     ) -> StreamingResponse:
        """Classifications, decisions, enforcements and alerts (or the types asked for) as
        they happen, filtered by type and host."""
        wanted = [t.strip() for t in types.split(",") if t.strip()] if types else \
            list(DEFAULT_TYPES)
        unknown = [t for t in wanted if t not in EVENT_TYPES]
        if unknown or not wanted:
            raise HTTPException(400, f"unknown event type {', '.join(unknown) or '(none)'}: "
                                     f"choose from {', '.join(EVENT_TYPES)}")
        follower = service.hub.follow(wanted, [host] if host else None,
                                      service.settings.api.stream_backlog)
        ends = time.monotonic() + seconds if seconds else None

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": corelane stream\n\n"
                while ends is None or time.monotonic() < ends:
                    wait = KEEPALIVE_S if ends is None else max(
                        0.0, min(KEEPALIVE_S, ends - time.monotonic()))
                    dropped, event = await follower.take(wait)
                    if dropped:
                        yield sse("", "dropped", msgspec.json.encode(
                            {"dropped": dropped, "message": f"this client fell behind: "
                                                            f"{dropped} events dropped"}).decode())
                    if event is None:
                        yield b": keepalive\n\n"
                        continue
                    yield sse(event.id, event.type, encode(event).decode())
            finally:
                service.hub.leave(follower)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    return router
