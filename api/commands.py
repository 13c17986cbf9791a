"""The command endpoints: each checks its request, publishes one event and answers 202
with the event's id; the agent that owns the change acts on it from the log. The one
exception is ``classify-workload``, a read that answers 200 with the classifier's current
judgement. Every POST needs the bearer token (``api.auth``)."""
from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path

from api.auth import token_dependency
from api.models import (Accepted, ClassifyRequest, DecisionRow, Judgement, LabelRequest,
                        Message, ModeRequest, PriorityRequest, HostsRequest,
                        RegisterRequest, ShutdownRequest)
from api.service import ApiService
from pipeline import commands
from pipeline.bus import BrokerUnreachable
from pipeline.events import Payload, to_builtins, topic_name
from pipeline.times import from_epoch

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "a command that cannot be given as asked"},
    401: {"model": Message, "description": "no bearer token, or the wrong one"},
    404: {"model": Message, "description": "no such process or container"},
    503: {"model": Message, "description": "the event could not be published"},
}
AUTHOR = "api"


def commands_router(service: ApiService) -> APIRouter:
    router = APIRouter(responses=ERRORS, dependencies=[Depends(token_dependency(service.token))])
    prefix = service.settings.kafka.topic_prefix

    async def publish(payload: Payload) -> Accepted:
        try:
            event = await service.publish(payload)
        except BrokerUnreachable as exc:
            raise HTTPException(503, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the caller gets why, never a traceback
            raise HTTPException(503, f"the command could not be published: "
                                     f"{type(exc).__name__}: {exc}") from None
        return Accepted(id=event.id, type=event.type,
                        topic=topic_name(event.type, prefix))

    def build(make: Any, **kwargs: Any) -> Payload:
        try:
            return make(**kwargs)
        except commands.CommandError as exc:
            raise HTTPException(400, str(exc)) from None

    def label_of(cls: str | None, tier: str | None, pid: int | None,
                 match: str | None) -> Payload:
        return build(commands.label, classes=service.settings.classifier.classes, cls=cls,
                     tier=tier, pid=pid, match=match, author=AUTHOR,
                     proc_root=service.settings.host_paths.proc)

    @router.post("/labels", status_code=202, response_model=Accepted)
    async def labels(body: LabelRequest) -> Accepted:
        """Give a process (a pid of this host) or every process matching a pattern a
        class (or a tier); the class 'auto' removes an earlier label."""
        return await publish(label_of(body.cls, body.tier, body.pid, body.match))

    @router.post("/register-process", status_code=202, response_model=Accepted)
    async def register_process(body: RegisterRequest) -> Accepted:
        """Give a process or a pattern a tier, through a label event that names it."""
        return await publish(label_of(body.cls, body.tier, body.pid, body.match))

    @router.post("/classify-workload", response_model=Judgement)
    async def classify_workload(body: ClassifyRequest) -> Judgement:
        """The classifier's current judgement of a process of this host, the features
        behind it and its source, and where the newest plan puts it."""
        if service.explain is None:
            raise HTTPException(503, "no classifier runs in this instance")
        found = service.explain(service.host, body.pid, body.start_time)
        if found is None:
            raise HTTPException(404, f"the classifier holds no window of process {body.pid} "
                                     f"on {service.host}: it is not running, or is too "
                                     f"new to have been sampled")
        state = service.live.hosts.get(service.host)
        decision = None
        if state is not None and state.plan is not None:
            d = state.plan.processes.get((found.pid, found.start_time))
            if d is not None:
                plan = state.plan
                decision = DecisionRow(**to_builtins(d), ts=from_epoch(plan.ts),
                                       host=service.host, plan_seq=plan.seq,
                                       plan_id=plan.batch, mode=plan.mode,
                                       strategy=plan.strategy)
        return Judgement(host=service.host, **dataclasses.asdict(found), decision=decision)

    @router.post("/mode", status_code=202, response_model=Accepted)
    async def mode(body: ModeRequest) -> Accepted:
        """Switch the allocation mode of some hosts (every host when none are named);
        'auto' hands the choice back to the schedule."""
        return await publish(build(commands.mode, wanted=body.mode, hosts=body.hosts))

    @router.post("/rebalance", status_code=202, response_model=Accepted)
    async def rebalance(body: HostsRequest | None = None) -> Accepted:
        """Plan now, and publish the plan even if nothing changed."""
        return await publish(build(commands.rebalance, hosts=body.hosts if body else []))

    @router.post("/pause", status_code=202, response_model=Accepted)
    async def pause(body: HostsRequest | None = None) -> Accepted:
        """Stop changing anything on the hosts (every host without a list) until a resume;
        corelane goes on observing, judging and planning."""
        return await publish(commands.pause(body.hosts if body else []))

    @router.post("/resume", status_code=202, response_model=Accepted)
    async def resume(body: HostsRequest | None = None) -> Accepted:
        """Enforce the plans on the hosts again, the newest at once."""
        return await publish(commands.resume(body.hosts if body else []))

    @router.post("/containers/{container_id}/priority", status_code=202,
                 response_model=Accepted)
    async def container_priority(body: PriorityRequest,
                                 container_id: str = Path(max_length=128)) -> Accepted:
        """Keep a container at a tier whatever its processes' classes say ('auto' hands
        it back to them)."""
        host = body.host or service.host
        state = service.live.hosts.get(host)
        known = sorted(state.containers) if state is not None else []
        full = next((c for c in known if c.startswith(container_id)), None) \
            if container_id.strip() else None
        if full is None:
            raise HTTPException(404, f"no live container {container_id!r} on {host}")
        return await publish(build(commands.container_priority, container_id=full,
                                   tier=body.tier, host=host))

    @router.post("/admin/shutdown", status_code=202, response_model=Accepted)
    async def shutdown(body: ShutdownRequest | None = None) -> Accepted:
        """Stop this instance in order, as SIGTERM does: everything it changed is put
        back first."""
        return await publish(commands.shutdown(service.host, body.reason if body else ""))

    return router
