"""The event schema: every type round-trips, batches chunk and fit, bad input is explained."""
from __future__ import annotations

import json

import msgspec
import pytest

from pipeline import events as ev
from pipeline.bus import Stamper


def _process(pid: int, cmdline: str = "") -> ev.ProcessSample:
    return ev.ProcessSample(pid=pid, start_time=1000 + pid, ppid=1, name=f"worker-{pid}",
                            cmdline=cmdline or f"/usr/bin/worker --id {pid}", cpu_share=0.25,
                            vol_ctx=10, invol_ctx=2, run_delay_ns=12345, affinity="0-1")


SAMPLES: list[ev.Payload] = [
    ev.HostSample(cpu_percent=[12.5, 3.0], cpu_freq_khz=[2_400_000.0, None], load=(0.5, 0.4, 0.3),
                  mem_total_bytes=8 << 30, mem_available_bytes=4 << 30,
                  temperatures_c={"Package id 0": 51.0}),
    ev.ProcessSamples(batch="b1", chunk=0, chunks=1, interval_s=1.0,
                      samples=[_process(1), _process(2)]),
    ev.ContainerSamples(batch="b2", samples=[ev.ContainerSample(
        id="c" * 64, name="db", labels={"tier": "critical"}, pids=[10, 11], cpuset="0-1",
        cpu_shares=512, cpu_share=0.7)]),
    ev.Label(cls="latency_critical", pid=42, start_time=999, author="ops"),
    ev.Label(cls="compute_batch", match="^make$"),
    ev.Classifications(batch="b3", items=[ev.Classification(
        pid=1, start_time=2, cls="idle", tier="background", confidence=0.9, source="rule",
        reason="rule sleepers")]),
    ev.Decisions(batch="b4", plan_seq=7, mode="balanced", items=[ev.Decision(
        target="process", tier="critical", cpus="2-3", pid=1, start_time=2, nice=-5,
        ioclass="be", iolevel=0, policy="other", reason="latency_critical")]),
    ev.ShadowDecisions(batch="b4s", plan_seq=3, policy="no-exclusive", items=[ev.Decision(
        target="process", tier="critical", cpus="0-3", pid=1, start_time=2, nice=-5,
        policy="other", reason="latency_critical")]),
    ev.Enforcements(batch="b5", plan_seq=7, items=[ev.Enforcement(
        target="process", outcome="applied", pid=1, start_time=2,
        before={"cpus": "0-3"}, after={"cpus": "2-3"})]),
    ev.Alert(id="drift-1", rule="drift", opened_at=1.0, message="model drift on host a",
             severity="warning"),
    ev.Command(name="mode", args={"mode": "emergency"}),
    ev.Configuration(hash="ab" * 32, source="corelane.yml", settings={"kafka": {"partitions": 1}}),
    ev.StrategyChoice(strategy="shared", state="chosen", reason="p99 40 µs against ...",
                      previous="exclusive", figures={"shared": {"p99_us": 40.0}}),
    ev.Measurement(strategy="shared", plan_id="b4", cpus="0-1", wakeups=300, interval_us=1000,
                   p50_us=12.0, p99_us=40.5, max_us=90.0, span_s=0.36, batch_cpu=1.9),
    ev.ModelSnapshot(origin="w1:42", kind="logistic", learned=12, n_learned=30,
                     scaler={"cpu_mean": [30, 0.4, 0.01]},
                     classes={"idle": {"intercept": -0.3, "weights": {"cpu_mean": -1.5}}}),
    ev.DeadLetter(topic="corelane.labels", partition=0, offset=5, reason="not JSON",
                  reader="classifier", size=9, sha256="0" * 64, payload_b64="/2dhcmJhZ2U="),
]


def test_every_event_type_has_a_sample_here() -> None:
    assert {ev.TYPE_OF_PAYLOAD[type(s)] for s in SAMPLES} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip(payload: ev.Payload) -> None:
    event = ev.envelope(payload, host="h1", seq=3, ts=1764230400.123)
    raw = ev.encode(event)
    assert ev.decode(raw) == event
    plain = json.loads(raw)  # any Kafka client can read it as plain JSON
    assert set(plain) == {"id", "type", "v", "ts", "host", "seq", "data"}
    assert plain["type"] == ev.TYPE_OF_PAYLOAD[type(payload)]


