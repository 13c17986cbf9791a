"""The typed bodies of the HTTP API: every answer and every command has a model here, so
the OpenAPI schema says exactly what each endpoint gives and takes."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


# The history keeps UTC without a zone; answers say so (RFC 3339, with the offset).
UtcTime = Annotated[datetime, AfterValidator(_utc)]


def _object(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


# A JSON column of the history, read as text: the object it holds ({} when it holds none).
JsonObject = Annotated[dict[str, Any], BeforeValidator(_object)]


class Message(BaseModel):
    """Every error: what was wrong, for a person."""
    message: str


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first. ``next_offset`` is where the next page starts,
    None on the last."""
    items: list[T]
    offset: int
    limit: int
    next_offset: int | None = None


# --- stats, topology, cores ------------------------------------------------------------

class PartStats(BaseModel):
    counters: dict[str, float] = Field(description="totals since start")
    rates: dict[str, float] = Field(description="per second over the last minute or so")
    gauges: dict[str, float | None]


class StatsDocument(BaseModel):
    host: str
    uptime_s: float
    parts: dict[str, PartStats]


class CacheInfo(BaseModel):
    level: int
    type: str
    size_kb: int | None = None
    shared_cpus: list[int]
    id: int | None = None


class CpuInfo(BaseModel):
    cpu: int
    core: int
    core_id: int | None = None
    package: int
    die: int = 0
    cluster: int | None = None
    node: int
    core_type: str | None = None
    capacity: int
    max_freq_khz: int | None = None
    smt_siblings: list[int]
    caches: list[CacheInfo] = []


class TopologyInfo(BaseModel):
    host: str
    source: str
    cpus: list[CpuInfo]
    numa_nodes: list[int] = []
    offline: list[int] = []
    isolated: list[int] = []


class CpuNow(BaseModel):
    cpu: int
    percent: float
    freq_khz: float | None = None


class CpuPoint(BaseModel):
    ts: UtcTime
    cpu: int
    percent_avg: float
    percent_max: float
    samples: int


class CoreUtilization(BaseModel):
    host: str
    sampled_at: UtcTime | None = Field(None, description="when ``live`` was sampled")
    live: list[CpuNow]
    step_s: int | None = None
    series: list[CpuPoint] = Field([], description="over ?from&to, one point per CPU and "
                                                   "step")


# --- processes, tiers, containers -------------------------------------------------------

class ProcessView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    host: str
    pid: int
    start_time: int
    name: str
    cmdline: str = ""
    state: str = ""
    container_id: str | None = None
    cls: str | None = Field(None, alias="class")
    tier: str | None = None
    confidence: float | None = None
    source: str | None = None
    reason: str = ""
    cpus: str | None = Field(None, description="the cores the plan gives it")
    affinity: str = Field("", description="the cores it may run on, as sampled")
    nice: int
    policy: str
    ioclass: str | None = Field(None, description="the I/O class the plan gives it")
    cpu_share: float = Field(description="cores used in the last sweep (1.0 = one core)")
    run_delay_ms_s: float | None = Field(None, description="ms waited for a CPU per second")
    seen_at: UtcTime | None = None


