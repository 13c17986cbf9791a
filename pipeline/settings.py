"""Configuration: the YAML file, validated, with the environment's overrides.

Order of precedence: built-in defaults < the YAML file (``CORELANE_CONFIG`` or
``config/default.yml``) < environment variables (``CORELANE_KAFKA``, ``CORELANE_HOME``,
``CORELANE_DB``, ``CORELANE_API``). A wrong key, type or value raises ``ConfigError`` with
one message that names the file, the key path and what was expected.
"""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

import msgspec

from config import CONFIG_DIR, DEFAULT_CONFIG
from pipeline.events import Configuration, topic_name
from pipeline.hostpaths import HostPaths
from pipeline.patterns import check_regex
from pipeline.policy import Policy
from pipeline.vocabulary import (DAYS, DEFAULT_TIER_OF, STRATEGIES, Day, Mode, Strategy, Tier,
                                 check_class_map)

DEFAULT_RULES = CONFIG_DIR / "rules" / "default.yml"
# rules_file values that switch rules (and so the shipped priors) off.
NO_RULES: tuple[str, ...] = ("none", "off", "false", "")


class ConfigError(Exception):
    """Configuration that cannot be used; the message is meant for a person."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:9092, got {value!r}")
    return value


def _check_pem_file(value: str | None) -> str | None:
    """A PEM file a TLS connection reads: it must exist now, not at the first connect."""
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise ValueError(f"expected a readable PEM file, but {value!r} "
                         f"{'is not a file' if path.exists() else 'does not exist'}")
    return str(path)


class BrokerSettings(_Section):
    """The local broker (one node) or cluster (several) that `corelane kafka start` runs."""
    heap_mb: int = Field(768, ge=256, le=8192)   # per node
    start_timeout_s: float = Field(120.0, gt=0)
    # First KRaft controller port; node i listens on controller_port + i - 1. Null: the
    # port after the last broker port.
    controller_port: int | None = Field(None, ge=1, lt=65536)
    # Combined broker+controller nodes; each is its own JVM, data folder and pid file.
    nodes: int = Field(1, ge=1, le=9)
    # The certificate and key (PEM) each node presents on an SSL or SASL_SSL listener; the
    # nodes and their clients trust kafka.security.ca_file.
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("cert_file", "key_file")
    @classmethod
    def _files(cls, value: str | None) -> str | None:
        return _check_pem_file(value)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
ScramMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]


def protocol_uses_sasl(protocol: str) -> bool:
    """Whether a Kafka security protocol logs in (SASL_PLAINTEXT, SASL_SSL)."""
    return protocol.startswith("SASL_")


def protocol_uses_tls(protocol: str) -> bool:
    """Whether a Kafka security protocol encrypts (SSL, SASL_SSL)."""
    return protocol in ("SSL", "SASL_SSL")


class SecuritySettings(_Section):
    """How every Kafka client (publisher, readers, recorder, faust) connects, and how the
    local cluster listens: TLS with configured certificates and SASL/SCRAM."""
    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: ScramMechanism = "SCRAM-SHA-512"
    username: str | None = Field(None, min_length=1)
    # Never printed: shown as ********** in dumps and in the configuration event.
    # CORELANE_KAFKA_PASSWORD overrides it.
    password: SecretStr | None = None
    ca_file: str | None = None      # CA bundle that signed the brokers' certificates
    cert_file: str | None = None    # this client's certificate (mutual TLS), with key_file
    key_file: str | None = None
    check_hostname: bool = True     # the broker's certificate must name the address dialled

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _files(cls, value: str | None) -> str | None:
        return _check_pem_file(value)

    @property
    def uses_sasl(self) -> bool:
        return protocol_uses_sasl(self.protocol)

    @property
    def uses_tls(self) -> bool:
        return protocol_uses_tls(self.protocol)

    @model_validator(mode="after")
    def _pairs(self) -> SecuritySettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: a client certificate "
                             "needs its key")
        return self

    def problems(self) -> list[tuple[str, str]]:
        """What keeps these settings from connecting, as (key, why); checked once the
        environment is applied, since the password may come from there."""
        out = []
        if self.uses_sasl and not self.username:
            out.append(("username", f"protocol {self.protocol} logs in with a username"))
        if self.uses_sasl and (self.password is None or not self.password.get_secret_value()):
            out.append(("password", f"protocol {self.protocol} logs in with a password "
                                    "(set it here or in CORELANE_KAFKA_PASSWORD)"))
        return out


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "corelane."
    partitions: int = Field(1, ge=1, le=1024)
    # Copies of each partition; null: min(3, the cluster's nodes).
    replication_factor: int | None = Field(None, ge=1, le=9)
    # Copies that must have a write before it is acknowledged; null: 2 where the
    # replication factor is 3 or more, else 1.
    min_insync_replicas: int | None = Field(None, ge=1, le=9)
    compression: Literal["zstd", "lz4", "gzip", "none"] = "zstd"
    chunk_rows: int = Field(250, ge=1, le=5000)
    max_message_bytes: int = Field(1_000_000, ge=10_000)
    # How long the agents' consumer group waits for a member that stopped answering before
    # it hands that member's partitions on (after a crash, the restarted agents wait this).
    group_session_timeout_s: float = Field(10.0, ge=6, le=300)
    broker: BrokerSettings = BrokerSettings()
    security: SecuritySettings = SecuritySettings()

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for part in value.split(","):
            _check_hostport(part.strip())
        return value

    @model_validator(mode="after")
    def _replicas(self) -> KafkaSettings:
        factor, least = self.replication_factor, self.min_insync_replicas
        if factor is not None and least is not None and least > factor:
            raise ValueError(f"min_insync_replicas ({least}) cannot exceed "
                             f"replication_factor ({factor}): no write could ever succeed")
        return self

    def replication(self, nodes: int) -> tuple[int, int]:
        """(replication factor, min in-sync replicas) for topics on a cluster of ``nodes``."""
        factor = self.replication_factor or min(3, max(1, nodes))
        least = self.min_insync_replicas or (2 if factor >= 3 else 1)
        return factor, min(least, factor)


class CollectorSettings(_Section):
    interval_s: float = Field(1.0, gt=0, le=3600)
    # Sweeps wait in a buffer of at most this many bytes while the broker does not take
    # them; when it is full the oldest is dropped (and counted).
    buffer_bytes: int = Field(64 << 20, ge=1 << 20)
    # Multi-threaded processes have their per-thread switch and schedstat counters summed;
    # "leader" reads only the leader thread (cheaper, blind to worker threads).
    thread_detail: Literal["all", "leader"] = "all"
    containers: bool = True
    docker_host: str | None = None
    proc_root: str = "/"
    # A new process (seen at its fork or exec, or by a sweep) is sampled this often for its
    # first fast_for_s seconds, so that it is judged sooner; fast_for_s 0 turns that off.
    fast_every_s: float = Field(0.1, gt=0, le=10)
    fast_for_s: float = Field(2.0, ge=0, le=60)


class ApiSettings(_Section):
    listen: str = "127.0.0.1:8710"
    # The bearer token every POST needs. Null: CORELANE_TOKEN, else the token file that
    # `corelane up` creates under the home folder (mode 0600), which the CLI reads.
    token: str | None = Field(None, min_length=16)
    # false lets POSTs through without a token: only for a loopback-only test bench.
    require_token: bool = True
    # A live stream's backlog of events; a client slower than that loses it, and is told.
    stream_backlog: int = Field(1000, ge=10, le=1_000_000)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    # A GET answered within this many seconds is answered again from memory: the live view
    # changes once a sweep and the history once a flush, and a dashboard polls. 0: off.
    read_cache_s: float = Field(1.0, ge=0, le=60)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_hostport(value)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StorageSettings(_Section):
    """The DuckDB history: batching, retention, and limits on queries."""
    # Write a batch once this many rows wait. Each write has a fixed cost (commit, offsets)
    # of some milliseconds, so large batches are what lets a recorder catch up quickly.
    flush_rows: int = Field(20_000, ge=1)
    flush_interval_s: float = Field(2.0, gt=0)   # ... or once the oldest has waited this long
    # DuckDB's own memory ceiling for the history ("1GB", "512MB"); null: its default,
    # 80% of the machine's memory.
    memory_limit: str | None = Field("1GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    raw_retention_h: float = Field(24.0, gt=0)   # raw samples are kept this long
    rollup_retention_d: float = Field(30.0, gt=0)  # 1-minute aggregates are kept this long
    query_timeout_s: float = Field(10.0, gt=0)
    query_max_rows: int = Field(10_000, ge=1)
    query_max_bytes: int = Field(16 << 20, ge=1024)   # of one answer's values
    # After the history refused a batch (a full disk), recording pauses this long, then
    # reads again from the offsets the history holds.
    write_retry_s: float = Field(10.0, gt=0, le=3600)


class TopologySettings(_Section):
    profile: str | None = None               # a named profile instead of reading this host
    sys_root: str = "/"                      # where sys/devices/... is read from


class ClassifierSettings(_Section):
    """The classifier: rolling windows, sources and their precedence, the online model."""
    window_s: float = Field(20.0, gt=0, le=600)         # span of each process's feature window
    # Samples closer than this (a new process sampled fast) merge into one interval, so
    # features read the same at any sampling rate.
    min_interval_s: float = Field(0.9, ge=0)
    min_samples: int = Field(5, ge=2)                   # a window classifies once it holds
    min_span_s: float = Field(4.0, ge=0)                # ... this many samples over this span
    # A process's first seconds are its start-up (loading, an interpreter's imports): its
    # window starts after them, so a shell's start-up switches do not read as a timer's
    # wake-ups. Needs the host's boot time (from its host samples) to know a process's age.
    startup_s: float = Field(0.5, ge=0, le=60)
    early_min_samples: int = Field(2, ge=2)             # a first judgement into one of
    early_min_span_s: float = Field(0.2, ge=0)          # early_tiers needs only this much
    early_tiers: list[Tier] = ["ultra_critical"]
    batch_early_min_samples: int = Field(4, ge=2)       # a first judgement into one of
    batch_early_min_span_s: float = Field(1.0, ge=0)    # batch_early_tiers needs this much
    batch_early_tiers: list[Tier] = ["low"]
    hysteresis_windows: int = Field(3, ge=1)            # windows agreeing before a model change
    heartbeat_s: float = Field(60.0, gt=0)              # re-emit an unchanged class this often
    min_model_confidence: float = Field(0.5, ge=0, le=1)
    learn: bool = True                                  # learn online from labels and rules
    learn_min_rule_confidence: float = Field(0.9, ge=0, le=1)
    prior_learn_interval_s: float = Field(10.0, ge=0)   # a prior teaches one window per
                                                        # process this often (0: every one)
    model: Literal["hoeffding_adaptive", "hoeffding", "logistic", "naive_bayes",
                   "forest"] = "logistic"
    drift_delta: float = Field(0.002, gt=0, lt=1)       # ADWIN sensitivity for drift alerts
    snapshot_interval_s: float = Field(300.0, gt=0)
    snapshot_dir: str | None = None                     # defaults to <home>/models
    # YAML rules; null means the shipped behaviour priors, "none" means no rules at all.
    rules_file: str | None = Field(None, validate_default=True)
    expire_s: float = Field(60.0, gt=0)                 # forget a process unseen this long
    classes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TIER_OF))

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_class_map(value)

    @field_validator("rules_file", mode="before")
    @classmethod
    def _rules_file(cls, value: Any) -> Any:
        """Resolved once here, so every reader of ``rules_file`` loads the same file.

        null: the shipped ``config/rules/default.yml`` (behaviour priors that classify a
        host with no labels). ``none`` (or ``off``, ``false``): no rules, stored as None. A
        relative path is looked up in the shipped config folder first (``rules/example.yml``),
        then taken as given (relative to the working directory)."""
        if value is None:
            return str(DEFAULT_RULES)
        if value is False or (isinstance(value, str) and value.strip().lower() in NO_RULES):
            return None
        if isinstance(value, str):
            path = Path(os.path.expanduser(value))
            if not path.is_absolute() and (CONFIG_DIR / path).exists():
                return str(CONFIG_DIR / path)
            return str(path)
        return value

    def rules_sha256(self) -> str:
        """The rule file's sha256 ("" without one, or when it cannot be read): a replay
        tells by it whether the rules it loads are the ones that were in force."""
        path = self.rules_path
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() if path else ""
        except OSError:
            return ""

    @property
    def rules_path(self) -> Path | None:
        """The rule file to load, or None when rules are off."""
        return Path(self.rules_file) if self.rules_file else None


class ScheduleEntry(_Section):
    """A mode for a span of the day (local time), e.g. trading hours."""
    mode: Mode
    start: str                                   # "HH:MM", inclusive
    end: str                                     # "HH:MM", exclusive; before start wraps midnight
    days: list[Day] = list(DAYS)

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24
                and int(minutes) < 60):
            raise ValueError(f"expected a time of day as HH:MM, got {value!r}")
        return value


class ThermalSettings(_Section):
    """What the allocator does while a core is hot: a core is hot from ``hot_c`` until it
    cools below ``cool_c``. ``move`` takes the low and background tiers off the hot cores
    (where a cool core is left for them); ``power_save`` plans the whole host in power_save
    mode until every core has cooled. Below an operator's mode command, above the schedule."""
    hot_c: float | None = Field(90.0, gt=0, le=150)      # null: off
    cool_c: float = Field(80.0, gt=0, le=150)
    action: Literal["move", "power_save"] = "move"

    @field_validator("cool_c")
    @classmethod
    def _cooler(cls, value: float, info: Any) -> float:
        hot = info.data.get("hot_c")
        if hot is not None and value >= hot:
            raise ValueError(f"expected cool_c below hot_c ({hot:g} °C), got {value:g}: "
                             f"a core must cool before it counts as cool again")
        return value


