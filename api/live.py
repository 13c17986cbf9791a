"""What is true now, per host, folded from the events as the recorder reads them.

The live reads of the API (processes, tiers, containers, the cores' load now) answer from
here rather than from the history: they need the newest sweep and the newest plan, which
this keeps in memory, so a dashboard polling them costs no query. ``apply`` is the whole
fold: events in, state out, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.events import (Alert, Chunks, Classification, ContainerSample, ContainerSamples,
                             Decision, Decisions, Envelope, HostSample, ProcessSample,
                             ProcessSamples, joined)

# Batches of one host that may wait for a lost chunk at once before the oldest is dropped.
KEEP_WAITING = 3

Identity = tuple[int, int]     # (pid, start_time)


@dataclass
class Plan:
    """The newest whole plan of a host."""
    batch: str
    seq: int
    mode: str
    strategy: str
    ts: float
    processes: dict[Identity, Decision]
    containers: dict[str, Decision]


@dataclass
class HostState:
    samples: dict[Identity, ProcessSample] = field(default_factory=dict)
    sampled_at: dict[Identity, float] = field(default_factory=dict)
    delay_ms_s: dict[Identity, float] = field(default_factory=dict)   # run-queue delay rate
    classes: dict[Identity, Classification] = field(default_factory=dict)
    containers: dict[str, ContainerSample] = field(default_factory=dict)
    host_sample: HostSample | None = None
    host_sampled_at: float | None = None
    topology: dict[str, Any] | None = None
    plan: Plan | None = None
    # the chunks of the sweeps and plans being received
    sweeps: Chunks[ProcessSamples] = field(default_factory=lambda: Chunks(KEEP_WAITING))
    plans: Chunks[Decisions] = field(default_factory=lambda: Chunks(KEEP_WAITING))
    container_sweeps: Chunks[ContainerSamples] = field(
        default_factory=lambda: Chunks(KEEP_WAITING))


class LiveState:
    """The newest sweep, classes, plan, containers and alerts of each host."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostState] = {}
        self.open_alerts: dict[str, tuple[str, Alert]] = {}   # alert id -> (host, alert)

    def host(self, host: str) -> HostState:
        return self.hosts.setdefault(host, HostState())

    def apply(self, event: Envelope) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)

    # --- the fold ------------------------------------------------------------------------

    def _process_samples(self, event: Envelope) -> None:
        h = self.host(event.host)
        data = event.data
        if data.partial:
            self._take_samples(h, event.ts, data.samples, replace=False)
            return
        parts = h.sweeps.add(data)
        if parts is not None:
            self._take_samples(h, event.ts, joined(parts, "samples"), replace=True)

    @staticmethod
    def _take_samples(h: HostState, ts: float, samples: list[ProcessSample],
                      replace: bool) -> None:
        fresh: dict[Identity, ProcessSample] = {}
        for s in samples:
            key = (s.pid, s.start_time)
            old, old_ts = h.samples.get(key), h.sampled_at.get(key)
            if old is not None and old_ts is not None and ts > old_ts:
                h.delay_ms_s[key] = max(0.0, (s.run_delay_ns - old.run_delay_ns)
                                        / 1e6 / (ts - old_ts))
            fresh[key] = s
        if replace:
            gone = h.samples.keys() - fresh.keys()
            h.samples = fresh
            for key in gone:
                h.sampled_at.pop(key, None)
                h.delay_ms_s.pop(key, None)
                h.classes.pop(key, None)
        else:
            h.samples.update(fresh)
        for key in fresh:
            h.sampled_at[key] = ts

    def _classifications(self, event: Envelope) -> None:
        h = self.host(event.host)
        for c in event.data.items:
            h.classes[(c.pid, c.start_time)] = c

    def _decisions(self, event: Envelope) -> None:
        h = self.host(event.host)
        data: Decisions = event.data
        parts = h.plans.add(data)
        if parts is None:
            return
        items: list[Decision] = joined(parts, "items")
        h.plan = Plan(
            batch=data.batch, seq=data.plan_seq, mode=data.mode, strategy=data.strategy,
            ts=event.ts,
            processes={(d.pid, d.start_time or 0): d for d in items
                       if d.target == "process" and d.pid is not None},
            containers={d.container_id: d for d in items
                        if d.target == "container" and d.container_id})

    def _container_samples(self, event: Envelope) -> None:
        h = self.host(event.host)
        parts = h.container_sweeps.add(event.data)
        if parts is not None:
            h.containers = {c.id: c for c in joined(parts, "samples")}

    def _host_sample(self, event: Envelope) -> None:
        h = self.host(event.host)
        h.host_sample, h.host_sampled_at = event.data, event.ts
        if event.data.topology is not None:
            h.topology = event.data.topology

    def _alert(self, event: Envelope) -> None:
        alert: Alert = event.data
        if alert.state == "resolved":
            self.open_alerts.pop(alert.id, None)
        else:
            self.open_alerts[alert.id] = (event.host, alert)


_HANDLERS = {
    "process_samples": LiveState._process_samples,
    "classifications": LiveState._classifications,
    "decisions": LiveState._decisions,
    "container_samples": LiveState._container_samples,
    "host_sample": LiveState._host_sample,
    "alert": LiveState._alert,
}