class ClassificationRow(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    ts: UtcTime
    host: str
    pid: int
    start_time: int
    cls: str = Field(alias="class")
    tier: str
    confidence: float
    source: str
    reason: str = ""


class DecisionRow(BaseModel):
    ts: UtcTime
    host: str
    plan_seq: int
    plan_id: str
    mode: str
    strategy: str | None = None
    target: str
    tier: str
    cpus: str
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    nice: int | None = None
    ioclass: str | None = None
    iolevel: int | None = None
    policy: str | None = None
    cpu_shares: int | None = None
    idle_latency_us: int | None = None
    reason: str = ""


class EnforcementRow(BaseModel):
    ts: UtcTime
    host: str
    plan_seq: int
    plan_id: str
    target: str
    tier: str | None = None
    outcome: str
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    reason: str = ""
    before: JsonObject = Field(default_factory=dict, description="settings before")
    after: JsonObject = Field(default_factory=dict, description="settings after")


class ProcessDetail(BaseModel):
    host: str
    pid: int
    start_time: int
    live: bool
    process: ProcessView | None = Field(None, description="as now (live) or as last seen")
    classifications: list[ClassificationRow]
    decisions: list[DecisionRow]
    enforcements: list[EnforcementRow]


class TierView(BaseModel):
    host: str
    tier: str
    cpus: str = Field(description="the cores of the tier's pool in the newest plan")
    cores: int = Field(description="how many logical CPUs that is")
    members: int
    demand_cores: float = Field(description="the members' summed CPU use (cores)")
    run_delay_ms_s: float = Field(description="the members' summed run-queue delay")
    examples: list[str] = Field(description="some members' names")
    memory_bytes: int | None = Field(None, description="the memory the tier's group uses "
                                                       "(tier limits; null: no group)")
    pressure: dict[str, float] = Field({}, description="the tier group's pressure stall "
                                       "figures (avg10, %, e.g. memory_some; cgroup v2 with "
                                       "PSI on only)")


class TiersDocument(BaseModel):
    host: str
    plan_seq: int | None = None
    mode: str | None = None
    strategy: str | None = None
    planned_at: UtcTime | None = None
    pressure: dict[str, float] = Field({}, description="the host's pressure stall figures "
                                       "(PSI avg10, %; empty where the kernel has PSI off)")
    tiers: list[TierView]


class ContainerView(BaseModel):
    host: str
    id: str
    name: str
    image: str = ""
    status: str = ""
    tier: str | None = None
    cpus: str | None = Field(None, description="the cpuset the plan gives it")
    cpuset: str = Field("", description="its cpuset as sampled ('' = every CPU)")
    cpu_shares: int = 0
    cpu_share: float = 0.0
    memory_bytes: int = 0
    processes: int = 0


class ContainerPoint(BaseModel):
    ts: UtcTime
    cpu_share_avg: float
    cpu_share_max: float
    memory_bytes_max: int
    samples: int


class ContainerStats(BaseModel):
    container: ContainerView
    step_s: int
    series: list[ContainerPoint]


# --- latency, alerts --------------------------------------------------------------------

class LatencyRow(BaseModel):
    host: str
    tier: str
    pid: int | None = None
    start_time: int | None = None
    name: str | None = None
    processes: int
    samples: int
    p50: float = Field(description="ms waited for a CPU per second of wall time")
    p95: float
    p99: float
    max: float


class LatencyStats(BaseModel):
    t_from: UtcTime
    t_to: UtcTime
    per: Literal["tier", "process"]
    rows: list[LatencyRow]


class AlertRow(BaseModel):
    alert_id: str
    host: str
    rule: str
    message: str
    state: str
    severity: str
    opened_at: UtcTime
    resolved_at: UtcTime | None = None
    details: JsonObject = Field(default_factory=dict)


# --- commands ---------------------------------------------------------------------------

class Accepted(BaseModel):
    """A command published: the event's id and type, to find it in the log."""
    id: str
    type: str
    topic: str


class LabelRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    cls: str | None = Field(None, alias="class", description="a class, or 'auto' to remove")
    tier: str | None = None
    pid: int | None = Field(None, ge=1, le=2 ** 31 - 1)
    match: str | None = Field(None, min_length=1, max_length=1000,
                              description="regular expression over name and command line")


class RegisterRequest(LabelRequest):
    """A label that must name a tier."""
    tier: str


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pid: int = Field(ge=1, le=2 ** 31 - 1)
    start_time: int | None = Field(None, ge=0)


class Judgement(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    host: str
    pid: int
    start_time: int
    name: str
    cls: str | None = Field(None, alias="class")
    tier: str | None = None
    confidence: float
    source: str | None = Field(None, description="label, rule or model")
    reason: str
    guess: str | None = Field(None, description="the behaviour class behind it")
    guess_reason: str = ""
    label: str | None = Field(None, description="the id of the label that applies")
    samples: int
    span_s: float
    features: dict[str, float]
    decision: DecisionRow | None = Field(None, description="where the newest plan puts it")


class ModeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str
    hosts: list[str] = Field([], max_length=1000)


class HostsRequest(BaseModel):
    """Which hosts a command is for (rebalance, pause, resume); none: every host."""
    model_config = ConfigDict(extra="forbid")
    hosts: list[str] = Field([], max_length=1000)


class PriorityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str = Field(description="a tier, or 'auto' to follow its processes again")
    host: str | None = Field(None, description="default: this instance's host")


class ShutdownRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class ReplayPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=300, description="the file it came from")
    yaml: str = Field(max_length=1 << 20, description="the configuration file's text")


class ReplayBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    t_from: str = Field(alias="from", max_length=100,
                        description="ISO 8601 (UTC unless an offset is given), -15m, epoch s")
    t_to: str = Field("now", alias="to", max_length=100)
    host: str | None = Field(None, max_length=255)
    policy: ReplayPolicy | None = None
    against: ReplayPolicy | None = None
    fresh_model: bool = False
    shadow: str | None = Field(None, max_length=100)