class AllocatorSettings(_Section):
    """Which cores, nice level, I/O class and policy each tier gets."""
    interval_s: float = Field(5.0, gt=0)         # plan this often (and at once on a class change)
    mode: Mode = "balanced"
    schedule: list[ScheduleEntry] = []           # first entry that covers now wins over `mode`
    heartbeat_s: float = Field(60.0, gt=0)       # republish an unchanged plan this often
    # memory pressure (PSI memory "full" avg10, %) at which a host goes to emergency, until
    # it falls below half of it; null: off
    memory_pressure_emergency: float | None = Field(None, gt=0, le=100)
    thermal: ThermalSettings = ThermalSettings()
    policy: Policy = Field(default_factory=Policy)


class ClosedLoopSettings(_Section):
    """Measure what the placement does on this host, and keep the strategy that measures best.

    A small built-in probe (corelane's own, like a tiny cyclictest) sleeps ``probe_interval_us``
    ``probe_wakeups`` times where the critical tiers run and with their priorities, and
    records how late it wakes. While the critical tiers have members, each strategy is
    tried in turn for ``trial_checks`` checks, and the best kept; it is undone when its last
    ``undo_after_checks`` checks measure worse than the best of the others. Beside busy
    batch work only a strategy that leaves it ``batch_share`` of its CPU can be kept.
    """
    enabled: bool = True
    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    # In force until the first trials have measured: the critical tiers' own cores, lent to
    # batch work, keep work not judged yet off them and batch work at its throughput.
    initial: Strategy = "exclusive_lend"
    probe_interval_us: int = Field(1000, ge=50, le=100_000)
    probe_wakeups: int = Field(500, ge=10, le=100_000)
    settle_s: float = Field(6.0, ge=0)           # after critical work appears, wait this
                                                 # long (the rest judged) before trying
    explore_every_s: float = Field(1.0, gt=0)    # a check this often while trying strategies
    check_every_s: float = Field(10.0, gt=0)     # ... and this often once one is chosen
    trial_checks: int = Field(3, ge=1)
    cut_after: float = Field(2.0, ge=1)          # a trial ends after one check this many
                                                 # times worse (p99) than the best so far
    tolerance: float = Field(0.5, ge=0)          # p99 within this share of the best, plus
    tolerance_us: float = Field(10.0, ge=0)      # ... this, counts as good as the best; of
                                                 # those, the one keeping most batch work wins
    batch_share: float = Field(0.9, ge=0, le=1)  # beside busy batch work, a strategy must
                                                 # leave it this share of the most CPU any
                                                 # other left it (0: latency alone decides)
    undo_after_checks: int = Field(3, ge=1)
    reexplore_s: float = Field(1800.0, gt=0)     # try every strategy again this often

    @field_validator("initial")
    @classmethod
    def _initial(cls, value: str, info: Any) -> str:
        given = info.data.get("strategies") or list(STRATEGIES)
        if value not in given:
            raise ValueError(f"closed_loop.initial {value!r} is not among closed_loop."
                             f"strategies ({', '.join(given)})")
        return value


