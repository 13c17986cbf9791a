"""`corelane collect`: the collectors alone, to the broker or to stdout."""
from __future__ import annotations

import asyncio
from typing import Optional

import typer

from corelane.cli.context import context

NAME = "collect"


def run(ctx: typer.Context,
        count: Optional[int] = typer.Option(None, "--count", "-n", min=1,
                                            help="sweeps to make, then stop (default: run on)"),
        interval: Optional[float] = typer.Option(None, "--interval", "-i", min=0.01,
                                                 help="seconds between sweeps "
                                                      "(default: collector.interval_s)"),
        stdout: bool = typer.Option(False, "--stdout",
                                    help="write events as JSON lines instead of publishing")
        ) -> None:
    """Run the collectors alone: to the broker, or to stdout as JSON lines."""
    from pipeline.bus import Publisher, Stamper, ensure_topics
    from pipeline.collectors.collector import Collector, KafkaSink, StdoutSink, run_collector
    from pipeline.kafka.broker import why_unreachable

    cli = context(ctx)
    cfg = cli.settings()
    cli.start_logging(cfg.log_level if not stdout else "warning")

    async def main() -> None:
        stamper = Stamper(cfg.host)
        collector = Collector(cfg, stamper)
        if stdout:
            await run_collector(collector, StdoutSink(), count=count, interval_s=interval)
            return
        why = await why_unreachable(cfg, 5.0)
        if why is not None:
            cli.fail(f"no Kafka broker answers at {cfg.kafka.bootstrap} (CORELANE_KAFKA): "
                     f"{why}; start one with 'corelane kafka start' or use --stdout")
        await ensure_topics(cfg)
        async with Publisher(cfg, stamper) as publisher:
            stats = await run_collector(collector, KafkaSink(publisher, collector.stats),
                                        count=count, interval_s=interval)
        cli.say(f"{stats.sweeps} sweeps, {publisher.sent} messages published to "
                f"{cfg.kafka.bootstrap}")

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
