"""The long steps' progress on a terminal, and nothing of it in a log."""
from __future__ import annotations

import io

from rich.console import Console

from corelane.cli.progress import BrokerProgress
from pipeline.kafka.broker import MavenStep

STEPS = [MavenStep("downloading", "kafka_2.13-4.4.0.pom"),
         MavenStep("downloaded", "kafka_2.13-4.4.0.pom", 3_900),
         MavenStep("downloaded", "kafka_2.13-4.4.0.jar", 6_100_000),
         MavenStep("copied", "kafka_2.13-4.4.0.jar")]


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=160, color_system=None), out


def fetch_and_start(progress: BrokerProgress) -> None:
    """What a cold start with the jars missing tells its progress."""
    for step in STEPS:
        progress.maven(step)
    progress.waiting(3.0, 60.0)
    progress.answered()


def test_on_a_terminal_the_fetch_counts_artifacts_and_the_start_fills_its_bar() -> None:
    screen, out = console(terminal=True)
    with BrokerProgress(screen, "the Kafka broker at 127.0.0.1:9092") as progress:
        fetch_and_start(progress)
    text = out.getvalue()
    assert "2 files (6.1 MB) fetched, 1 jars in place" in text
    assert "starting the Kafka broker at 127.0.0.1:9092" in text
    assert "3 of at most 60 s" in text
    # the last frame: the fetch done, the broker answering
    last = text.rsplit("\r", 1)[-1]
    assert "✓ resolving the Kafka broker's jars" in last
    assert "the Kafka broker at 127.0.0.1:9092 answers" in last


def test_in_a_log_it_draws_nothing() -> None:
    log, out = console(terminal=False)
    with BrokerProgress(log) as progress:
        fetch_and_start(progress)
    assert out.getvalue() == ""
