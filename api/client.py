"""Talking to a running corelane over its HTTP API (CORELANE_API), and reading the history
through it or, when none runs, from the file."""
from __future__ import annotations

from typing import Any

import httpx

from api.auth import read_token
from api.paths import API_PREFIX, HEALTH_PATH, QUERY_PATH
from pipeline.settings import Settings
from storage.history import HistoryStore, StoreError
from storage.query import QueryEngine, QueryError, QueryResult

CONNECT_TIMEOUT_S = 2.0
# Beyond the server's own time limit, to get its timeout message rather than ours.
HTTP_MARGIN_S = 10.0


def _client(timeout_s: float) -> httpx.Client:
    # trust_env=False: a proxy from the environment must not stand between us and a local
    # instance.
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S,
                                                                     timeout_s)),
                        trust_env=False)


def instance_answers(api_listen: str, timeout_s: float = 5.0) -> bool:
    """Whether something answers at ``api_listen`` (host:port) the way corelane would."""
    try:
        with _client(timeout_s) as client:
            client.get(f"http://{api_listen}{HEALTH_PATH}")
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return False
    except httpx.HTTPError:
        return True  # it listens, even if it answers slowly or oddly
    return True


def query_running_instance(api_listen: str, sql: str, timeout_s: float) -> QueryResult | None:
    """Run ``sql`` on the instance at ``api_listen`` (host:port).

    Returns None when nothing listens there (no running instance); raises QueryError with
    the server's message when it answers with an error or something that is not corelane.
    """
    body = _call(api_listen, "POST", QUERY_PATH, timeout_s, QueryError, json={"sql": sql})
    if body is None:
        return None
    try:
        return QueryResult(columns=list(body["columns"]), types=list(body["types"]),
                           rows=[tuple(row) for row in body["rows"]],
                           truncated=bool(body["truncated"]), elapsed_s=float(body["elapsed_s"]),
                           truncated_by=body.get("truncated_by"))
    except (KeyError, TypeError, ValueError):
        raise QueryError(f"the answer from {api_listen} is not a query result "
                         f"(is CORELANE_API pointing at corelane?)") from None


class CommandRefused(Exception):
    """The running instance refused a command; the message is its own."""


def post_command(settings: Settings, path: str, body: dict[str, Any],
                 timeout_s: float = 10.0) -> dict[str, Any] | None:
    """POST a command to the instance at ``api.listen`` with the bearer token; its answer,
    or None when no instance listens there. Raises CommandRefused with the server's
    message when it says no."""
    token = read_token(settings)
    answer = _call(settings.api.listen, "POST", API_PREFIX + path, timeout_s, CommandRefused,
                   json=body, headers={"Authorization": f"Bearer {token}"} if token else {})
    if answer is not None and not isinstance(answer, dict):
        raise CommandRefused(f"the answer from {settings.api.listen} is not corelane's")
    return answer


def get_json(settings: Settings, path: str, timeout_s: float = 10.0) -> Any:
    """GET ``path`` under /api/v1 from the running instance; None when none listens, and
    CommandRefused with the server's message on an error."""
    return _call(settings.api.listen, "GET", API_PREFIX + path, timeout_s, CommandRefused)


def _call(api_listen: str, method: str, path: str, timeout_s: float,
          error: type[Exception], **kw: Any) -> Any:
    """One request to the instance at ``api_listen``: its JSON answer, None when nothing
    listens there, ``error`` with the server's message (or why there is none) otherwise."""
    try:
        with _client(timeout_s) as client:
            response = client.request(method, f"http://{api_listen}{path}", **kw)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return None
    except httpx.TimeoutException:
        raise error(f"corelane at {api_listen} did not answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise error(f"cannot talk to corelane at {api_listen}: "
                    f"{type(exc).__name__} {exc}".rstrip()) from None
    answer = _json(response)
    if response.status_code >= 400:
        message = answer.get("message") if isinstance(answer, dict) else None
        if not isinstance(message, str) or not message:
            message = (f"corelane at {api_listen} answered HTTP {response.status_code} "
                       f"without a message (is CORELANE_API pointing at corelane?)")
        raise error(message)
    return answer


def query_history(settings: Settings, sql: str) -> QueryResult:
    """Read-only SQL over the history: through the running instance when one answers at
    ``api.listen`` (it holds the DuckDB file, so nothing else can open it), else from the
    file. Raises QueryError with a person's message."""
    limits = settings.storage
    result = query_running_instance(settings.api.listen, sql,
                                    limits.query_timeout_s + HTTP_MARGIN_S)
    if result is not None:
        return result
    try:
        store = HistoryStore.open_readonly(settings.db_path, limits)
    except StoreError as exc:
        raise QueryError(str(exc)) from None
    try:
        return QueryEngine(store.connection, limits.query_timeout_s,
                           limits.query_max_rows, limits.query_max_bytes).run(sql)
    finally:
        store.close()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class ReplayRefused(Exception):
    """The running instance could not replay the window; the message is its own."""


def replay_through_instance(settings: Settings, body: dict[str, Any],
                            timeout_s: float = 6 * 3600.0) -> dict[str, Any] | None:
    """Ask the instance at ``api.listen`` (which owns the history) for a replay; its report,
    or None when no instance listens there. Raises ReplayRefused with its message."""
    token = read_token(settings)
    answer = _call(settings.api.listen, "POST", API_PREFIX + "/replay", timeout_s,
                   ReplayRefused, json=body,
                   headers={"Authorization": f"Bearer {token}"} if token else {})
    if answer is not None and not isinstance(answer, dict):
        raise ReplayRefused(f"the answer from {settings.api.listen} is not a replay report")
    return answer
