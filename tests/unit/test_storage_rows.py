"""Envelopes -> Arrow tables: types, values, empty chunks, one row per non-batched event."""
from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa
import pytest

from pipeline.events import (Alert, Classification, Classifications, Command, ContainerSample,
                             ContainerSamples, DeadLetter, Decision, Decisions, Enforcement,
                             Enforcements, HostSample, Label, ProcessSample, ProcessSamples,
                             envelope)
from storage import rows

T = 1_764_230_400.25  # 2025-11-27 08:00:00.25 UTC


def proc(pid: int, **kw) -> ProcessSample:
    return ProcessSample(pid=pid, start_time=pid * 10, ppid=1, name=f"p{pid}", **kw)


def test_process_samples_columns_typed_and_repeated_per_item() -> None:
    e = envelope(ProcessSamples(batch="b1", chunk=1, chunks=3, interval_s=1.0,
                                samples=[proc(1, cpu_share=0.5, run_delay_ns=2**40,
                                              kernel_thread=True, container_id="c1"),
                                         proc(2, uid=4_294_967_294)]),
                 "h1", 7, ts=T, event_id="e1")
    table = rows.flatten([e])["process_samples"]
    assert table.num_rows == 2
    assert table.schema.field("pid").type == pa.int32()
    assert table.schema.field("start_time").type == pa.int64()
    assert table.schema.field("ts").type == pa.timestamp("us")
    got = table.to_pylist()
    assert [r["event_id"] for r in got] == ["e1", "e1"]
    assert [r["chunk"] for r in got] == [1, 1] and got[0]["chunks"] == 3
    assert got[0]["ts"] == datetime(2025, 11, 27, 8, 0, 0, 250000)
    assert got[0]["run_delay_ns"] == 2**40 and got[0]["kernel_thread"] is True
    assert got[0]["container_id"] == "c1" and got[1]["container_id"] is None
    assert got[1]["uid"] == 4_294_967_294 and got[1]["start_time"] == 20
    assert got[0]["seq"] == 7 and got[0]["host"] == "h1" and got[0]["interval_s"] == 1.0


def test_empty_chunk_is_one_row_with_item_columns_null() -> None:
    full = envelope(ProcessSamples(batch="b", samples=[proc(1), proc(2), proc(3)]), "h", 1,
                    ts=T, event_id="full")
    empty = envelope(ProcessSamples(batch="b", chunk=1, chunks=2), "h", 2, ts=T + 1,
                     event_id="empty")
    got = rows.flatten([empty, full])["process_samples"].to_pylist()
    assert len(got) == 4
    (blank,) = [r for r in got if r["event_id"] == "empty"]
    assert blank["batch"] == "b" and blank["seq"] == 2 and blank["chunk"] == 1
    assert blank["pid"] is None and blank["name"] is None and blank["cpu_share"] is None
    assert sorted(r["pid"] for r in got if r["event_id"] == "full") == [1, 2, 3]
    # every envelope column lines up with its own items
    assert all(r["seq"] == 1 for r in got if r["event_id"] == "full")


def test_batched_types_map_fields_to_columns() -> None:
    envs = [
        envelope(Classifications(batch="c", items=[Classification(
            pid=5, start_time=50, cls="web", tier="critical", confidence=0.75,
            source="rule", reason="r")]), "h", 1, ts=T),
        envelope(Decisions(batch="d", plan_seq=9, mode="emergency", items=[Decision(
            target="process", tier="critical", cpus="0-1", pid=5, start_time=50, nice=-5,
            policy="fifo")]), "h", 2, ts=T),
        envelope(Enforcements(batch="e", plan_seq=9, items=[Enforcement(
            target="process", outcome="failed", pid=5, start_time=50, reason="EPERM",
            before={"nice": 0, "cpus": [0, 1]}, after={})]), "h", 3, ts=T),
        envelope(ContainerSamples(batch="k", samples=[ContainerSample(
            id="abc", name="db", labels={"tier": "gold"}, pids=[1, 2], cpu_shares=512)]),
            "h", 4, ts=T),
    ]
    out = rows.flatten(envs)
    cls = out["classifications"].to_pylist()[0]
    assert cls["class"] == "web" and cls["tier"] == "critical" and cls["confidence"] == 0.75
    dec = out["decisions"].to_pylist()[0]
    assert dec["plan_seq"] == 9 and dec["mode"] == "emergency" and dec["nice"] == -5
    assert dec["ioclass"] is None and dec["policy"] == "fifo"
    enf = out["enforcements"].to_pylist()[0]
    assert json.loads(enf["before"]) == {"nice": 0, "cpus": [0, 1]}
    assert enf["after"] == "{}" and enf["outcome"] == "failed"
    con = out["container_samples"].to_pylist()[0]
    assert con["container_id"] == "abc" and con["labels"] == [("tier", "gold")]
    assert con["pids"] == [1, 2] and con["cpu_shares"] == 512


