"""The read endpoints: what corelane knows now (from the live view) and what it did (from
the history). Every answer has a model in ``api.models``; a bad parameter, an unknown pid
or container is a 4xx with a message."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from agents.enforcement.process import POLICY_NAMES
from api.live import HostState, Identity
from api.models import (AlertRow, ClassificationRow, ContainerPoint, ContainerStats,
                        ContainerView, CoreUtilization, CpuNow, CpuPoint, DecisionRow,
                        EnforcementRow, LatencyRow, LatencyStats, Message, Page, PartStats,
                        ProcessDetail, ProcessView, StatsDocument, TiersDocument, TierView,
                        TopologyInfo)
from api.service import ApiService
from pipeline.health import current_stats
from pipeline.topology import cpulist_format, cpulist_parse
from pipeline.stats import Stats
from pipeline.times import TimeError, from_epoch, parse_when
from pipeline.vocabulary import HOUSEKEEPING, TIER_RANK
from storage import reads
from storage.query import QueryError, QueryResult, QueryTimeout

M = TypeVar("M", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "a bad parameter"},
    404: {"model": Message, "description": "no such process, container or host"},
    408: {"model": Message, "description": "the history took too long"},
    503: {"model": Message, "description": "the history is not open"},
}
MAX_LIMIT = 1000
DEFAULT_WINDOW = timedelta(hours=1)
# Rates are taken over at least this long, so two quick requests do not give noise.
RATE_WINDOW_S = 60.0
_PROCESS_ID = re.compile(r"^(\d{1,10})(?::(\d{1,20}))?$")


def _window(t_from: str | None, t_to: str | None) -> tuple[datetime, datetime]:
    try:
        end = parse_when(t_to) if t_to else parse_when("now")
        start = parse_when(t_from) if t_from else end - DEFAULT_WINDOW
    except TimeError as exc:
        raise HTTPException(400, str(exc)) from None
    if start >= end:
        raise HTTPException(400, f"the window is empty: from ({start.isoformat()}) must be "
                                 f"before to ({end.isoformat()})")
    return start, end


def _maybe_window(t_from: str | None, t_to: str | None
                  ) -> tuple[datetime | None, datetime | None]:
    try:
        return (parse_when(t_from) if t_from else None, parse_when(t_to) if t_to else None)
    except TimeError as exc:
        raise HTTPException(400, str(exc)) from None


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row)) for row in result.rows]


class HistoryReader:
    """Runs the history's questions off the event loop, with one way to fail."""

    def __init__(self, service: ApiService) -> None:
        self.service = service

    async def run(self, sql_params: tuple[str, list[Any]]) -> list[dict[str, Any]]:
        engine = self.service.get_engine()
        if engine is None:
            raise HTTPException(503, "the history is not open yet (corelane is starting or "
                                     "its storage is off); try again shortly")
        sql, params = sql_params
        try:
            return _rows(await run_in_threadpool(engine.run, sql, params))
        except QueryTimeout as exc:
            raise HTTPException(408, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None

    async def page(self, sql_params: tuple[str, list[Any]], model: type[M], limit: int,
                   offset: int) -> Page[M]:
        rows = await self.run(sql_params)
        items = [model.model_validate(r) for r in rows[:limit]]
        return Page[model](items=items, offset=offset, limit=limit,  # type: ignore[valid-type]
                           next_offset=offset + limit if len(rows) > limit else None)


# --- live views --------------------------------------------------------------------------

def process_view(host: str, h: HostState, key: Identity) -> ProcessView:
    s = h.samples[key]
    c = h.classes.get(key)
    d = h.plan.processes.get(key) if h.plan is not None else None
    seen = h.sampled_at.get(key)
    return ProcessView(
        host=host, pid=s.pid, start_time=s.start_time, name=s.name, cmdline=s.cmdline,
        state=s.state, container_id=s.container_id,
        cls=c.cls if c else None, tier=c.tier if c else (d.tier if d else None),
        confidence=c.confidence if c else None, source=c.source if c else None,
        reason=c.reason if c else "", cpus=d.cpus if d else None, affinity=s.affinity,
        nice=s.nice, policy=POLICY_NAMES.get(s.policy, str(s.policy)),
        ioclass=d.ioclass if d else None, cpu_share=round(s.cpu_share, 4),
        run_delay_ms_s=(round(h.delay_ms_s[key], 3) if key in h.delay_ms_s else None),
        seen_at=from_epoch(seen) if seen else None)


async def past_view(history: HistoryReader, host: str, key: Identity) -> ProcessView | None:
    """A process that is gone, as its last recorded sample showed it."""
    last = await history.run(reads.last_sample(host, *key))
    if not last:
        return None
    r = last[0]
    return ProcessView(host=host, pid=key[0], start_time=key[1], name=r["name"],
                       cmdline=r["cmdline"] or "", state=r["state"] or "",
                       container_id=r["container_id"], affinity=r["affinity"] or "",
                       nice=r["nice"] or 0,
                       policy=POLICY_NAMES.get(r["policy"], str(r["policy"])),
                       cpu_share=r["cpu_share"] or 0.0, seen_at=r["ts"])


def container_view(host: str, h: HostState, cid: str) -> ContainerView:
    c = h.containers[cid]
    d = h.plan.containers.get(cid) if h.plan is not None else None
    return ContainerView(host=host, id=c.id, name=c.name, image=c.image, status=c.status,
                         tier=d.tier if d else None, cpus=d.cpus if d else None,
                         cpuset=c.cpuset, cpu_shares=c.cpu_shares,
                         cpu_share=round(c.cpu_share, 4), memory_bytes=c.memory_bytes,
                         processes=len(c.pids))


def tier_views(host: str, h: HostState) -> list[TierView]:
    if h.plan is None:
        return []
    cpus: dict[str, set[int]] = {}
    members: dict[str, list[Identity]] = {}
    for key, d in h.plan.processes.items():
        cpus.setdefault(d.tier, set()).update(cpulist_parse(d.cpus))
        if key in h.samples:
            members.setdefault(d.tier, []).append(key)
    for d in h.plan.containers.values():
        cpus.setdefault(d.tier, set()).update(cpulist_parse(d.cpus))
    memory = h.host_sample.tier_memory_bytes if h.host_sample else {}
    pressure: dict[str, dict[str, float]] = {}
    for key, value in (h.host_sample.tier_pressure if h.host_sample else {}).items():
        group, _, figure = key.partition(".")
        pressure.setdefault(group, {})[figure] = value
    out = []
    for tier in sorted(cpus, key=lambda t: TIER_RANK.get(t, len(TIER_RANK)
                                                         + (t == HOUSEKEEPING))):
        keys = members.get(tier, [])
        busiest = sorted(keys, key=lambda k: -h.samples[k].cpu_share)
        out.append(TierView(
            host=host, tier=tier, cpus=cpulist_format(sorted(cpus[tier])),
            cores=len(cpus[tier]), members=len(keys),
            demand_cores=round(sum(h.samples[k].cpu_share for k in keys), 4),
            run_delay_ms_s=round(sum(h.delay_ms_s.get(k, 0.0) for k in keys), 3),
            examples=list(dict.fromkeys(h.samples[k].name for k in busiest))[:8],
            memory_bytes=memory.get(tier), pressure=pressure.get(tier, {})))
    return out


class RateKeeper:
    """Counters per second, against a snapshot at least RATE_WINDOW_S old."""

    def __init__(self) -> None:
        self._snapshots: list[tuple[float, dict[str, dict[str, float]]]] = []

    def rates(self, now: float, counters: dict[str, dict[str, float]]
              ) -> dict[str, dict[str, float]]:
        snaps = self._snapshots
        if not snaps or now - snaps[-1][0] >= RATE_WINDOW_S / 4:
            snaps.append((now, counters))
        while len(snaps) > 2 and now - snaps[1][0] >= RATE_WINDOW_S:
            snaps.pop(0)
        then, old = snaps[0]
        span = now - then
        if span <= 0:
            return {part: dict.fromkeys(values, 0.0) for part, values in counters.items()}
        return {part: {name: round((value - old.get(part, {}).get(name, 0.0)) / span, 4)
                       for name, value in values.items()}
                for part, values in counters.items()}


def split_stats(stats: Stats) -> tuple[dict[str, float], dict[str, float | None]]:
    """(counters, numeric gauges) of one part's stats."""
    counters: dict[str, float] = {}
    gauges: dict[str, float | None] = {}
    for f in stats.fields():
        value = getattr(stats, f.name)
        if f.kind == "counter" and isinstance(value, (int, float)):
            counters[f.name] = float(value)
        elif f.kind == "labelled" and isinstance(value, dict):
            counters.update((f"{f.name}.{label}", float(n)) for label, n in value.items())
        elif f.kind == "labelled_gauge" and isinstance(value, dict):
            gauges.update((f"{f.name}.{label}", float(n)) for label, n in value.items())
        elif f.kind == "gauge" and (value is None or isinstance(value, (int, float))):
            gauges[f.name] = None if value is None else float(value)
    return counters, gauges


# --- the router --------------------------------------------------------------------------

def reads_router(service: ApiService) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    history = HistoryReader(service)
    rates = RateKeeper()
    live = service.live

    def host_state(host: str | None) -> tuple[str, HostState]:
        name = host or service.host
        state = live.hosts.get(name)
        if state is None:
            if host is None:
                return name, HostState()   # this host, before its first sweep
            known = ", ".join(sorted(live.hosts)) or "none yet"
            raise HTTPException(404, f"unknown host {host!r}: hosts seen are {known}")
        return name, state

    Limit = Query(100, ge=1, le=MAX_LIMIT)
    Offset = Query(0, ge=0, le=10_000_000)
    From = Query(None, alias="from", max_length=64,
                 description="ISO 8601 (UTC unless an offset is given), -15m, -1h or epoch s")
    To = Query(None, alias="to", max_length=64)
    Host = Query(None, max_length=255)

    @router.get("/stats", response_model=StatsDocument)
    async def stats() -> StatsDocument:
        """Counts since start, and rates per second, per part of corelane."""
        now = time.time()
        split = {name: split_stats(stats)
                 for name, stats in current_stats(service.parts, now).items()}
        per_s = rates.rates(now, {name: c for name, (c, _) in split.items()})
        return StatsDocument(host=service.host, uptime_s=round(now - service.started_at, 3),
                             parts={name: PartStats(counters=c, rates=per_s.get(name, {}),
                                                    gauges=g)
                                    for name, (c, g) in split.items()})

    @router.get("/topology", response_model=TopologyInfo)
    async def topology(host: str | None = Host) -> TopologyInfo:
        """The CPUs of a host: cores, packages, NUMA nodes, core types, caches."""
        name, state = host_state(host)
        if name == service.host and state.topology is None:
            data: dict[str, Any] = service.topology.to_dict()
        elif state.topology is not None:
            data = state.topology
        else:
            raise HTTPException(404, f"host {name!r} has not sent its topology yet")
        return TopologyInfo.model_validate({**data, "host": name})

    @router.get("/core-utilization", response_model=CoreUtilization)
    async def core_utilization(host: str | None = Host, t_from: str | None = From,
                               t_to: str | None = To,
                               step: int = Query(60, ge=1, le=86400,
                                                 description="seconds per point")
                               ) -> CoreUtilization:
        """Per CPU: its load now, and over ?from&to one point per ``step`` seconds."""
        name, state = host_state(host)
        sample = state.host_sample
        now_rows = [] if sample is None else [
            CpuNow(cpu=i, percent=p, freq_khz=(sample.cpu_freq_khz[i]
                                               if i < len(sample.cpu_freq_khz) else None))
            for i, p in enumerate(sample.cpu_percent)]
        answer = CoreUtilization(host=name, live=now_rows,
                                 sampled_at=from_epoch(state.host_sampled_at)
                                 if state.host_sampled_at else None)
        if t_from or t_to:
            start, end = _window(t_from, t_to)
            rows = await history.run(reads.core_utilization(name, start, end, step))
            answer.step_s = step
            answer.series = [CpuPoint.model_validate(r) for r in rows]
        return answer

    @router.get("/processes", response_model=Page[ProcessView])
    async def processes(host: str | None = Host,
                        tier: str | None = Query(None, max_length=64),
                        cls: str | None = Query(None, alias="class", max_length=64),
                        name: str | None = Query(None, max_length=256,
                                                 description="part of the name or command"),
                        container: str | None = Query(None, max_length=128,
                                                      description="a container id or its "
                                                                  "start"),
                        limit: int = Limit, offset: int = Offset) -> Page[ProcessView]:
        """The live processes of a host: class, tier, cores, nice, policy, I/O class, CPU
        and run-queue delay."""
        host_name, state = host_state(host)
        plan = state.plan.processes if state.plan is not None else {}
        keys = []
        for key in sorted(state.samples):
            s = state.samples[key]
            c = state.classes.get(key)
            the_tier = c.tier if c else (plan[key].tier if key in plan else None)
            if tier is not None and the_tier != tier:
                continue
            if cls is not None and (c is None or c.cls != cls):
                continue
            if name is not None and name not in s.name and name not in s.cmdline:
                continue
            if container is not None and not (s.container_id or "").startswith(container):
                continue
            keys.append(key)
        items = [process_view(host_name, state, k) for k in keys[offset:offset + limit]]
        return Page[ProcessView](items=items, offset=offset, limit=limit,
                                 next_offset=offset + limit if len(keys) > offset + limit
                                 else None)

    @router.get("/processes/{process}", response_model=ProcessDetail)
    async def process(process: str = Path(max_length=40, description="PID (the live one) "
                                                                    "or PID:START_TIME"),
                      host: str | None = Host,
                      limit: int = Query(50, ge=1, le=MAX_LIMIT)) -> ProcessDetail:
        """One process as it is (or was last seen) and its history: classifications with
        reasons, decisions, enforcements."""
        match = _PROCESS_ID.match(process)
        if match is None:
            raise HTTPException(400, f"{process!r} is not a process: give PID or "
                                     f"PID:START_TIME (clock ticks since boot)")
        pid = int(match.group(1))
        host_name, state = host_state(host)
        if match.group(2) is None:
            live_keys = [k for k in state.samples if k[0] == pid]
            if not live_keys:
                raise HTTPException(404, f"no live process {pid} on {host_name}; name a past "
                                         f"one as {pid}:START_TIME")
            key = max(live_keys, key=lambda k: k[1])
        else:
            key = (pid, int(match.group(2)))
            if key[1] >= 2 ** 63:
                raise HTTPException(400, f"start time {key[1]} is out of range")
        is_live = key in state.samples
        f = reads.Filter(host=host_name, pid=key[0], start_time=key[1], limit=limit)
        view = process_view(host_name, state, key) if is_live else \
            await past_view(history, host_name, key)
        c_rows, d_rows, e_rows = await asyncio.gather(
            history.run(reads.classifications(f)), history.run(reads.decisions(f)),
            history.run(reads.enforcements(f)))
        if view is None and not c_rows:
            raise HTTPException(404, f"no process {key[0]}:{key[1]} on {host_name}, live "
                                     f"or in the history")
        return ProcessDetail(
            host=host_name, pid=key[0], start_time=key[1], live=is_live, process=view,
            classifications=[ClassificationRow.model_validate(r) for r in c_rows[:limit]],
            decisions=[DecisionRow.model_validate(r) for r in d_rows[:limit]],
            enforcements=[EnforcementRow.model_validate(r) for r in e_rows[:limit]])

    Pid = Query(None, ge=0, le=2 ** 31 - 1)
    Tier = Query(None, max_length=64)

    def event_filter(t_from: str | None = From, t_to: str | None = To,
                     host: str | None = Host, pid: int | None = Pid,
                     tier: str | None = Tier, limit: int = Limit,
                     offset: int = Offset) -> reads.Filter:
        """The filters and paging the event lists share, as one dependency."""
        start, end = _maybe_window(t_from, t_to)
        return reads.Filter(t_from=start, t_to=end, host=host, pid=pid, tier=tier,
                            limit=limit, offset=offset)

    EventFilter = Depends(event_filter)

    @router.get("/classifications", response_model=Page[ClassificationRow])
    async def classifications(f: reads.Filter = EventFilter) -> Page[ClassificationRow]:
        """Every judgement, with its source and reason."""
        return await history.page(reads.classifications(f), ClassificationRow, f.limit,
                                  f.offset)

    @router.get("/decisions", response_model=Page[DecisionRow])
    async def decisions(f: reads.Filter = EventFilter) -> Page[DecisionRow]:
        """Every placement decided, with its reason."""
        return await history.page(reads.decisions(f), DecisionRow, f.limit, f.offset)

    @router.get("/enforcements", response_model=Page[EnforcementRow])
    async def enforcements(f: reads.Filter = EventFilter) -> Page[EnforcementRow]:
        """Every change made (or skipped, or failed), with the settings before and after."""
        return await history.page(reads.enforcements(f), EnforcementRow, f.limit, f.offset)

    @router.get("/containers", response_model=list[ContainerView])
    async def containers(host: str | None = Host) -> list[ContainerView]:
        """The live containers of a host, with the tier and cpuset the plan gives them."""
        name, state = host_state(host)
        return [container_view(name, state, cid) for cid in sorted(state.containers)]

    @router.get("/containers/{container_id}/stats", response_model=ContainerStats)
    async def container_stats(container_id: str = Path(max_length=128),
                              host: str | None = Host, t_from: str | None = From,
                              t_to: str | None = To,
                              step: int = Query(60, ge=1, le=86400)) -> ContainerStats:
        """A live container and its CPU and memory over ?from&to (default: the last hour)."""
        name, state = host_state(host)
        full = next((c for c in sorted(state.containers) if c.startswith(container_id)),
                    None) if container_id else None
        if full is None:
            raise HTTPException(404, f"no live container {container_id!r} on {name}")
        start, end = _window(t_from, t_to)
        rows = await history.run(reads.container_stats(name, full, start, end, step))
        return ContainerStats(container=container_view(name, state, full), step_s=step,
                              series=[ContainerPoint.model_validate(r) for r in rows])

    @router.get("/tiers", response_model=TiersDocument)
    async def tiers(host: str | None = Host) -> TiersDocument:
        """Each tier's pool of cores in the newest plan, its members and their demand."""
        name, state = host_state(host)
        plan = state.plan
        return TiersDocument(host=name, plan_seq=plan.seq if plan else None,
                             mode=plan.mode if plan else None,
                             strategy=plan.strategy if plan else None,
                             planned_at=from_epoch(plan.ts) if plan else None,
                             pressure=state.host_sample.pressure if state.host_sample else {},
                             tiers=tier_views(name, state))

    @router.get("/latency-stats", response_model=LatencyStats)
    async def latency_stats(t_from: str | None = From, t_to: str | None = To,
                            host: str | None = Host, tier: str | None = Tier,
                            per: Literal["tier", "process"] = "tier",
                            limit: int = Query(20, ge=1, le=MAX_LIMIT)) -> LatencyStats:
        """Run-queue delay (ms waited for a CPU per second) per tier or per process, at
        p50/p95/p99 over a window (default: the last hour)."""
        start, end = _window(t_from, t_to)
        rows = await history.run(reads.latency_stats(reads.LatencyQuery(
            host=host, t_from=start, t_to=end, tier=tier, per_process=per == "process",
            limit=limit)))
        return LatencyStats(t_from=start, t_to=end, per=per,
                            rows=[LatencyRow.model_validate(r) for r in rows])

    @router.get("/alerts", response_model=Page[AlertRow])
    async def alerts(state: Literal["open", "resolved", "all"] = "all",
                     host: str | None = Host, limit: int = Limit,
                     offset: int = Offset) -> Page[AlertRow]:
        """Alerts, open and resolved, each as its newest transition."""
        return await history.page(
            reads.alerts(None if state == "all" else state, host, limit, offset), AlertRow,
            limit, offset)

    return router