# What an alert rule can watch: its unit (``above`` and ``clear_below`` are in it) and what
# it measures.
ALERT_SIGNALS: dict[str, tuple[str, str]] = {
    "run_queue_delay": ("ms/s", "time a tier's processes waited for a CPU, summed over them"),
    "pool_load": ("%", "a tier's own CPU use as a share of its pool's cores"),
    "core_temperature": ("°C", "a CPU's temperature (its core's sensor, else its package's)"),
    "memory_pressure": ("%", "share of the last 10 s some task waited on memory (PSI)"),
    "recorder_lag": ("s", "how far the history is behind the newest event it has read"),
}


class AlertRule(_Section):
    """Opens an alert once ``signal`` has stayed above ``above`` for ``for_s``, for each
    subject it measures (a tier, a pool, a CPU, the host, the recorder), and resolves it
    once the figure has stayed below ``clear_below`` for ``clear_for_s`` (the gap between
    the two is the hysteresis that keeps an alert from flapping)."""
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    signal: Literal[tuple(ALERT_SIGNALS)]  # type: ignore[valid-type]
    above: float = Field(gt=0)
    for_s: float = Field(30.0, ge=0)
    clear_below: float | None = Field(None, ge=0)   # null: 80% of `above`
    clear_for_s: float = Field(10.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    tiers: list[Tier] = []                          # run_queue_delay, pool_load: which ones
                                                    # (none: every tier)

    @field_validator("clear_below")
    @classmethod
    def _below(cls, value: float | None, info: Any) -> float | None:
        above = info.data.get("above")
        if value is not None and above is not None and value > above:
            raise ValueError(f"expected clear_below at or under above ({above:g}), got "
                             f"{value:g}: an alert resolves below where it opens")
        return value

    @property
    def clear_level(self) -> float:
        return self.above * 0.8 if self.clear_below is None else self.clear_below


def _default_alert_rules() -> list[AlertRule]:
    return [
        AlertRule(name="critical_run_queue_delay", signal="run_queue_delay", above=5.0,
                  clear_below=2.0, for_s=30, severity="critical",
                  tiers=["ultra_critical", "critical"]),
        AlertRule(name="pool_overcommitted", signal="pool_load", above=95.0, clear_below=80.0,
                  for_s=30),
        AlertRule(name="core_hot", signal="core_temperature", above=95.0, clear_below=85.0,
                  for_s=10, severity="critical"),
        AlertRule(name="memory_pressure", signal="memory_pressure", above=20.0,
                  clear_below=10.0, for_s=30),
        AlertRule(name="recorder_lagging", signal="recorder_lag", above=30.0, clear_below=10.0,
                  for_s=30),
    ]


class WebhookSettings(_Section):
    """Where alert transitions are posted: ``slack`` posts Slack-compatible JSON
    (``{"text": ...}``, for Slack, Mattermost or Rocket.Chat incoming webhooks); ``generic``
    posts the alert event itself. A failed post is retried with back-off (doubling from
    ``backoff_s`` up to ``max_backoff_s``) ``retries`` times, then dropped and counted."""
    url: str = Field(pattern=r"^https?://[^\s/]+")
    format: Literal["slack", "generic"] = "generic"
    min_severity: Literal["info", "warning", "critical"] = "info"
    timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(5, ge=0, le=100)
    backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)
    queue: int = Field(1000, ge=1)                 # transitions waiting; the oldest go first


