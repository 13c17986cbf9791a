"""Faults a running corelane must survive without losing history: here, messages no reader
can use, on a real broker and a real `corelane up --dry-run`."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from pipeline import events as ev
from support.corelane_instance import Instance
from support.waiting import wait_for

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    # A plain client with a larger request limit than corelane's: the broker takes both.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"intruder")
    finally:
        await producer.stop()


def rows(corelane: Instance, sql: str) -> list[list]:
    response = httpx.post(f"http://{corelane.api}/api/v1/query", json={"sql": sql}, timeout=30,
                          trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_a_huge_unreadable_message_is_dead_lettered_in_bounds_and_corelane_goes_on(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"e2e-poison-{os.getpid()}."
    corelane = Instance(tmp_path, kafka_bootstrap, prefix,
                        collector="{interval_s: 0.5, containers: false}",
                        closed_loop="{enabled: false}")
    junk = os.urandom(900_000)
    blob = ev.encode(ev.envelope(ev.Command(name="nothing", args={"blob": "x" * 1_039_700}),
                                 "intruder", 1))
    assert len(blob) > 1_000_000      # over corelane's own message limit
    corelane.start()
    try:
        corelane.wait_recording()
        asyncio.run(produce(kafka_bootstrap, prefix + "samples.process", junk))
        asyncio.run(produce(kafka_bootstrap, prefix + "commands", blob))
        digest = hashlib.sha256(junk).hexdigest()
        # The recorder and the three agents that read samples each say so once, in bounds.
        letters = wait_for("the dead-letter records", lambda: (lambda got: got if len(
            got) >= 4 else None)(rows(corelane, f"SELECT reader, size, length(payload_b64), "
                                                f"payload_b64 FROM deadletter WHERE sha256 = "
                                                f"'{digest}' ORDER BY reader")), timeout_s=60)
        assert [r[0] for r in letters] == ["alerter", "allocator", "classifier", "recorder"]
        for _, size, b64_len, b64 in letters:
            assert size == 900_000 and b64_len <= 64 * 1024 * 4 // 3 + 4
            assert base64.b64decode(b64) == junk[:64 * 1024]
        # The readable but oversized command is history like any other event.
        assert wait_for("the big command recorded", lambda: rows(
            corelane, "SELECT length(args->>'blob') FROM commands WHERE name = 'nothing'"))
        time.sleep(3)
        assert corelane.proc is not None and corelane.proc.poll() is None
        health = httpx.get(f"http://{corelane.api}/api/v1/health", timeout=10).json()
        assert health["ready"], health
        sweeps = rows(corelane, "SELECT count(DISTINCT batch) FROM process_samples")[0][0]
        wait_for("sweeps recorded after the poison", lambda: rows(
            corelane, "SELECT count(DISTINCT batch) FROM process_samples")[0][0] > sweeps + 2)
    finally:
        corelane.terminate()
    # And a restart reads past it: nothing dies on it again, nothing is recorded twice.
    corelane.start()
    try:
        corelane.wait_recording()
        time.sleep(2)
        assert corelane.proc.poll() is None
        counted = rows(corelane, f"SELECT count(*) FROM deadletter WHERE sha256 = '{digest}'")
        assert counted == [[4]]
    finally:
        corelane.terminate()


def test_a_stop_is_bounded_even_while_the_broker_hangs(kafka_broker, kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-hang-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        closed_loop="{enabled: false}")
    config = Path(corelane.env["CORELANE_CONFIG"])
    config.write_text(config.read_text() + "stop_grace_s: 4\n")
    broker = kafka_broker.read_pid()
    assert broker is not None
    corelane.start()
    try:
        corelane.wait_recording()
        os.kill(broker, signal.SIGSTOP)       # hung, not dead: connections stay open
        try:
            time.sleep(1)
            asked = time.monotonic()
            assert corelane.proc is not None
            corelane.proc.send_signal(signal.SIGTERM)
            try:
                corelane.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                corelane.proc.send_signal(signal.SIGABRT)   # its stacks go to the log
                corelane.proc.wait(timeout=10)
                raise AssertionError(corelane.log_text()[-15000:]) from None
            took = time.monotonic() - asked
        finally:
            os.kill(broker, signal.SIGCONT)
        assert corelane.proc.returncode == 0, corelane.log_text()[-3000:]
        # The grace period, the consumer's and publisher's 5 s each, and the loop's leftovers.
        assert took < 4 + 5 + 5 + 5 + 10, took
        log = corelane.log_text()
        assert "abandoned" in log and "stop_grace_s" in log
    finally:
        if corelane.proc is not None and corelane.proc.poll() is None:
            corelane.kill()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB tmpfs, mounted for this test only and unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    pad = disk / "pad"
    subprocess.run(["dd", "if=/dev/zero", f"of={pad}", "bs=64k"], capture_output=True)
    return pad


def test_a_full_disk_pauses_recording_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path,
                                                        small_disk: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-disk-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        storage="{write_retry_s: 1}", closed_loop="{enabled: false}")
    corelane.db = small_disk / "history.duckdb"
    corelane.env["CORELANE_DB"] = str(corelane.db)
    health = lambda: httpx.get(f"http://{corelane.api}/api/v1/health",  # noqa: E731
                               timeout=10, trust_env=False).json()
    corelane.start()
    try:
        corelane.wait_recording()
        pad = fill(small_disk)
        recorder = wait_for("health to say the history cannot be written", lambda: (
            lambda r: r if r["state"] == "degraded" and "cannot be written" in r["reason"]
            else None)(health()["parts"]["recorder"]), timeout_s=30)
        assert "nothing is lost" in recorder["reason"]
        # The rest goes on: sweeps and plans are still made and published.
        sweeps = health()["parts"]["collector"]["stats"]["sweeps"]
        time.sleep(3)
        assert health()["parts"]["collector"]["stats"]["sweeps"] > sweeps
        assert corelane.proc is not None and corelane.proc.poll() is None
        pad.unlink()
        wait_for("recording to go on", lambda: health()["parts"]["recorder"]["state"] == "ok",
                 timeout_s=60)
        # Nothing lost and nothing doubled: every host sample of this run once, in a row.
        first, last, count, distinct = rows(
            corelane, "SELECT min(seq), max(seq), count(*), count(DISTINCT seq) FROM "
                      "host_samples")[0]
        assert count == distinct == last - first + 1, (first, last, count, distinct)
        wait_for("the alert, opened and resolved", lambda: rows(
            corelane, "SELECT list(state ORDER BY ts) FROM alerts WHERE rule = 'history_write'"
        )[0][0] == ["open", "resolved"], timeout_s=30)
    finally:
        corelane.terminate()


def test_a_hung_broker_is_said_at_once_and_its_sweeps_wait_and_arrive(
        kafka_broker, kafka_bootstrap: str, tmp_path: Path) -> None:
    corelane = Instance(tmp_path, kafka_bootstrap, f"e2e-outage-{os.getpid()}.",
                        collector="{interval_s: 0.5, containers: false}",
                        closed_loop="{enabled: false}")
    health = lambda: httpx.get(f"http://{corelane.api}/api/v1/health",  # noqa: E731
                               timeout=10, trust_env=False).json()
    broker = kafka_broker.read_pid()
    assert broker is not None
    corelane.start()
    try:
        corelane.wait_recording()
        os.kill(broker, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            part = wait_for("the collector to say the broker is not taking sweeps", lambda: (
                lambda p: p if p["state"] == "degraded" and "buffer" in p["reason"] else None
            )(health()["parts"]["collector"]), timeout_s=20, every_s=0.1)
            said_after = time.monotonic() - stopped
            time.sleep(max(0.0, 10 - said_after))
            waiting = health()["parts"]["collector"]["stats"]["buffered_sweeps"]
        finally:
            os.kill(broker, signal.SIGCONT)
        # Within a couple of sweep intervals (0.5 s each), and sweeps went on meanwhile.
        assert said_after < 3.0, (said_after, part)
        assert waiting >= 10, waiting
        wait_for("the buffer to empty", lambda: health()["parts"]["collector"]["stats"][
            "buffered_sweeps"] == 0, timeout_s=90)
        stats = health()["parts"]["collector"]["stats"]
        assert stats["dropped_sweeps"] == 0
        wait_for("every sweep recorded, once and in a row", lambda: (lambda r: r[2] == r[3] == (
            r[1] - r[0] + 1) and r[1] >= stats["sweeps"] - 2)(rows(
                corelane, "SELECT min(seq), max(seq), count(*), count(DISTINCT seq) "
                          "FROM host_samples")[0]), timeout_s=60)
    finally:
        corelane.terminate()
