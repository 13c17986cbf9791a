"""What the read API answers under load while corelane records 1,000 processes at 1 Hz.

    .venv/bin/python bench/api_load.py [--procs 1000] [--history-min 30] [--clients 50]
                                       [--think-ms 100] [--seconds 60] [--quiet-s 20]

Starts a real broker, writes ``--history-min`` minutes of recorded history (the synthetic
fleet at 1 Hz, with classifications and plans) into a DuckDB file, and runs the serving
side of `corelane up` in a child process: the recorder (with the live view it feeds) and
the API on uvicorn. The parent publishes a sweep of the fleet every second, and a
classification batch and a plan every 5 s, for the whole run.

Two phases, in one run: first one client for ``--quiet-s`` (the figure without load),
then ``--clients`` clients in a second process, each waiting ``--think-ms`` between its
requests, for ``--seconds``. Each phase prints p50/p95/p99 per endpoint and overall, the
requests per second and the errors, and the recorder's lag (how far behind now its
newest recorded event is) at the start and the end of the phase: the target is a read
p99 <= 100 ms under load, and a lag that does not grow.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_seconds, host_sample, publish_sweeps, running_broker  # noqa: E402
from bench.synthetic import Fleet  # noqa: E402
from pipeline import events as ev  # noqa: E402
from pipeline.bus import Publisher  # noqa: E402
from pipeline.settings import Settings, load_settings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

PLAN_EVERY = 5
HOST = "bench-host"


def endpoints(procs: int) -> list[str]:
    """The reads a dashboard makes, weighted as one would poll them."""
    fleet = Fleet(procs)
    pid = random.choice(fleet.ident)[0]
    return [
        "/api/v1/processes?limit=100", "/api/v1/processes?tier=low&limit=50",
        f"/api/v1/processes/{pid}", "/api/v1/tiers", "/api/v1/core-utilization",
        "/api/v1/core-utilization?from=-30m&step=60", "/api/v1/classifications?limit=50",
        "/api/v1/decisions?limit=50", "/api/v1/enforcements?limit=50",
        "/api/v1/latency-stats?from=-1m", "/api/v1/alerts?state=open", "/api/v1/health",
        "/api/v1/stats", "/api/v1/containers", "/api/v1/topology",
    ]


def plan_events(fleet: Fleet, seq: int) -> tuple[ev.Classifications, ev.Decisions]:
    classes = fleet.classify()
    decisions = [ev.Decision(target="process", tier=c.tier, cpus="1" if "critical" in c.tier
                             else "0", pid=c.pid, start_time=c.start_time, nice=0,
                             reason=f"{c.tier} pool") for c in classes]
    return (ev.Classifications(batch=f"c{seq}", items=classes),
            ev.Decisions(batch=f"p{seq}", plan_seq=seq, mode="balanced", strategy="shared",
                         items=decisions))


def prefill(settings: Settings, procs: int, minutes: float) -> int:
    """Minutes of history ending now, written straight into the file (no broker)."""
    from storage.history import HistoryStore
    store = HistoryStore(settings.db_path, settings.storage)
    fleet = Fleet(procs)
    start = time.time() - minutes * 60
    offset, rows = 0, 0
    batch: list = []
    for second in range(int(minutes * 60)):
        ts = start + second
        batch.append(ev.envelope(ev.ProcessSamples(batch=f"s{second}", samples=fleet.sweep(),
                                                   interval_s=1.0), HOST, offset, ts=ts))
        batch.append(ev.envelope(host_sample(), HOST, offset, ts=ts))
        if second % PLAN_EVERY == 0:
            for part in plan_events(fleet, second // PLAN_EVERY + 1):
                batch.append(ev.envelope(part, HOST, offset, ts=ts))
        rows += procs
        if len(batch) >= 60:
            store.write([("bench.prefill", 0, offset + i, e) for i, e in enumerate(batch)])
            offset += len(batch)
            batch = []
    if batch:
        store.write([("bench.prefill", 0, offset + i, e) for i, e in enumerate(batch)])
    store.close()
    return rows


# --- the children --------------------------------------------------------------------------

async def serve() -> None:
    """The serving side of `corelane up`: recorder, live view, API; until SIGTERM."""
    import uvicorn

    from agents.recorder import Recorder
    from api.live import LiveState
    from api.server import create_api
    from api.service import ApiService
    from pipeline.bus.hub import EventHub
    from pipeline.topology import read_topology
    from storage.history import HistoryStore
    from storage.query import QueryEngine

    settings = load_settings(env=dict(os.environ))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = HistoryStore(settings.db_path, settings.storage)
    engine = QueryEngine(store.connection, settings.storage.query_timeout_s,
                         settings.storage.query_max_rows)
    hub, live = EventHub(), LiveState()
    hub.on_event(live.apply)
    async with Publisher(settings) as publisher:
        recorder = Recorder(settings, store, publisher, hub=hub)
        await recorder.start()
        api = create_api(ApiService(settings=settings, parts={"recorder": recorder,
                                                              "bus": publisher},
                                    topology=read_topology("/"), publish=publisher.publish,
                                    get_engine=lambda: engine, live=live, hub=hub,
                                    token=None))
        host, port = settings.api.listen.rsplit(":", 1)
        server = uvicorn.Server(uvicorn.Config(api, host=host, port=int(port),
                                               log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve())
        await recorder.run(stop)
        server.should_exit = True
        await serving
        await recorder.stop()
    store.close()


async def load(base: str, paths: list[str], clients: int, think_ms: float,
               seconds: float) -> None:
    """``clients`` clients, each GET, wait ``think_ms``, again; prints latencies (and this
    process's own CPU time) as JSON. aiohttp: the lightest well-kept async client, so
    that the generator takes as little as it can of the cores the server runs on."""
    import aiohttp

    results: dict[str, list[float]] = {p.split("?")[0]: [] for p in paths}
    errors: dict[str, int] = {}
    ends = time.monotonic() + seconds
    cpu_before = time.process_time()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(n: int) -> None:
            rng = random.Random(n)
            await asyncio.sleep(rng.random() * think_ms / 1000)   # do not start in step
            while time.monotonic() < ends:
                path = rng.choice(paths)
                started = time.perf_counter()
                try:
                    async with session.get(path) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                results[path.split("?")[0]].append((time.perf_counter() - started) * 1000)
                if not ok:
                    errors[path] = errors.get(path, 0) + 1
                await asyncio.sleep(think_ms / 1000)
        started = time.monotonic()
        await asyncio.gather(*(one(n) for n in range(clients)))
        span = time.monotonic() - started
    print(json.dumps({"latencies_ms": results, "errors": errors, "span_s": span,
                      "cpu_s": time.process_time() - cpu_before}))


# --- the parent ----------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recorder_lag(base: str) -> float | None:
    import httpx
    try:
        health = httpx.get(f"{base}/api/v1/health", timeout=5, trust_env=False).json()
        return health["parts"]["recorder"]["lag_s"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} s"


def report(name: str, result: dict, lag_start: float | None, lag_end: float | None,
           server_cpu: float) -> float:
    latencies = result["latencies_ms"]
    everything = [v for vs in latencies.values() for v in vs]
    print(f"\n{name}: {len(everything)} requests in {result['span_s']:.0f} s "
          f"({len(everything) / result['span_s']:.0f}/s), errors {sum(result['errors'].values())}"
          f" {result['errors'] or ''}")
    print(f"  {'endpoint':38} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for path, values in sorted(latencies.items()):
        print(f"  {path:38} {len(values):6d} {quantile(values, .5):8.1f} "
              f"{quantile(values, .95):8.1f} {quantile(values, .99):8.1f}")
    p99 = quantile(everything, .99)
    print(f"  {'all reads':38} {len(everything):6d} {quantile(everything, .5):8.1f} "
          f"{quantile(everything, .95):8.1f} {p99:8.1f}")
    print(f"  recorder lag: {seconds(lag_start)} at the start, {seconds(lag_end)} at the end")
    span = result["span_s"]
    print(f"  CPU: server (recorder + API) {server_cpu / span:.2f} cores, load generator "
          f"{result['cpu_s'] / span:.2f} cores")
    return p99


def run_load(base: str, paths: list[str], clients: int, think_ms: float, seconds: float,
             env: dict[str, str], server: int
             ) -> tuple[dict, float | None, float | None, float]:
    lag_start = recorder_lag(base)
    cpu_start = cpu_seconds(server)
    done = subprocess.run([sys.executable, __file__, "--child", "load", base, json.dumps(paths),
                           str(clients), str(think_ms), str(seconds)], env=env,
                          capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"the load generator failed:\n{done.stderr[-3000:]}")
    cpu = cpu_seconds(server) - cpu_start
    return json.loads(done.stdout), lag_start, recorder_lag(base), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--history-min", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--think-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument("--read-cache-s", type=float, default=None,
                        help="api.read_cache_s for the server (default: the configured one)")
    args = parser.parse_args()

    with running_broker("corelane-bench-api-") as broker:
        listen = f"127.0.0.1:{free_port()}"
        env = {**broker.env, "CORELANE_API": listen, "CORELANE_HOST": HOST}
        if args.read_cache_s is not None:
            config = broker.tmp / "bench.yml"
            config.write_text(f"api: {{read_cache_s: {args.read_cache_s}}}\n")
            env["CORELANE_CONFIG"] = str(config)
        settings = load_settings(env=env)
        began = time.monotonic()
        rows = prefill(settings, args.procs, args.history_min)
        print(f"history: {args.history_min:g} min of {args.procs} processes at 1 Hz, {rows} "
              f"process rows, written in {time.monotonic() - began:.0f} s", flush=True)
        base = f"http://{listen}"
        server = subprocess.Popen([sys.executable, __file__, "--child", "serve"], env=env)
        try:
            total = args.quiet_s + args.seconds + 60
            feeder = subprocess.Popen([sys.executable, __file__, "--child", "feed",
                                       str(args.procs), str(total)], env=env)
            deadline = time.monotonic() + 120
            while recorder_lag(base) is None:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the API did not come up")
                time.sleep(0.5)
            time.sleep(10)   # the recorder catches up and the live view fills
            paths = endpoints(args.procs)
            quiet = run_load(base, paths, 1, args.think_ms, args.quiet_s, env, server.pid)
            q99 = report("one client (no load)", *quiet)
            loaded = run_load(base, paths, args.clients, args.think_ms, args.seconds, env,
                              server.pid)
            l99 = report(f"{args.clients} clients, {args.think_ms:g} ms apart", *loaded)
            lag_grew = (loaded[2] or 0) - (loaded[1] or 0)
            print(f"\nread p99 under load: {l99:.1f} ms (target <= 100 ms; "
                  f"{'met' if l99 <= 100 else 'NOT met'}); without load {q99:.1f} ms, "
                  f"ratio {l99 / q99:.1f}x")
            print(f"recorder lag change under load: {lag_grew:+.1f} s "
                  f"({'did not grow' if lag_grew <= 2 else 'GREW'})")
            feeder.terminate()
            feeder.wait(30)
        finally:
            for child in (server,):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(60)
                    except subprocess.TimeoutExpired:
                        child.kill()


async def feed(procs: int, seconds: float) -> None:
    """Sweeps at 1 Hz, and classifications and a plan every PLAN_EVERY s."""
    settings = load_settings(env=dict(os.environ))
    fleet = Fleet(procs)
    async with Publisher(settings) as publisher:
        async def on_sweep(tick: int, ts: float, _chunks: int) -> None:
            if tick % PLAN_EVERY:
                return
            classes, plan = plan_events(fleet, 100_000 + tick)
            # Chunked as the classifier and the allocator send them.
            parts = publisher.batch(ev.Classifications, classes.items, "items")
            parts += publisher.batch(ev.Decisions, plan.items, "items", plan_seq=plan.plan_seq,
                                     mode=plan.mode, strategy=plan.strategy)
            await publisher.publish_many([publisher.stamper.stamp(p, ts) for p in parts])
        await publish_sweeps(settings, procs, seconds, on_sweep)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        role = sys.argv[2]
        if role == "serve":
            asyncio.run(serve())
        elif role == "feed":
            asyncio.run(feed(int(sys.argv[3]), float(sys.argv[4])))
        else:
            asyncio.run(load(sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]),
                             float(sys.argv[6]), float(sys.argv[7])))
    else:
        main()
