"""The event log's schema: the envelope, one typed payload per event type, and its JSON codec.

This is the one declaration of every event. Each payload class below is, at once, the
message's JSON shape, the reader's validation (a value out of its declared range is a
decode error, so the message goes to dead-letter) and the history table's columns:
``storage.schema`` derives each table from ``EVENT_TYPES`` (a field's column takes its
name, its type and its width from the annotation; ``Meta(extra=...)`` renames a column,
spreads a tuple into several, or makes a float a TIMESTAMP).

Every message on a corelane topic is a JSON envelope any Kafka client can read:
``{"id", "type", "v", "ts", "host", "seq", "data"}``. ``data`` is one of the payload
classes below, chosen by ``type``. Anything per process travels in batches: one sweep,
one cycle or one plan is split into chunks of at most ``chunk_rows`` rows, each chunk its
own message (its own ``id``) carrying the shared ``batch`` id and its place in it.

Units: times are seconds since the epoch (UTC) as floats; ``start_time`` is field 22 of
``/proc/PID/stat`` in clock ticks since boot; a ``cpu_share`` of 1.0 is one core fully busy.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, TypeVar, Union

import msgspec

SCHEMA_VERSION = 1
# Bytes the envelope adds around its data, with room to spare (ids, host, type, numbers).
ENVELOPE_OVERHEAD = 512


# --- field types ---------------------------------------------------------------------------

# An integer that fits 32 bits (pids, nice, counts of CPUs): an INTEGER column.
Int32 = Annotated[int, msgspec.Meta(ge=-(2 ** 31), le=2 ** 31 - 1)]
# Seconds since the epoch, stored as a UTC TIMESTAMP column.
Timestamp = Annotated[float, msgspec.Meta(extra={"timestamp": True})]


def column(name: str) -> msgspec.Meta:
    """Store a field under another column name (``cls`` as ``class``, which Python reserves)."""
    return msgspec.Meta(extra={"column": name})


# --- payloads ------------------------------------------------------------------------------

class HostSample(msgspec.Struct, kw_only=True):
    """One sweep of host-wide figures."""
    cpu_percent: list[float]                 # per logical CPU, 0..100, since the last sweep
    cpu_freq_khz: list[float | None]         # per logical CPU, current frequency
    # 1, 5, 15 minute load averages
    load: Annotated[tuple[float, float, float],
                    msgspec.Meta(extra={"columns": ("load1", "load5", "load15")})]
    mem_total_bytes: int
    mem_available_bytes: int
    swap_used_bytes: int = 0
    temperatures_c: dict[str, float] = {}    # sensor (chip/label) -> degrees; empty where none
    # per logical CPU, its core's or package's temperature (pipeline.thermal); empty where
    # the host has no sensors
    cpu_temperatures_c: list[float | None] = []
    boot_time: float = 0.0
    interval_s: float = 0.0
    # kernel.sched_autogroup_enabled: with it on, nice orders threads only inside one
    # session's group, and only the scheduling policy works across them. None: unknown.
    autogroup: bool | None = None
    # Pressure stall figures (PSI, avg10 in percent): cpu_some, memory_some, memory_full,
    # io_some, io_full. Empty where the kernel has PSI off.
    pressure: dict[str, float] = {}
    # Memory used by each tier's group (tier limits), in bytes.
    tier_memory_bytes: dict[str, int] = {}
    # Each tier group's pressure stall figures (avg10, %), keyed "<tier>.<resource>_<kind>"
    # such as "background.memory_some": cgroup v2 only, and only where PSI is on.
    tier_pressure: dict[str, float] = {}
    # The host's CPU topology (Topology.to_dict()), on a collector's first sweep and every
    # few minutes after: an allocator planning for this host from elsewhere needs it, and
    # so does a replay of this host's history.
    topology: dict[str, Any] | None = None


class ProcessSample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One process at one sweep. Counters are cumulative and cover every thread."""
    pid: Int32
    start_time: int                          # clock ticks since boot: with pid, the identity
    ppid: Int32
    name: str                                # comm
    state: str = ""
    cmdline: str = ""
    uid: int = -1
    cgroup: str = ""
    container_id: str | None = None
    cpu_share: float = 0.0                   # cores used since the last sweep (0 on first sight)
    cpu_time_s: float = 0.0                  # user + system, all threads
    rss_bytes: int = 0
    vm_bytes: int = 0
    threads: Int32 = 1
    vol_ctx: int = 0                         # voluntary context switches, all threads
    invol_ctx: int = 0                       # involuntary context switches, all threads
    run_time_ns: int = 0                     # /proc/PID/schedstat field 1, all threads
    run_delay_ns: int = 0                    # field 2: time runnable but waiting for a CPU
    timeslices: int = 0                      # field 3
    io_read_bytes: int = 0                   # storage reads (/proc/PID/io read_bytes)
    io_write_bytes: int = 0
    io_rchar: int = 0                        # all reads incl. sockets and pipes
    io_wchar: int = 0
    last_cpu: Int32 = -1
    nice: Int32 = 0
    policy: Int32 = 0                        # SCHED_OTHER=0, FIFO=1, RR=2, BATCH=3, IDLE=5
    rt_priority: Int32 = 0
    affinity: str = ""                       # cpu list as the kernel prints it, e.g. "0-3,8"
    kernel_thread: bool = False


