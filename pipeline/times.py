"""Times as people write them: ISO 8601 (UTC unless an offset is given), relative to now
(``-15m``, ``-1h``, ``-2d``, ``now``) or seconds since the epoch. The history stores UTC
without a zone, so every parse ends as a naive UTC ``datetime``."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RELATIVE = re.compile(r"^\s*-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Far enough for any history, near enough that datetime arithmetic never overflows.
_EARLIEST = datetime(1970, 1, 1)
_LATEST = datetime(9000, 1, 1)


class TimeError(ValueError):
    """A time that cannot be read; the message says what forms are understood."""


def utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``text`` as a naive UTC datetime; raises TimeError saying what is understood."""
    now = utc_naive(now) if now is not None else datetime.now(timezone.utc).replace(tzinfo=None)
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value)
    try:
        if match:
            return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2).lower()])
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return from_epoch(float(value))
        moment = utc_naive(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None or not _EARLIEST <= moment < _LATEST:
        raise TimeError(f"cannot read the time {text!r}: give ISO 8601 "
                        f"(2026-12-01T09:00, UTC unless an offset is given), a time relative "
                        f"to now (-15m, -1h, -2d), 'now' or seconds since the epoch")
    return moment