class AlertSettings(_Section):
    """Rules corelane checks on every host sample, and where it says so. The classifier's
    model-drift alerts, the recorder's history-write alerts and the collector's container
    alerts are raised by those parts; every alert goes to the webhooks."""
    rules: list[AlertRule] = Field(default_factory=_default_alert_rules)
    webhooks: list[WebhookSettings] = []

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each rule needs its own name; given more than once: "
                             f"{', '.join(twice)}")
        return value


class ScopeSettings(_Section):
    pids: list[int] = []
    patterns: list[str] = []                     # regexes over name and command line
    cgroups: list[str] = []                      # cgroup path prefixes
    containers: list[str] = []                   # regexes over container name or id


class ApplierSettings(_Section):
    """What the applier may change, and what it never touches."""
    scope: Literal["all"] | ScopeSettings = "all"
    # Never changed at all (besides PID 1 and kernel threads): regexes over name/cmdline.
    protected: list[str] = ["^(systemd|init)$", "^systemd-", "^sshd", "^(dockerd|containerd)"]
    respect_overrides: bool = True               # leave what someone else changed after us
    # A plan's unchanged decisions are applied again (checked, and set where they drifted)
    # only this often; in between, only what changed is applied.
    reassert_s: float = Field(60.0, ge=0)
    journal_dir: str | None = None               # defaults to <home>/journal
    # The tier groups (allocator tier limits) live under this cgroup, one per tier.
    cgroup_root: str = Field("corelane", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    # Never moved out of: cgroup path prefixes (containers' groups and groups with limits
    # of their own are never left anyway).
    protected_cgroups: list[str] = []

    @field_validator("protected")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_regex(pattern)
        return value


class Settings(_Section):
    host_id: str | None = None               # defaults to the hostname
    home: str = "~/.local/share/corelane"
    db: str | None = None                    # defaults to <home>/corelane.duckdb
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Seconds the parts have, together, to stop on SIGTERM; then what is left is abandoned.
    stop_grace_s: float = Field(15.0, gt=0, le=600)
    # corelane's own process (and a broker it starts) runs at this nice, so that the load it
    # is there to place does not starve it of the CPU it needs to react; null: as started.
    own_nice: int | None = Field(-5, ge=-20, le=19)
    kafka: KafkaSettings = KafkaSettings()
    collector: CollectorSettings = CollectorSettings()
    api: ApiSettings = ApiSettings()
    topology: TopologySettings = TopologySettings()
    storage: StorageSettings = StorageSettings()
    allocator: AllocatorSettings = AllocatorSettings()
    applier: ApplierSettings = ApplierSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    closed_loop: ClosedLoopSettings = ClosedLoopSettings()
    alerts: AlertSettings = AlertSettings()

    source: str = Field("<defaults>", exclude=True)

    @property
    def host(self) -> str:
        return self.host_id or socket.gethostname()

    @property
    def home_path(self) -> Path:
        return Path(os.path.expanduser(self.home))

    @property
    def host_paths(self) -> HostPaths:
        """Where /proc and /sys are read from (``/`` on a live host)."""
        return HostPaths(proc_root=self.collector.proc_root, sys_root=self.topology.sys_root)

    @property
    def db_path(self) -> Path:
        return Path(os.path.expanduser(self.db)) if self.db else self.home_path / "corelane.duckdb"

    def topic(self, event_type: str) -> str:
        return topic_name(event_type, self.kafka.topic_prefix)

    def configuration(self, policy: str = "live") -> Configuration:
        """The effective configuration as an event: every setting, and a hash of them that
        is the same wherever the same settings came from."""
        effective = self.model_dump(mode="json")
        canonical = msgspec.json.encode(effective, order="sorted")
        return Configuration(hash=hashlib.sha256(canonical).hexdigest(), policy=policy,
                             source=self.source, settings=effective,
                             rules_sha256=self.classifier.rules_sha256())


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CORELANE_KAFKA": ("kafka", "bootstrap"),
    "CORELANE_HOME": ("home",),
    "CORELANE_DB": ("db",),
    "CORELANE_API": ("api", "listen"),
    "CORELANE_TOKEN": ("api", "token"),
    "CORELANE_HOST": ("host_id",),
    "CORELANE_KAFKA_PASSWORD": ("kafka", "security", "password"),
}