class ContainerSample(msgspec.Struct, kw_only=True):
    id: Annotated[str, column("container_id")]   # full container id
    name: str
    image: str = ""
    status: str = ""
    labels: dict[str, str] = {}
    pids: list[Int32] = []
    cpuset: str = ""                         # "" means all CPUs
    cpu_shares: Int32 = 0                    # 0 means the engine default (1024)
    cpu_share: float = 0.0                   # cores used since the last sweep
    memory_bytes: int = 0


class Batch(msgspec.Struct, kw_only=True):
    """Shared by every batched payload: which batch and which chunk of it. A batched
    payload has exactly one list of structs (its rows); its other fields are the batch's."""
    batch: str                               # id shared by the chunks of one sweep/cycle/plan
    chunk: Int32 = 0
    chunks: Int32 = 1


class ProcessSamples(Batch, kw_only=True):
    interval_s: float = 0.0
    # Some processes only, sampled between sweeps (new ones, judged sooner); a sweep that
    # is not partial lists every process, so what it leaves out is gone.
    partial: bool = False
    samples: list[ProcessSample] = []


class ContainerSamples(Batch, kw_only=True):
    interval_s: float = 0.0
    samples: list[ContainerSample] = []


class Label(msgspec.Struct, kw_only=True):
    """An explicit class or tier (or both) for one process, or for every process whose
    name/cmdline matches. A tier alone keeps the class as judged and pins the tier; the class
    ``auto`` removes an earlier label."""
    cls: Annotated[str | None, column("class")] = None
    tier: str | None = None
    pid: Int32 | None = None
    start_time: int | None = None
    match: str | None = None                 # regular expression over name and cmdline
    author: str = ""


class Classification(msgspec.Struct, kw_only=True):
    pid: Int32
    start_time: int
    cls: Annotated[str, column("class")]
    tier: str
    confidence: float
    source: str                              # "label" | "rule" | "model"
    reason: str = ""


class Classifications(Batch, kw_only=True):
    items: list[Classification] = []


class Decision(msgspec.Struct, kw_only=True):
    target: str                              # "process" | "container" | "cpu" | "cgroup"
    tier: str
    cpus: str                                # cpu list
    pid: Int32 | None = None
    start_time: int | None = None
    container_id: str | None = None
    nice: Int32 | None = None
    ioclass: str | None = None               # "rt" | "be" | "idle"
    iolevel: Int32 | None = None
    policy: str | None = None                # "other" | "batch" | "idle" | "fifo" | "rr"
    cpu_shares: Int32 | None = None
    idle_latency_us: int | None = None       # target "cpu": its idle-state limit (0 = poll)
    # target "process": the tier group it belongs in (None: its own cgroups). Target
    # "cgroup": the tier group's limits.
    cgroup: str | None = None
    cpu_weight: Int32 | None = None          # 1-10000, cgroup v2's scale
    cpu_quota_us: int | None = None          # per cgroups.CFS_PERIOD_US
    memory_high: int | None = None           # bytes
    memory_max: int | None = None            # bytes
    swap: bool | None = None                 # False: no swap beyond memory_max
    reason: str = ""


