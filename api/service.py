"""What a running instance hands its API: the parts, the history, the live view, a way to
publish, and what only the classifier knows. The routes take everything from here, so the
same routes serve a real `corelane up` and an in-process test."""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.classification.decide import Explanation
from api.live import LiveState
from pipeline.bus.hub import EventHub
from pipeline.events import Envelope, Payload
from pipeline.health import Reporting
from pipeline.settings import Settings
from pipeline.topology import Topology
from storage.query import QueryEngine


@dataclass
class ApiService:
    settings: Settings
    parts: Mapping[str, Reporting]
    topology: Topology
    publish: Callable[[Payload], Awaitable[Envelope]]
    get_engine: Callable[[], QueryEngine | None] = lambda: None
    live: LiveState = field(default_factory=LiveState)
    hub: EventHub = field(default_factory=EventHub)
    explain: Callable[[str, int, int | None], Explanation | None] | None = None
    token: str | None = None
    # A new cursor on the history, for work that streams it (a replay); None without one.
    history_cursor: Callable[[], Any] | None = None
    started_at: float = field(default_factory=time.time)
    role: str = "all"                        # the `corelane up --role` this instance runs

    @property
    def host(self) -> str:
        return self.settings.host
