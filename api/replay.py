"""``POST /api/v1/replay``: a replay run by the instance that owns the history.

The window is streamed from the history inside this process (the query endpoint's row
limits do not apply), in a worker thread, one replay at a time. It needs the bearer token:
a replay costs CPU, and its policies are configuration files.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from agents.replay.run import ReplayError, replay, request_from
from api.auth import token_dependency
from api.models import Message, ReplayBody
from api.service import ApiService

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "a window or a policy that cannot be replayed"},
    401: {"model": Message, "description": "no bearer token, or the wrong one"},
    429: {"model": Message, "description": "another replay is running"},
    503: {"model": Message, "description": "this instance has no history open"},
}


def replay_router(service: ApiService) -> APIRouter:
    router = APIRouter(responses=ERRORS, dependencies=[Depends(token_dependency(service.token))])
    running = asyncio.Lock()

    @router.post("/replay", response_model=dict[str, Any])
    async def replay_window(body: ReplayBody) -> dict[str, Any]:
        """Replay a window of a host's history under the recorded configuration (is it
        reproduced?), another policy, two policies, or a shadow policy's recorded
        decisions; answers the report."""
        if service.history_cursor is None:
            raise HTTPException(503, "this instance has no history open")
        try:
            request = request_from(
                body.t_from, body.t_to, host=body.host,
                policy=(body.policy.name, body.policy.yaml) if body.policy else None,
                against=(body.against.name, body.against.yaml) if body.against else None,
                fresh_model=body.fresh_model, shadow=body.shadow)
        except ReplayError as exc:
            raise HTTPException(400, str(exc)) from None
        if running.locked():
            raise HTTPException(429, "another replay is running on this instance; try again "
                                     "when it has ended")
        async with running:
            try:
                return await asyncio.to_thread(replay, service.history_cursor,
                                               service.settings, request, time.time())
            except ReplayError as exc:
                raise HTTPException(400, str(exc)) from None

    return router