def test_topics_follow_the_design() -> None:
    assert [ev.topic_name(t) for t in ev.EVENT_TYPES] == [
        "corelane.samples.host", "corelane.samples.process", "corelane.samples.container",
        "corelane.labels", "corelane.classifications", "corelane.decisions",
        "corelane.shadow.decisions",
        "corelane.enforcements", "corelane.alerts", "corelane.commands",
        "corelane.configuration", "corelane.strategy", "corelane.measurements",
        "corelane.model.snapshots", "corelane.deadletter"]
    assert ev.topic_name("process_samples", "x.") == "x.samples.process"


@pytest.mark.parametrize("raw, reason", [
    (None, "empty message"),
    (b"\x00\x01 not json", "not a corelane envelope"),
    (b'{"id": "a"}', "not a corelane envelope"),
    (b'{"id":"a","type":"gossip","v":1,"ts":1.0,"host":"h","seq":1,"data":{}}',
     "unknown event type 'gossip'"),
    (b'{"id":"a","type":"label","v":99,"ts":1.0,"host":"h","seq":1,"data":{"cls":"x"}}',
     "schema version 99 is newer"),
    (b'{"id":"a","type":"label","v":1,"ts":1.0,"host":"h","seq":1,"data":{"pid":"x"}}',
     "bad label data"),
])
def test_unreadable_messages_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(ev.EventDecodeError, match=reason):
        ev.decode(raw)


def test_non_payloads_are_refused() -> None:
    with pytest.raises(TypeError, match="not a corelane event payload"):
        ev.envelope({"pid": 1}, host="h", seq=1)  # type: ignore[arg-type]


def test_batches_chunk_and_share_an_id() -> None:
    rows = [_process(i) for i in range(1001)]
    parts = ev.batched(ev.ProcessSamples, rows, 250, "samples", interval_s=1.0)
    assert [len(p.samples) for p in parts] == [250, 250, 250, 250, 1]
    assert {p.batch for p in parts} == {parts[0].batch}
    assert [(p.chunk, p.chunks) for p in parts] == [(i, 5) for i in range(5)]
    assert [s.pid for p in parts for s in p.samples] == list(range(1001))


def test_an_empty_sweep_is_still_one_message() -> None:
    parts = ev.batched(ev.ProcessSamples, [], 250, "samples")
    assert len(parts) == 1 and parts[0].samples == [] and parts[0].chunks == 1


def test_large_rows_are_split_until_they_fit() -> None:
    rows = [_process(i, cmdline="x" * 4000) for i in range(100)]
    limit = 50_000
    parts = ev.batched(ev.ProcessSamples, rows, 100, "samples", max_bytes=limit)
    assert len(parts) > 1
    stamper = Stamper("h")
    assert all(len(ev.encode(stamper.stamp(p))) <= limit for p in parts)
    assert [s.pid for p in parts for s in p.samples] == list(range(100))
    assert [p.chunk for p in parts] == list(range(len(parts)))


def test_a_thousand_process_sweep_stays_well_under_the_message_limit() -> None:
    # Realistic rows with every field set: a whole sweep is a large share of the 1 MB limit
    # in JSON, so it travels as several smaller messages.
    rows = [msgspec.structs.replace(_process(i, cmdline="/usr/lib/jvm/java -Xmx4g " * 6),
                                    io_read_bytes=123456789, io_write_bytes=987654,
                                    rss_bytes=123456789, vm_bytes=987654321,
                                    cgroup="/system.slice/some-service.service")
            for i in range(1000)]
    whole = len(msgspec.json.encode(rows))
    parts = ev.batched(ev.ProcessSamples, rows, 250, "samples", max_bytes=1_000_000)
    sizes = [len(ev.encode(ev.envelope(p, host="h", seq=1))) for p in parts]
    assert whole > 400_000
    assert len(parts) == 4 and max(sizes) < 150_000


def test_stamper_numbers_each_stream() -> None:
    stamper = Stamper("h")
    a = stamper.stamp(ev.Alert(id="k-1", rule="k", opened_at=1.0, message="m"))
    b = stamper.stamp(ev.Alert(id="k-1", rule="k", opened_at=1.0, message="m"))
    c = stamper.stamp(ev.Command(name="x"))
    assert (a.seq, b.seq, c.seq) == (1, 2, 1)
    assert a.id != b.id and a.host == "h"