def _describe(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against config/default.yml)"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":  # our own validators already say what was expected
        return msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        what = "a mapping of settings"
    elif msg.startswith("Input should be "):
        what = msg[len("Input should be "):]
        if what.startswith(("greater", "less")):
            what = "a value " + what
    else:
        what = msg[0].lower() + msg[1:]
    got = error.get("input")
    shown = f", got {got!r}" if got is not None and not isinstance(got, (dict, list)) else ""
    return f"expected {what}{shown}"


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{origin}: key '{path}': {_describe(error)}")
    return "invalid configuration\n  " + "\n  ".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Load, merge and validate; raises ConfigError with a person's message."""
    env = os.environ if env is None else env
    file = Path(path or env.get("CORELANE_CONFIG") or DEFAULT_CONFIG)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from None
    return parse_settings(text, str(file), env)


def parse_settings(text: str, file: str, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from a configuration file's text (``file`` names it in errors), with the
    environment's overrides; raises ConfigError with a person's message."""
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of settings at the top level, "
                          f"got {type(raw).__name__}")
    try:
        settings = Settings.model_validate({**raw, "source": file})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, file)) from None

    for var, keys in ENV_OVERRIDES.items():
        value = env.get(var)
        if not value:
            continue
        section: Any = settings
        for key in keys[:-1]:
            section = getattr(section, key)
        try:
            setattr(section, keys[-1], value)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, f"environment variable {var}")
                              .replace(f"key '{keys[-1]}'", f"key '{'.'.join(keys)}'")) from None
    missing = settings.kafka.security.problems()
    if missing:
        raise ConfigError("invalid configuration\n  " + "\n  ".join(
            f"{file}: key 'kafka.security.{key}': {why}" for key, why in missing))
    return settings
