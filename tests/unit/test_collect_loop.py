"""The collector loop goes on when the broker does not take a sweep."""
from __future__ import annotations

from pathlib import Path

from aiokafka.errors import RequestTimedOutError

from pipeline.bus import Stamper
from pipeline.collectors.collector import Collector, run_collector
from pipeline.events import Envelope, HostSample
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