def test_single_row_types() -> None:
    envs = [
        envelope(HostSample(cpu_percent=[10.0, 90.0], cpu_freq_khz=[None, 2.4e6],
                            load=(1.5, 1.0, 0.5), mem_total_bytes=8 << 30,
                            mem_available_bytes=4 << 30, temperatures_c={"pkg": 55.0}),
                 "h", 1, ts=T),
        envelope(Label(cls="batch", match="^ffmpeg"), "h", 2, ts=T),
        envelope(Alert(id="k-1", rule="k", opened_at=1.0, message="m", details={"a": 1}), "h", 3, ts=T),
        envelope(Command(name="mode", args={"mode": "emergency"}), "h", 4, ts=T),
        envelope(DeadLetter(topic="t", partition=2, offset=2**33, reason="bad json",
                            key=None, reader="recorder", size=1, sha256="ab",
                            payload_b64="ew=="), "h", 5, ts=T),
    ]
    out = rows.flatten(envs)
    host = out["host_samples"].to_pylist()[0]
    assert host["cpu_percent"] == [10.0, 90.0] and host["cpu_freq_khz"] == [None, 2.4e6]
    assert (host["load1"], host["load5"], host["load15"]) == (1.5, 1.0, 0.5)
    assert host["temperatures_c"] == [("pkg", 55.0)] and host["mem_total_bytes"] == 8 << 30
    label = out["labels"].to_pylist()[0]
    assert label["class"] == "batch" and label["pid"] is None and label["match"] == "^ffmpeg"
    assert json.loads(out["alerts"].to_pylist()[0]["details"]) == {"a": 1}
    assert json.loads(out["commands"].to_pylist()[0]["args"]) == {"mode": "emergency"}
    dead = out["deadletter"].to_pylist()[0]
    assert dead["offset"] == 2**33 and dead["partition"] == 2 and dead["key"] is None
    assert (dead["reader"], dead["size"], dead["payload_b64"]) == ("recorder", 1, "ew==")


def test_unknown_type_is_refused() -> None:
    e = envelope(Label(cls="x"), "h", 1, ts=T)
    e.type = "mystery"
    with pytest.raises(ValueError, match="mystery"):
        rows.flatten([e])


def test_every_event_reads_back_from_the_history_as_it_was_written(tmp_path) -> None:
    from storage.history import HistoryStore
    from storage.schema import SPECS
    from unit.test_events import SAMPLES

    # One of each event type, and an empty chunk, which is one row with NULL item columns.
    payloads = [*SAMPLES, ProcessSamples(batch="b9", chunk=1, chunks=2, interval_s=1.0)]
    written = [envelope(p, "h1", i, ts=T + i * 0.000_001, event_id=f"e{i}")
               for i, p in enumerate(payloads)]
    with HistoryStore(tmp_path / "h.duckdb") as store:
        store.write([("t", 0, i, e) for i, e in enumerate(written)])
        read = []
        for event_type, spec in SPECS.items():
            unflat = rows.Unflattener(event_type)
            cur = store.cursor().sql(
                f"SELECT {rows.select_list(spec)} FROM {spec.table} ORDER BY ts, rowid")
            for batch in cur.to_arrow_reader(2):      # small batches: events span them
                read += unflat.feed(batch)
            read += unflat.close()
    by_id = {e.id: e for e in read}
    assert sorted(by_id) == sorted(e.id for e in written)
    for e in written:
        assert by_id[e.id] == e, e.type
