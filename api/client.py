"""Talking to a running corelane over its HTTP API (CORELANE_API)."""
from __future__ import annotations

from typing import Any

import httpx

from storage.query import QueryError, QueryResult

QUERY_PATH = "/api/v1/query"
CONNECT_TIMEOUT_S = 2.0


def query_running_instance(api_listen: str, sql: str, timeout_s: float) -> QueryResult | None:
    """Run ``sql`` on the instance at ``api_listen`` (host:port).

    Returns None when nothing listens there (no running instance); raises QueryError with
    the server's message when it answers with an error or something that is not corelane.
    """
    url = f"http://{api_listen}{QUERY_PATH}"
    timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
    try:
        # trust_env=False: a proxy from the environment must not stand between us and a
        # local instance.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(url, json={"sql": sql})
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return None
    except httpx.TimeoutException:
        raise QueryError(f"corelane at {api_listen} did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise QueryError(f"cannot talk to corelane at {api_listen}: "
                         f"{type(exc).__name__} {exc}".rstrip()) from None

    body = _json(response)
    if response.status_code >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            message = (f"corelane at {api_listen} answered HTTP {response.status_code} "
                       f"without a message (is CORELANE_API pointing at corelane?)")
        raise QueryError(message)
    try:
        return QueryResult(columns=list(body["columns"]), types=list(body["types"]),
                           rows=[tuple(row) for row in body["rows"]],
                           truncated=bool(body["truncated"]), elapsed_s=float(body["elapsed_s"]))
    except (KeyError, TypeError, ValueError):
        raise QueryError(f"the answer from {api_listen} is not a query result "
                         f"(is CORELANE_API pointing at corelane?)") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