class Decisions(Batch, kw_only=True):
    """One plan for one host. ``plan_seq`` counts the host's plans, across restarts; the
    batch id names the plan itself."""
    plan_seq: int = 0
    mode: str = "balanced"
    strategy: str = ""                       # how the critical tiers were kept quiet
    # Each pool as the plan holds it, for the next plan to go on from (after a restart, in
    # a replay): tier -> {"cpus", "size", "grow", "shrink"}; and the emergency reserve.
    pools: dict[str, Any] = {}
    reserve: str = ""
    items: list[Decision] = []


class ShadowDecisions(Decisions, kw_only=True):
    """A plan a shadow policy made from the live samples: recorded, never applied."""
    # In the table, the decisions' scheduling policy is ``sched_policy``: ``policy`` names
    # the shadow policy.
    item_columns: ClassVar[dict[str, str]] = {"policy": "sched_policy"}
    policy: str                              # the shadow policy's name (``--shadow NAME=...``)


class Enforcement(msgspec.Struct, kw_only=True):
    target: str
    outcome: str                             # "applied" | "skipped" | "failed"
    pid: Int32 | None = None
    start_time: int | None = None
    container_id: str | None = None
    reason: str = ""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}


class Enforcements(Batch, kw_only=True):
    plan_seq: int = 0
    plan_id: str = ""                        # the batch id of the decisions applied
    items: list[Enforcement] = []


class Alert(msgspec.Struct, kw_only=True):
    """One transition of an alert: it opens, and later resolves. Both events carry the same
    ``id``, so the alert's life is the events with that id."""
    id: Annotated[str, column("alert_id")]
    rule: str                                # what raised it, e.g. "model_drift"
    message: str
    opened_at: Timestamp
    state: str = "open"                      # "open" | "resolved"
    severity: str = "warning"                # "info" | "warning" | "critical"
    resolved_at: Timestamp | None = None
    details: dict[str, Any] = {}


def open_alert(rule: str, message: str, now: float, *, severity: str = "warning",
               details: dict[str, Any] | None = None, alert_id: str | None = None) -> Alert:
    """A new alert of ``rule``, open from ``now``."""
    return Alert(id=alert_id or f"{rule}:{new_id()}", rule=rule, message=message,
                 opened_at=now, severity=severity, details=details or {})


def resolve_alert(alert: Alert, now: float, message: str | None = None) -> Alert:
    """The event that closes ``alert``: same id and rule, state resolved."""
    return msgspec.structs.replace(alert, state="resolved", resolved_at=now,
                                   message=message or alert.message)


class Command(msgspec.Struct, kw_only=True):
    name: str
    args: dict[str, Any] = {}


class Configuration(msgspec.Struct, kw_only=True):
    """The configuration in force, published when a policy starts and whenever it changes,
    so that a replay knows which policy decided what."""
    hash: str                                # sha256 of the settings' canonical JSON
    policy: str = "live"                     # "live", or the name of a shadow policy
    source: str = ""                         # the file it was read from
    settings: dict[str, Any] = {}            # every setting, defaults included
    rules_sha256: str = ""                   # of the rule file it names, as it was then


class StrategyChoice(msgspec.Struct, kw_only=True):
    """The closed loop's word on how a host's critical tiers are kept quiet: a strategy to
    try (``trial``), the one kept after trying them (``chosen``), or a switch away from one
    that measured worse than another (``undone``), with the figures that decided it. The
    allocator plans the host with the newest."""
    strategy: str
    state: str                               # "trial" | "chosen" | "undone"
    reason: str = ""
    previous: str = ""
    load: str = ""                           # the batch load it holds for: quiet | loaded
    # per strategy measured: p50_us, p99_us, wakeups, batch_cpu, checks
    figures: dict[str, dict[str, float]] = {}


