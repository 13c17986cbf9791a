"""The collector loop goes on when the broker does not take a sweep."""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.errors import RequestTimedOutError

from pipeline.bus import Stamper
from pipeline.collectors.collector import Collector, CollectorStats, KafkaSink, run_collector
from pipeline.events import Envelope, HostSample, encode, envelope
from pipeline.settings import load_settings
from pipeline.topology import load_profile


class FlakySink:
    """Refuses the first sweep as a timed-out broker would, then takes the rest."""

    def __init__(self) -> None:
        self.calls = 0
        self.taken: list[list[Envelope]] = []

    async def emit(self, events: list[Envelope]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RequestTimedOutError()
        self.taken.append(events)


async def test_a_sweep_the_broker_refuses_is_counted_and_the_loop_goes_on(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path)})
    settings.collector.containers = False
    collector = Collector(settings, Stamper("h"), load_profile("apple-m4-max"))
    sink = FlakySink()
    stats = await run_collector(collector, sink, count=3, interval_s=0.01)
    assert stats.sweeps == 3 and stats.dropped_sweeps == 1 and len(sink.taken) == 2
    assert "sweep not published" in stats.errors[-1]
    # The topology rode on the sweep that was lost, so it rides on the next one again.
    hosts = [e.data for events in sink.taken for e in events if isinstance(e.data, HostSample)]
    assert [h.topology is not None for h in hosts] == [True, False]


async def test_the_topology_rides_on_the_first_host_sample(tmp_path: Path) -> None:
    settings = load_settings(env={"CORELANE_HOME": str(tmp_path)})
    settings.collector.containers = False
    topology = load_profile("apple-m4-max")
    collector = Collector(settings, Stamper("h"), topology)
    first, second = collector.sweep(), collector.sweep()
    assert first[0].data.topology == topology.to_dict()
    assert second[0].data.topology is None


class HungBroker:
    """Takes nothing while ``down``, then everything; says what it was sent, in order."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[str] = []

    def encoded(self, events: list[Envelope]) -> list[tuple[Envelope, bytes]]:
        return [(e, encode(e)) for e in events]

    async def publish_each(self, items: list[tuple[Envelope, bytes]]
                           ) -> list[tuple[Envelope, bytes]]:
        if self.down:
            return list(items)
        self.sent += [e.id for e, _ in items]
        return []


def sweep_events(n: int) -> list[Envelope]:
    return [envelope(HostSample(cpu_percent=[1.0] * 200, cpu_freq_khz=[], load=(0, 0, 0),
                                mem_total_bytes=1, mem_available_bytes=1), "h", n)]


async def test_sweeps_wait_for_a_broker_that_is_away_and_go_in_order() -> None:
    broker = HungBroker()
    stats = CollectorStats()
    sink = KafkaSink(broker, stats, max_bytes=1 << 20, retry_s=0.01)  # type: ignore[arg-type]
    made = [sweep_events(i) for i in range(5)]
    for events in made:
        await sink.emit(events)          # never waits for the broker
    await asyncio.sleep(0.05)
    assert stats.buffered_sweeps == 5 and stats.oldest_buffered_ts is not None
    broker.down = False
    await asyncio.sleep(0.1)
    assert broker.sent == [events[0].id for events in made]
    assert stats.buffered_sweeps == 0 and stats.dropped_sweeps == 0
    await sink.close()


async def test_a_full_buffer_drops_the_oldest_sweep_and_counts_it() -> None:
    broker = HungBroker()
    stats = CollectorStats()
    made = [sweep_events(i) for i in range(5)]
    size = max(len(encode(events[0])) for events in made)   # ids and times vary by a byte
    sink = KafkaSink(broker, stats, max_bytes=3 * size, retry_s=0.01)  # type: ignore[arg-type]
    for events in made:
        await sink.emit(events)
    assert stats.dropped_sweeps == 2 and stats.buffered_sweeps == 3
    broker.down = False
    await asyncio.sleep(0.1)
    assert broker.sent == [events[0].id for events in made[2:]]
    await sink.close()
