"""A window of one host's history, read back as the events it was, in time order.

A replay needs two things from the history: the state in force when its window opens (the
labels and commands given before it, the host's last plan, its topology, the classes in
force, the configuration) and the window's own events, streamed in the order they
happened. Each event type is read through its own cursor in Arrow batches and the streams
are merged by time, so memory stays flat in the window's length.

Times are seconds since the epoch (UTC); the windows are half-open, ``t_from <= ts < t_to``.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import duckdb
import msgspec

from pipeline.events import Classification, Configuration, Decisions, Envelope, joined
from storage.rows import Unflattener, select_list
from storage.schema import SPECS

Cursor = Callable[[], duckdb.DuckDBPyConnection]
BATCH_ROWS = 4096
# A window is read a slice at a time, each slice sorted on its own: what is held at once
# is one slice's rows, whatever the window's length.
SLICE_S = 120.0

# What a replay reads of the window, and how each stream is filtered: "host" keeps the
# replayed host's events, "any" every host's (commands name their hosts inside).
WINDOW_TYPES: dict[str, str] = {
    "process_samples": "host", "host_sample": "host", "container_samples": "host",
    "label": "label", "command": "any", "strategy": "host", "configuration": "host",
    "classifications": "host", "decisions": "host",
}


class WindowError(Exception):
    """A window that cannot be replayed; the message is one line meant for a person."""


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)


def _show(t: float) -> str:
    return _when(t).isoformat(timespec="seconds") + "Z"


@dataclass
class StartState:
    """What was in force on the host when the window opened."""
    labels: list[Envelope] = field(default_factory=list)        # given before, in order
    commands: list[Envelope] = field(default_factory=list)
    strategy: Envelope | None = None                            # the newest choice before
    last_plan: Decisions | None = None                          # whole (chunks joined)
    last_plan_ts: float | None = None
    topology: Envelope | None = None                            # a host sample carrying it
    configuration: Configuration | None = None                  # the live one in force
    classes: dict[tuple[int, int], tuple[float, Classification]] = field(default_factory=dict)


class HistoryWindow:
    """``host``'s history between ``t_from`` and ``t_to``. ``check`` refuses what cannot be
    replayed; ``start_state`` and ``events`` read it."""

    def __init__(self, cursor: Cursor, host: str | None, t_from: float, t_to: float) -> None:
        self.cursor = cursor
        self.t_from, self.t_to = t_from, t_to
        self.host = host or ""

    def _one(self, sql: str, params: list[Any]) -> Any:
        return self.cursor().execute(sql, params).fetchall()

    def hosts(self) -> list[str]:
        return [r[0] for r in self._one(
            "SELECT DISTINCT host FROM process_samples ORDER BY host", [])]

    def check(self, raw_retention_h: float, now: float, preferred_host: str | None = None
              ) -> None:
        """Raise WindowError for a window that cannot be replayed: its end not after its
        start, an unknown host, a start older than the raw retention, no samples in it.
        Without a host, ``preferred_host`` (this host) or the only recorded host is taken."""
        if self.t_to <= self.t_from:
            raise WindowError(f"the window ends ({_show(self.t_to)}) before it starts "
                              f"({_show(self.t_from)}): give --to after --from")
        hosts = self.hosts()
        if not self.host:
            if preferred_host in hosts:
                self.host = preferred_host or ""
            elif len(hosts) == 1:
                self.host = hosts[0]
            elif not hosts:
                raise WindowError("the history holds no process samples yet: run corelane up "
                                  "for a while first")
            else:
                raise WindowError(f"the history holds several hosts ({', '.join(hosts)}): "
                                  f"name one with --host")
        if self.host not in hosts:
            raise WindowError(f"no history of host {self.host!r}; hosts recorded: "
                              f"{', '.join(hosts) or 'none'}")
        horizon = now - raw_retention_h * 3600
        first, last = self._one(
            "SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM process_samples WHERE host = ?",
            [self.host])[0]
        first_s, last_s = first / 1e6, last / 1e6
        if self.t_from < horizon:
            kept = max(horizon, first_s)
            part = (f"of this window only {_show(kept)} to {_show(self.t_to)} still has them"
                    if self.t_to > kept else "no part of this window has them any more")
            raise WindowError(
                f"the window starts at {_show(self.t_from)}, before the raw samples' retention "
                f"(storage.raw_retention_h = {raw_retention_h:g} h, so since {_show(horizon)}): "
                f"{part}")
        count = self._one("SELECT count(*) FROM process_samples WHERE host = ? AND ts >= ? "
                          "AND ts < ?", [self.host, _when(self.t_from), _when(self.t_to)])[0][0]
        if not count:
            raise WindowError(f"no process samples of host {self.host} between "
                              f"{_show(self.t_from)} and {_show(self.t_to)}; its samples span "
                              f"{_show(first_s)} to {_show(last_s)}")

    # --- reading ----------------------------------------------------------------------------

    def _stream(self, event_type: str, t_from: float | None, t_to: float | None,
                where: str = "", params: Iterable[Any] = (), newest_first: bool = False,
                limit: int | None = None) -> Iterator[Envelope]:
        params = list(params)
        if t_from is not None and t_to is not None and not newest_first and limit is None:
            start = t_from
            while start < t_to:
                end = min(t_to, start + SLICE_S)
                yield from self._query(event_type, start, end, where, params)
                start = end
            return
        yield from self._query(event_type, t_from, t_to, where, params, newest_first, limit)

    def _query(self, event_type: str, t_from: float | None, t_to: float | None,
               where: str = "", params: Iterable[Any] = (), newest_first: bool = False,
               limit: int | None = None) -> Iterator[Envelope]:
        spec = SPECS[event_type]
        clauses, args = [], []
        scope = WINDOW_TYPES.get(event_type, "host")
        if scope == "host":
            clauses.append("host = ?")
            args.append(self.host)
        elif scope == "label":
            clauses.append("(host = ? OR match IS NOT NULL)")
            args.append(self.host)
        if t_from is not None:
            clauses.append("ts >= ?")
            args.append(_when(t_from))
        if t_to is not None:
            clauses.append("ts < ?")
            args.append(_when(t_to))
        if where:
            clauses.append(where)
            args.extend(params)
        order = "ts DESC, seq DESC" if newest_first else "ts, seq, rowid"
        sql = (f"SELECT {select_list(spec)} FROM {spec.table} WHERE {' AND '.join(clauses)} "
               f"ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit else ""))
        unflat = Unflattener(event_type)
        for batch in self.cursor().sql(sql, params=args).to_arrow_reader(BATCH_ROWS):
            yield from unflat.feed(batch)
        yield from unflat.close()

    def start_state(self, class_lookback_s: float) -> StartState:
        """The state in force at ``t_from``; the classes in force are the newest of each
        process within ``class_lookback_s`` before it (classes are said again every
        heartbeat)."""
        t1 = self.t_from
        state = StartState()
        state.labels = list(self._stream("label", None, t1))
        state.commands = list(self._stream("command", None, t1))
        state.strategy = next(self._stream("strategy", None, t1, newest_first=True,
                                           limit=1), None)
        state.topology = self._topology_at_start()
        configs = [e for e in self._stream("configuration", None, t1, where="policy = 'live'",
                                           newest_first=True, limit=1)]
        state.configuration = configs[0].data if configs else None
        state.last_plan, state.last_plan_ts = self.last_plan()
        for event in self._stream("classifications", t1 - class_lookback_s, t1):
            for c in event.data.items:
                state.classes[(c.pid, c.start_time)] = (event.ts, c)
        return state

    def shadow_policies(self) -> list[str]:
        """The shadow policies whose plans for the host the history holds."""
        return [r[0] for r in self._one("SELECT DISTINCT policy FROM shadow_decisions "
                                        "WHERE host = ? ORDER BY policy", [self.host])]

    def last_plan(self, shadow: str | None = None) -> tuple[Decisions | None, float | None]:
        """The host's last plan before the window (whole, its chunks joined) and when it was
        published: the live one, or the named shadow policy's."""
        event_type = "shadow_decisions" if shadow else "decisions"
        table = SPECS[event_type].table
        where, params = ("policy = ? AND ", [shadow]) if shadow else ("", [])
        newest = self._one(f"SELECT batch FROM {table} WHERE {where}host = ? AND ts < ? "
                           f"ORDER BY ts DESC LIMIT 1", [*params, self.host, _when(self.t_from)])
        if not newest:
            return None, None
        parts = list(self._stream(event_type, None, self.t_from, where="batch = ?",
                                  params=[newest[0][0]]))
        if not parts:
            return None, None
        whole = msgspec.structs.replace(parts[0].data, chunk=0, chunks=1,
                                        items=joined([p.data for p in parts], "items"))
        return whole, parts[-1].ts

    def _topology_at_start(self) -> Envelope | None:
        """The newest host sample with a topology before the window; else the first in it."""
        before = next(self._stream("host_sample", None, self.t_from,
                                   where="topology IS NOT NULL", newest_first=True,
                                   limit=1), None)
        if before is not None:
            return before
        return next(self._stream("host_sample", self.t_from, self.t_to,
                                 where="topology IS NOT NULL", limit=1), None)

    def warm_up(self, span_s: float) -> Iterator[Envelope]:
        """The process and container samples of the ``span_s`` before the window, in order:
        they fill the feature windows as they stood when it opened."""
        return self.merged(["process_samples", "container_samples"],
                           self.t_from - span_s, self.t_from)

    def events(self, types: Iterable[str] = WINDOW_TYPES) -> Iterator[Envelope]:
        """The window's events of ``types``, merged in time order."""
        return self.merged(list(types), self.t_from, self.t_to)

    def merged(self, types: list[str], t_from: float, t_to: float) -> Iterator[Envelope]:
        streams = [self._stream(t, t_from, t_to) for t in types]
        return heapq.merge(*streams, key=lambda e: (e.ts, e.seq))