class Measurement(msgspec.Struct, kw_only=True):
    """One check of the placement in force: the built-in probe's wake-up lateness where the
    critical tiers run, and what the tiers did meanwhile."""
    strategy: str
    plan_id: str
    cpus: str                                # where the probe ran
    wakeups: Int32
    interval_us: Int32
    p50_us: float
    p99_us: float
    max_us: float
    span_s: float
    batch_cpu: float = 0.0                   # cores the batch tiers used meanwhile
    busy_batch: Int32 = 0                    # batch processes using a tenth of a core or more
    critical_delay_ms_s: float = 0.0         # the critical tiers' run-queue delay, ms/s


class ModelSnapshot(msgspec.Struct, kw_only=True):
    """A worker's online model as plain numbers, for the other workers of a group to merge
    (``agents.classification.sharing``): a reader never unpickles what a topic carries.
    The logistic model only (a scaler and a linear model per class); trees do not average."""
    origin: str                              # the worker that sent it (host:pid)
    kind: str                                # classifier.model
    learned: int                             # windows it learned itself since it started
    n_learned: int = 0                       # everything its model learned, merges included
    version: int = 0
    scaler: dict[str, Any] = {}              # feature -> [count, mean, variance]
    classes: dict[str, Any] = {}             # class -> {"intercept": b, "weights": {feature: w}}


class DeadLetter(msgspec.Struct, kw_only=True):
    """A message a reader could not read: where it was, why, and enough of it to look at
    (``dead_letter_payload`` builds one that always fits under the broker's limit). Each
    reader that meets the message says so once, under its own name."""
    topic: str
    partition: Int32
    offset: int
    reason: str
    reader: str = ""                         # who could not read it: recorder, classifier, ...
    key: str | None = None
    size: int = 0                            # the message's bytes
    sha256: str = ""                         # of the whole message
    payload_b64: str = ""                    # its first DEAD_LETTER_PREFIX bytes, base64


Payload = Union[HostSample, ProcessSamples, ContainerSamples, Label, Classifications,
                Decisions, ShadowDecisions, Enforcements, Alert, Command, Configuration, StrategyChoice,
                Measurement, ModelSnapshot, DeadLetter]


@dataclass(frozen=True)
class EventType:
    """One kind of event: its envelope ``type``, payload class, topic and history table."""
    name: str
    payload: type
    topic: str                               # the topic's name after the prefix
    table: str


EVENT_TYPES: dict[str, EventType] = {e.name: e for e in (
    EventType("host_sample", HostSample, "samples.host", "host_samples"),
    EventType("process_samples", ProcessSamples, "samples.process", "process_samples"),
    EventType("container_samples", ContainerSamples, "samples.container", "container_samples"),
    EventType("label", Label, "labels", "labels"),
    EventType("classifications", Classifications, "classifications", "classifications"),
    EventType("decisions", Decisions, "decisions", "decisions"),
    EventType("shadow_decisions", ShadowDecisions, "shadow.decisions", "shadow_decisions"),
    EventType("enforcements", Enforcements, "enforcements", "enforcements"),
    EventType("alert", Alert, "alerts", "alerts"),
    EventType("command", Command, "commands", "commands"),
    EventType("configuration", Configuration, "configuration", "configurations"),
    EventType("strategy", StrategyChoice, "strategy", "strategies"),
    EventType("measurement", Measurement, "measurements", "measurements"),
    EventType("model_snapshot", ModelSnapshot, "model.snapshots", "model_snapshots"),
    EventType("deadletter", DeadLetter, "deadletter", "deadletter"),
)}
TYPE_OF_PAYLOAD: dict[type, str] = {e.payload: e.name for e in EVENT_TYPES.values()}


def topic_name(event_type: str, prefix: str = "corelane.") -> str:
    return prefix + EVENT_TYPES[event_type].topic


# --- envelope and codec --------------------------------------------------------------------

D = TypeVar("D")


class Envelope(msgspec.Struct, Generic[D], kw_only=True):
    """``Envelope[msgspec.Raw]`` reads the header and leaves ``data`` undecoded until its
    type is known."""
    id: str
    type: str
    v: int
    ts: float
    host: str
    seq: int
    data: D

    @property
    def topic_suffix(self) -> str:
        return EVENT_TYPES[self.type].topic


class EventDecodeError(ValueError):
    """A message that is not a readable corelane event; the text is the reason."""


