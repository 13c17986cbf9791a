"""The event log's schema: the envelope, one typed payload per event type, and its JSON codec.

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
from typing import Any, Generic, TypeVar, Union

import msgspec

SCHEMA_VERSION = 1
# Bytes the envelope adds around its data, with room to spare (ids, host, type, numbers).
ENVELOPE_OVERHEAD = 512


# --- payloads ------------------------------------------------------------------------------

class HostSample(msgspec.Struct, kw_only=True):
    """One sweep of host-wide figures."""
    cpu_percent: list[float]                 # per logical CPU, 0..100, since the last sweep
    cpu_freq_khz: list[float | None]         # per logical CPU, current frequency
    load: tuple[float, float, float]         # 1, 5, 15 minute load averages
    mem_total_bytes: int
    mem_available_bytes: int
    swap_used_bytes: int = 0
    temperatures_c: dict[str, float] = {}    # sensor label -> degrees; empty where none
    boot_time: float = 0.0
    interval_s: float = 0.0
    # The host's CPU topology (Topology.to_dict()), on a collector's first sweep and every
    # few minutes after: an allocator planning for this host from elsewhere needs it.
    topology: dict[str, Any] | None = None


class ProcessSample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One process at one sweep. Counters are cumulative and cover every thread."""
    pid: int
    start_time: int                          # clock ticks since boot: with pid, the identity
    ppid: int
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
    threads: int = 1
    vol_ctx: int = 0                         # voluntary context switches, all threads
    invol_ctx: int = 0                       # involuntary context switches, all threads
    run_time_ns: int = 0                     # /proc/PID/schedstat field 1, all threads
    run_delay_ns: int = 0                    # field 2: time runnable but waiting for a CPU
    timeslices: int = 0                      # field 3
    io_read_bytes: int = 0                   # storage reads (/proc/PID/io read_bytes)
    io_write_bytes: int = 0
    io_rchar: int = 0                        # all reads incl. sockets and pipes
    io_wchar: int = 0
    last_cpu: int = -1
    nice: int = 0
    policy: int = 0                          # SCHED_OTHER=0, FIFO=1, RR=2, BATCH=3, IDLE=5
    rt_priority: int = 0
    affinity: str = ""                       # cpu list as the kernel prints it, e.g. "0-3,8"
    kernel_thread: bool = False


class ContainerSample(msgspec.Struct, kw_only=True):
    id: str                                  # full container id
    name: str
    image: str = ""
    status: str = ""
    labels: dict[str, str] = {}
    pids: list[int] = []
    cpuset: str = ""                         # "" means all CPUs
    cpu_shares: int = 0                      # 0 means the engine default (1024)
    cpu_share: float = 0.0                   # cores used since the last sweep
    memory_bytes: int = 0


class Batch(msgspec.Struct, kw_only=True):
    """Shared by every batched payload: which batch and which chunk of it."""
    batch: str                               # id shared by the chunks of one sweep/cycle/plan
    chunk: int = 0
    chunks: int = 1


class ProcessSamples(Batch, kw_only=True):
    interval_s: float = 0.0
    samples: list[ProcessSample] = []


class ContainerSamples(Batch, kw_only=True):
    interval_s: float = 0.0
    samples: list[ContainerSample] = []


class Label(msgspec.Struct, kw_only=True):
    """An explicit class for one process, or for every process whose name/cmdline matches."""
    cls: str
    pid: int | None = None
    start_time: int | None = None
    match: str | None = None                 # regular expression over name and cmdline
    author: str = ""


class Classification(msgspec.Struct, kw_only=True):
    pid: int
    start_time: int
    cls: str
    tier: str
    confidence: float
    source: str                              # "label" | "rule" | "model"
    reason: str = ""


class Classifications(Batch, kw_only=True):
    items: list[Classification] = []


class Decision(msgspec.Struct, kw_only=True):
    target: str                              # "process" | "container" | "cpu"
    tier: str
    cpus: str                                # cpu list
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    nice: int | None = None
    ioclass: str | None = None               # "rt" | "be" | "idle"
    iolevel: int | None = None
    policy: str | None = None                # "other" | "batch" | "idle" | "fifo" | "rr"
    cpu_shares: int | None = None
    idle_latency_us: int | None = None       # target "cpu": its idle-state limit (0 = poll)
    reason: str = ""


class Decisions(Batch, kw_only=True):
    plan_seq: int = 0
    mode: str = "balanced"
    items: list[Decision] = []


class Enforcement(msgspec.Struct, kw_only=True):
    target: str
    outcome: str                             # "applied" | "skipped" | "failed"
    pid: int | None = None
    start_time: int | None = None
    container_id: str | None = None
    reason: str = ""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}


class Enforcements(Batch, kw_only=True):
    plan_seq: int = 0
    items: list[Enforcement] = []


class Alert(msgspec.Struct, kw_only=True):
    kind: str
    message: str
    severity: str = "info"                   # "info" | "warning" | "error"
    details: dict[str, Any] = {}


class Command(msgspec.Struct, kw_only=True):
    name: str
    args: dict[str, Any] = {}


class DeadLetter(msgspec.Struct, kw_only=True):
    """A message a reader could not read, kept whole with the reason."""
    topic: str
    partition: int
    offset: int
    reason: str
    key: str | None = None
    payload: str = ""                        # the raw bytes, decoded as UTF-8 with replacement


Payload = Union[HostSample, ProcessSamples, ContainerSamples, Label, Classifications,
                Decisions, Enforcements, Alert, Command, DeadLetter]

# event type -> (payload class, topic suffix). One topic per type, named in DESIGN.md.
EVENT_TYPES: dict[str, tuple[type, str]] = {
    "host_sample": (HostSample, "samples.host"),
    "process_samples": (ProcessSamples, "samples.process"),
    "container_samples": (ContainerSamples, "samples.container"),
    "label": (Label, "labels"),
    "classifications": (Classifications, "classifications"),
    "decisions": (Decisions, "decisions"),
    "enforcements": (Enforcements, "enforcements"),
    "alert": (Alert, "alerts"),
    "command": (Command, "commands"),
    "deadletter": (DeadLetter, "deadletter"),
}
TYPE_OF_PAYLOAD: dict[type, str] = {cls: name for name, (cls, _) in EVENT_TYPES.items()}
TOPIC_SUFFIXES: tuple[str, ...] = tuple(suffix for _, suffix in EVENT_TYPES.values())


def topic_name(event_type: str, prefix: str = "corelane.") -> str:
    return prefix + EVENT_TYPES[event_type][1]


def all_topics(prefix: str = "corelane.") -> list[str]:
    return [prefix + suffix for suffix in TOPIC_SUFFIXES]


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
        return EVENT_TYPES[self.type][1]


class EventDecodeError(ValueError):
    """A message that is not a readable corelane event; the text is the reason."""


_encoder = msgspec.json.Encoder()
_raw_decoder = msgspec.json.Decoder(Envelope[msgspec.Raw])
_payload_decoders = {name: msgspec.json.Decoder(cls) for name, (cls, _) in EVENT_TYPES.items()}


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
