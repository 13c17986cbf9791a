"""Waiting for something a running corelane does, with a message that says what did not."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0,
             every_s: float = 0.2) -> Any:
    """``check()``'s first truthy answer; fails saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


async def wait_for_async(what: str, check: Callable[[], Any], timeout_s: float = 60.0,
                         every_s: float = 0.1) -> Any:
    """``wait_for`` inside a running event loop: it sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