_encoder = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(Envelope[msgspec.Raw])
_payload_decoders = {name: msgspec.json.Decoder(e.payload) for name, e in EVENT_TYPES.items()}


def new_id() -> str:
    return uuid.uuid4().hex


def envelope(data: Payload, host: str, seq: int, ts: float | None = None,
             event_id: str | None = None) -> Envelope:
    """Wrap a payload; its class decides the event type."""
    try:
        event_type = TYPE_OF_PAYLOAD[type(data)]
    except KeyError:
        raise TypeError(f"{type(data).__name__} is not a corelane event payload") from None
    return Envelope(id=event_id or new_id(), type=event_type, v=SCHEMA_VERSION,
                    ts=time.time() if ts is None else ts, host=host, seq=seq, data=data)


def encode(event: Envelope) -> bytes:
    return _encoder.encode(event)


def decode(raw: bytes | None) -> Envelope:
    """Read one message; anything unreadable raises EventDecodeError saying why."""
    if raw is None:
        raise EventDecodeError("empty message (no value)")
    try:
        head = _raw_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not a corelane envelope: {exc}") from None
    decoder = _payload_decoders.get(head.type)
    if decoder is None:
        raise EventDecodeError(f"unknown event type {head.type!r}")
    if head.v > SCHEMA_VERSION:
        raise EventDecodeError(
            f"{head.type} schema version {head.v} is newer than this reader's {SCHEMA_VERSION}")
    try:
        data = decoder.decode(head.data)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"bad {head.type} data: {exc}") from None
    return msgspec.structs.replace(head, data=data)


def to_builtins(obj: Any) -> Any:
    """Plain dicts and lists, e.g. for printing or a DataFrame."""
    return msgspec.to_builtins(obj)


# --- batching ------------------------------------------------------------------------------

T = TypeVar("T")
B = TypeVar("B", bound=Batch)


def chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, max(len(rows), 1), size):
        yield rows[start:start + size]


def batched(make: type[B], rows: Sequence[Any], size: int, field: str,
            max_bytes: int | None = None, **fields: Any) -> list[B]:
    """Split one sweep/cycle/plan into chunk payloads sharing one batch id.

    Chunks hold at most ``size`` rows; with ``max_bytes``, a chunk whose JSON is larger is
    halved until it fits, since rows vary in size (a long command line) and a row count alone
    cannot promise the broker's message limit. An empty batch is still one chunk, so a reader
    sees that the sweep happened.
    """
    batch_id = new_id()
    pending: list[list[Any]] = [list(part) for part in chunks(rows, size)]
    parts: list[B] = []
    while pending:
        part_rows = pending.pop(0)
        part = make(batch=batch_id, **{field: part_rows}, **fields)
        if max_bytes is not None and len(part_rows) > 1 \
                and len(_encoder.encode(part)) > max_bytes - ENVELOPE_OVERHEAD:
            half = len(part_rows) // 2
            pending[:0] = [part_rows[:half], part_rows[half:]]
            continue
        parts.append(part)
    for i, part in enumerate(parts):
        part.chunk, part.chunks = i, len(parts)
    return parts


class Chunks(Generic[B]):
    """The other end of ``batched``: collects the chunks of batches as they arrive.

    ``add`` gives a batch's chunks in chunk order once the last of them has come, else
    None. At most ``keep`` batches wait at once: one whose chunk was lost is dropped once
    ``keep`` newer ones have begun, so a lost message never holds memory for ever.
    """

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._waiting: dict[str, list[B]] = {}

    def add(self, part: B) -> list[B] | None:
        parts = self._waiting.setdefault(part.batch, [])
        parts.append(part)
        if len(parts) < part.chunks:
            while len(self._waiting) > self.keep:
                self._waiting.pop(next(iter(self._waiting)))
            return None
        del self._waiting[part.batch]
        return sorted(parts, key=lambda p: p.chunk)

    def clear(self) -> None:
        self._waiting.clear()


def joined(parts: Sequence[Any], field: str) -> list[Any]:
    """The rows of a whole batch: each chunk's ``field``, in chunk order."""
    return [row for part in parts for row in getattr(part, field)]
