"""The bearer token every command (POST) needs.

It is ``api.token`` (or ``CORELANE_TOKEN``) when configured; else `corelane up` creates a
random one in ``<home>/api-token`` with mode 0600, and the CLI, run by the same user, reads
it from there. Reads (GET) need no token: the API binds to loopback unless told otherwise.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.kafka.broker import is_loopback
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"


def token_path(settings: Settings) -> Path:
    return settings.home_path / TOKEN_FILE


def read_token(settings: Settings) -> str | None:
    """The token a client sends: the configured one, else the file's, else None."""
    if settings.api.token:
        return settings.api.token
    try:
        return token_path(settings).read_text().strip() or None
    except OSError:
        return None


def ensure_token(settings: Settings) -> str | None:
    """The token the server checks, creating the file when none is configured; None when
    ``api.require_token`` is off."""
    if not settings.api.require_token:
        if not is_loopback(settings.api.host.strip("[]")):
            log.warning("the API on %s takes commands from anyone who can reach it "
                        "(api.require_token is false); bind it to 127.0.0.1 or require a "
                        "token", settings.api.listen)
        return None
    if settings.api.token:
        return settings.api.token
    path = token_path(settings)
    existing = read_token(settings)
    if existing is not None and _private(path):
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Created 0600 from the start: never readable by others, even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def _private(path: Path) -> bool:
    try:
        return path.stat().st_mode & 0o077 == 0
    except OSError:
        return False


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``expected`` (always, without one)."""
    if expected is None:
        return True
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                             expected.encode())


def token_dependency(token: str | None) -> Callable[..., None]:
    """A FastAPI dependency that refuses a request without ``token`` (401, saying where
    the token is); it also declares the bearer scheme in the OpenAPI document."""
    bearer = HTTPBearer(auto_error=False, description="the token of api.token, "
                        "CORELANE_TOKEN or <home>/api-token")

    def authorised(request: Request,
                   _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not token_matches(token, request.headers.get("authorization")):
            raise HTTPException(401, "this needs the bearer token: send 'Authorization: "
                                     "Bearer TOKEN' (api.token, CORELANE_TOKEN, or the "
                                     "api-token file in corelane's home folder)")
    return authorised
