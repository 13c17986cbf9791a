"""Real processes of each behaviour class, for testing and training the classifier.

    python bench/workloads.py run-mix --seconds 60 --seed 1 [--count CLASS=N ...]

Every workload is a separate Python process on this host (``sys.executable -c`` with a
generic bootstrap; its parameters travel in an environment variable, so neither its name
nor its command line says what it does). Each process renames itself (``/proc/self/comm``,
and every thread ``/proc/self/task/TID/comm``) to a random neutral word or random letters.
Parameters are drawn at random within each class from a seed, and every class has a
single-threaded and a multi-threaded variant, so that no one constant separates classes.

Classes and what the processes do (ranges are per process, drawn once from the seed):

- ``latency_critical``: sleep 0.5–2 ms (``time.sleep`` or ``select``), then a few µs of
  arithmetic, in a loop; either in the main thread or in 1–2 worker threads while the
  main thread sleeps in ``join``.
- ``realtime_stream``: a loopback UDP or TCP receiver doing a fixed slice of work per
  message (sized for 10–35 % of a core in total), fed at a steady 300–2,500 messages/s by
  a feed process (role ``feed``); receives in the main thread, in a worker thread, or in a
  receiver thread that hands messages to a worker thread.
- ``interactive``: a loopback TCP request/response server (one ``selectors`` loop, or a
  thread per connection) doing 1–6 ms of work per request; its client (role ``client``,
  its own process, labelled ``interactive`` as well: a user-facing front end that fires
  bursts and waits for answers) sends bursts of 10–60 requests over 1–3 connections,
  0.8–4 s apart, and is idle in between.
- ``compute_batch``: tight loops at ~100 % of a core per thread: pure-Python arithmetic,
  or SHA-256 / zlib over buffers (these release the GIL, so two threads use two cores).
  The mix's ``cpu_threads_budget`` (2 by default) caps burning threads across the mix.
- ``io_batch``: writes 4–32 MB files in 64 KB–1 MB chunks with an fsync every 1–8
  chunks, throttled to 5–40 MB/s, drops them from the page cache and often reads them
  back from disk; keeps 2–4 files in its own folder under the mix's temporary folder.
  Multi-threaded variant: a writer thread and a reader thread.
- ``memory_heavy``: allocates and touches 150–450 MB in 4–32 MB blocks over 1–4 s,
  then every 0.5–3 s either re-touches a block (hold), adds 1–4 MB up to 1.6 times the
  target (grow), or frees and reallocates a block (churn); optionally from a worker
  thread while the main thread sleeps in ``join``.
- ``background``: wakes every 0.2–1 s (jittered) and does 1–8 ms of work, sometimes
  appending a line to a log file; one timer loop or 2 timer threads.
- ``idle``: blocks on a pipe that is never written, in a long sleep, or with threads
  waiting on events that never fire.

A ``WorkloadSet`` ends its processes by their pids (SIGTERM, then SIGKILL) and removes its
temporary folder. Children ask the kernel to kill them when their parent dies
(``PR_SET_PDEATHSIG``), so a crashed test run leaves no orphans. The death signal follows
the *thread* that started them: call ``start_mix`` from a thread that outlives the mix.

This module uses the standard library only: the children load this same file.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import hashlib
import json
import os
import queue
import random
import select
import selectors
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLASSES: tuple[str, ...] = ("latency_critical", "realtime_stream", "interactive",
                            "compute_batch", "io_batch", "memory_heavy", "background",
                            "idle")
# One of each: with the default CPU budget at most two burning threads.
DEFAULT_COUNTS: dict[str, int] = {c: 1 for c in CLASSES}
# Words a process or thread name must never contain (the class names and their parts).
CLASS_WORDS: tuple[str, ...] = tuple(sorted({w for c in CLASSES for w in c.split("_")}))

_SPEC_ENV = "CLW_SPEC"
_PATH_ENV = "CLW_PATH"
# The same bootstrap for every class: the command line carries no hint.
_BOOT = f"import os,runpy;runpy.run_path(os.environ['{_PATH_ENV}'])['_child_main']()"

_WORDS = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lumen", "maple", "nimbus", "onyx", "pebble", "quartz", "raven",
    "sable", "tundra", "umber", "vesper", "willow", "yarrow", "zephyr", "basalt", "canyon",
    "dune", "falcon", "glade", "heron", "iris", "jasper", "kelp", "larch", "moss", "nectar",
    "opal", "prairie", "quill", "reef", "sorrel", "thistle", "vale", "wren", "alder",
    "brook", "coral", "drift", "egret", "flint", "grove", "hollow", "islet", "jade",
    "knoll", "lark", "marsh", "otter", "pine", "ridge", "slate", "tide", "vireo", "aspen",
    "bramble", "comet", "fern", "gale", "hazel", "lotus", "mirth", "nova", "plume", "rune",
)
_FORBIDDEN = CLASS_WORDS + ("cpu", "disk", "mem", "burn", "sleep", "net", "work", "load")

PR_SET_PDEATHSIG = 1


def random_name(rng: random.Random) -> str:
    """A neutral process/thread name of at most 15 bytes (the kernel's comm limit)."""
    while True:
        style = rng.randrange(5)
        if style == 0:
            name = rng.choice(_WORDS)
        elif style == 1:
            name = f"{rng.choice(_WORDS)}{rng.randrange(1, 100)}"
        elif style == 2:
            name = f"{rng.choice(_WORDS)}-{rng.choice(_WORDS)}"
        elif style == 3:
            name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 9)))
        else:
            name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 5)))
            name += f"{rng.choice('-_.')}{rng.randrange(10, 1000)}"
        name = name[:15]
        if not any(word in name for word in _FORBIDDEN):
            return name


# --- the processes themselves ------------------------------------------------------------
# Everything below down to the parent side runs inside the child processes.

_pc = time.perf_counter


def _spin(seconds: float, seed: int = 1) -> int:
    """Real arithmetic until ``seconds`` of CPU have passed (the clock is read every ~1 µs
    of work, so the slice is fixed in time whatever the host's speed)."""
    end = _pc() + seconds
    x = seed | 1
    while True:
        for _ in range(16):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if _pc() >= end:
            return x


def _set_comm(name: str, tid: int | None = None) -> None:
    path = "/proc/self/comm" if tid is None else f"/proc/self/task/{tid}/comm"
    try:
        with open(path, "w") as f:
            f.write(name)
    except OSError:
        pass


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def _on_term(signum: int, frame: Any) -> None:
    # SystemExit in the main thread runs the finally blocks (temporary files) on the way out.
    raise SystemExit(0)


class _Child:
    """The child's view of its spec: parameters, names, the ready signal, named threads."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.params: dict = spec["params"]
        self.rng = random.Random(self.params["seed"])
        self._names = random.Random(spec["name_seed"])
        self.threads: dict[int, str] = {}

    def ready(self, **info: Any) -> None:
        info["threads"] = self.threads
        fd = self.spec["ready_fd"]
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.close(fd)

    def thread(self, target: Callable[..., Any], *args: Any) -> threading.Thread:
        """Start a daemon thread that has renamed itself before this returns."""
        named = threading.Event()
        name = random_name(self._names)

        def run() -> None:
            tid = threading.get_native_id()
            _set_comm(name, tid)
            self.threads[tid] = name
            named.set()
            target(*args)

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        named.wait()
        return t


def _latency_loop(p: dict, seed: int) -> None:
    rng = random.Random(seed)
    lo, hi = p["sleep_ms"]
    lo /= 1000.0
    hi /= 1000.0
    iters = p["work_iters"]
    if p["wait"] == "select":
        def wait(s: float) -> None:
            select.select([], [], [], s)
    else:
        wait = time.sleep
    x = seed | 1
    uniform = rng.uniform
    while True:
        wait(uniform(lo, hi))
        for i in range(iters):
            x = (x * 1103515245 + i) & 0x7FFFFFFF


def _run_latency_critical(c: _Child) -> None:
    p = c.params
    if p["threads"]:
        workers = [c.thread(_latency_loop, p, p["seed"] + i) for i in range(p["threads"])]
        c.ready()
        workers[0].join()
    else:
        c.ready()
        _latency_loop(p, p["seed"])


def _run_realtime_stream(c: _Child) -> None:
    p = c.params
    size = p["msg_bytes"]
    work_s = p["work_us"] / 1e6
    udp = p["transport"] == "udp"
    if udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.bind(("127.0.0.1", 0))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
    port = sock.getsockname()[1]

    def messages() -> Any:
        """Yield message counts as they arrive (TCP may deliver several at once)."""
        if udp:
            recv = sock.recv
            while True:
                recv(65536)
                yield 1
        conn, _ = sock.accept()
        recv = conn.recv
        pending = 0
        while True:
            data = recv(65536)
            if not data:
                return                      # the feed has gone: nothing more will come
            pending += len(data)
            n, pending = divmod(pending, size)
            if n:
                yield n

    def consume() -> None:
        for n in messages():
            for _ in range(n):
                _spin(work_s)

    mode = p["mode"]
    if mode == "main":
        c.ready(port=port)
        consume()
    elif mode == "thread":
        t = c.thread(consume)
        c.ready(port=port)
        t.join()
    else:                                   # "split": receiver thread hands to a worker
        q: queue.SimpleQueue[int] = queue.SimpleQueue()

        def receive() -> None:
            for n in messages():
                q.put(n)
            q.put(-1)

        def work() -> None:
            while (n := q.get()) >= 0:
                for _ in range(n):
                    _spin(work_s)

        w = c.thread(work)
        c.thread(receive)
        c.ready(port=port)
        w.join()


def _run_stream_feed(c: _Child) -> None:
    p = c.params
    payload = os.urandom(p["msg_bytes"])
    if p["transport"] == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", p["port"]))
    else:
        sock = socket.create_connection(("127.0.0.1", p["port"]))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send = sock.send
    c.ready()
    tick = p["tick_ms"] / 1000.0
    per_tick = p["rate"] * tick
    owed = 0.0
    next_t = time.monotonic()
    while True:
        next_t += tick
        owed += per_tick
        n = int(owed)
        owed -= n
        for _ in range(n):
            try:
                send(payload)
            except ConnectionRefusedError:  # the receiver is gone (stopping)
                pass
            except (BrokenPipeError, ConnectionResetError):
                return
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:                  # fell far behind (host busy): do not catch up
            next_t = time.monotonic()


def _run_interactive(c: _Child) -> None:
    p = c.params
    lo, hi = p["work_ms"]
    rng = c.rng
    lock = threading.Lock()

    def answer(line: bytes) -> bytes:
        with lock:                          # one rng, possibly several handler threads
            budget = rng.uniform(lo, hi) / 1000.0
        return b"%d\n" % _spin(budget, len(line))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    if p["mode"] == "threads":
        def serve(conn: socket.socket) -> None:
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    conn.sendall(answer(line))

        c.ready(port=port)
        while True:                         # the main thread only accepts
            conn, _ = listener.accept()
            c.thread(serve, conn)

    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    c.ready(port=port)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            data = sock.recv(65536)
            if not data:
                sel.unregister(sock)
                sock.close()
                buffers.pop(sock, None)
                continue
            buf = buffers[sock] + data
            *lines, buffers[sock] = buf.split(b"\n")
            for line in lines:
                sock.sendall(answer(line))


def _run_interactive_client(c: _Child) -> None:
    p = c.params
    rng = c.rng
    conns = [socket.create_connection(("127.0.0.1", p["port"])) for _ in range(p["conns"])]
    files = [conn.makefile("rwb") for conn in conns]
    c.ready()
    g_lo, g_hi = p["gap_s"]
    b_lo, b_hi = p["burst"]
    think = p["think_ms"] / 1000.0
    i = 0
    while True:
        time.sleep(rng.uniform(g_lo, g_hi))
        for _ in range(rng.randint(b_lo, b_hi)):
            f = files[i % len(files)]
            i += 1
            f.write(b"q %d\n" % i)
            f.flush()
            if not f.readline():
                return                      # the server has gone
            if think:
                time.sleep(rng.uniform(0, think))


def _compute_kernel(p: dict, seed: int) -> None:
    kind = p["kernel"]
    if kind == "sha256":
        buf = random.Random(seed).randbytes(p["buf_kb"] * 1024)
        h = hashlib.sha256()
        while True:
            h.update(buf)                   # releases the GIL on large buffers
    elif kind == "zlib":
        rng = random.Random(seed)
        words = [rng.randbytes(rng.randint(3, 9)).hex().encode() for _ in range(500)]
        data = b" ".join(rng.choice(words) for _ in range(p["buf_kb"] * 60))
        level = p["level"]
        while True:
            zlib.compress(data, level)      # releases the GIL while deflating
    else:
        x = seed | 1
        i = 0
        while True:
            x = (x * 6364136223846793005 + i) % 18446744073709551557
            i += 1


def _run_compute_batch(c: _Child) -> None:
    p = c.params
    if p["mt"]:
        workers = [c.thread(_compute_kernel, p, p["seed"] + i) for i in range(p["threads"])]
        c.ready()
        workers[0].join()
    else:
        c.ready()
        _compute_kernel(p, p["seed"])


class _Throttle:
    """Hold a byte rate by sleeping: disk-bound work with little CPU."""

    def __init__(self, bytes_per_s: float) -> None:
        self.rate = bytes_per_s
        self.start = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)
        elif ahead < -2.0:                  # the disk is slower than the target: reset
            self.start, self.done = time.monotonic(), 0


def _read_back(path: Path, chunk: int, throttle: _Throttle) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return                              # rotated away meanwhile
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # read from disk, not cache
        while data := os.read(fd, chunk):
            throttle.add(len(data))
    finally:
        os.close(fd)


def _run_io_batch(c: _Child) -> None:
    p = c.params
    folder = Path(p["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    chunk = c.rng.randbytes(p["chunk_kb"] * 1024)     # random: no compression shortcuts
    file_bytes = p["file_mb"] << 20
    files: deque[Path] = deque()
    names = random.Random(p["seed"] + 1)

    def writer(throttle: _Throttle) -> None:
        while True:
            path = folder / f"{random_name(names)}.dat"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                written = since_sync = 0
                while written < file_bytes:
                    written += os.write(fd, chunk)
                    since_sync += 1
                    if since_sync >= p["fsync_every"]:
                        os.fsync(fd)
                        since_sync = 0
                    throttle.add(len(chunk))
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            files.append(path)
            if p["read_back"] and not p["mt"]:
                _read_back(path, len(chunk), throttle)
            while len(files) > p["keep"]:
                files.popleft().unlink(missing_ok=True)

    def reader(throttle: _Throttle) -> None:
        while True:
            if len(files) < 2:
                time.sleep(0.2)
                continue
            _read_back(files[0], len(chunk), throttle)

    rate = p["mb_per_s"] * (1 << 20)
    try:
        if p["mt"]:
            w = c.thread(writer, _Throttle(rate))
            c.thread(reader, _Throttle(rate * p["read_share"]))
            c.ready()
            w.join()
        else:
            c.ready()
            writer(_Throttle(rate))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _touch(block: bytearray, value: int) -> None:
    block[::4096] = bytes([value]) * len(range(0, len(block), 4096))


def _run_memory_heavy(c: _Child) -> None:
    p = c.params
    rng = c.rng
    blocks: list[bytearray] = []

    def hold() -> None:
        chunk = p["chunk_mb"] << 20
        target = p["target_mb"] << 20
        steps = max(1, target // chunk)
        pause = p["grow_s"] / steps
        total = 0
        while total < target:
            block = bytearray(chunk)
            _touch(block, 1)
            blocks.append(block)
            total += chunk
            time.sleep(pause)
        cap = int(target * 1.6)
        value = 2
        while True:
            time.sleep(rng.uniform(*p["tick_s"]))
            value = value % 250 + 1
            mode = p["after"]
            if mode == "grow" and total < cap:
                block = bytearray(p["slow_mb"] << 20)
                _touch(block, value)
                blocks.append(block)
                total += len(block)
            elif mode == "churn":
                i = rng.randrange(len(blocks))
                size = len(blocks[i])
                blocks[i] = bytearray(0)    # free first: the size stays near the target
                blocks[i] = bytearray(size)
                _touch(blocks[i], value)
            else:
                _touch(rng.choice(blocks), value)

    if p["mt"]:
        t = c.thread(hold)
        c.ready()
        t.join()
    else:
        c.ready()
        hold()


def _background_loop(p: dict, seed: int, log: Path | None) -> None:
    rng = random.Random(seed)
    period = p["period_s"]
    jitter = p["jitter"]
    work = p["work_ms"] / 1000.0
    n = 0
    while True:
        time.sleep(period * rng.uniform(1 - jitter, 1 + jitter))
        x = _spin(work * rng.uniform(0.7, 1.3), seed)
        n += 1
        if log is not None:
            with open(log, "a" if n % 500 else "w") as f:     # bounded: restart the log
                f.write(f"{time.time():.3f} {n} {x}\n")


def _run_background(c: _Child) -> None:
    p = c.params
    log = None
    if p["log"]:
        folder = Path(p["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"{random_name(c.rng)}.log"
    if p["threads"]:
        timers = [c.thread(_background_loop, p, p["seed"] + i, log)
                  for i in range(p["threads"])]
        c.ready()
        timers[0].join()
    else:
        c.ready()
        _background_loop(p, p["seed"], log)


def _run_idle(c: _Child) -> None:
    p = c.params
    mode = p["mode"]
    if mode == "pipe":
        c.ready()
        os.read(0, 1)                       # nothing is ever written; EOF when the parent goes
        return
    if mode == "events":
        never = threading.Event()
        waiters = [c.thread(never.wait) for _ in range(p["threads"])]
        c.ready()
        waiters[0].join()
        return
    c.ready()
    while True:
        time.sleep(p["nap_s"])


_RUNNERS: dict[str, Callable[[_Child], None]] = {
    "latency_critical": _run_latency_critical,
    "realtime_stream": _run_realtime_stream,
    "interactive": _run_interactive,
    "compute_batch": _run_compute_batch,
    "io_batch": _run_io_batch,
    "memory_heavy": _run_memory_heavy,
    "background": _run_background,
    "idle": _run_idle,
    "feed": _run_stream_feed,
    "client": _run_interactive_client,
}


def _child_main() -> None:
    """Entry point of every workload process (through the bootstrap in ``_BOOT``)."""
    spec = json.loads(os.environ.pop(_SPEC_ENV))
    os.environ.pop(_PATH_ENV, None)
    _die_with_parent(spec["parent"])
    signal.signal(signal.SIGTERM, _on_term)
    _set_comm(spec["name"])
    runner = _RUNNERS[spec["role"] if spec["role"] != "main" else spec["label"]]
    try:
        runner(_Child(spec))
    except (SystemExit, KeyboardInterrupt, BrokenPipeError, ConnectionError):
        pass
    os._exit(0)                             # do not wait for daemon threads


# --- parameters ---------------------------------------------------------------------------

def _draw(label: str, rng: random.Random, mt: bool, compute_threads: int) -> dict:
    """One process's parameters within its class."""
    u = rng.uniform
    p: dict[str, Any] = {"seed": rng.getrandbits(31), "mt": mt}
    if label == "latency_critical":
        lo = round(u(0.5, 1.0), 3)
        p.update(sleep_ms=[lo, round(u(lo, 2.0), 3)], work_iters=rng.randint(8, 60),
                 wait=rng.choice(["sleep", "select"]),
                 threads=rng.randint(1, 2) if mt else 0)
    elif label == "realtime_stream":
        rate = rng.randint(300, 2500)
        share = round(u(0.10, 0.35), 3)
        # The receive path itself costs ~10-15 µs a message in Python: the rest is work.
        p.update(transport=rng.choice(["udp", "tcp"]), rate=rate, target_share=share,
                 work_us=round(max(2.0, share / rate * 1e6 - 12.0), 1),
                 msg_bytes=rng.randint(64, 512), tick_ms=round(u(1.0, 5.0), 2),
                 mode=rng.choice(["thread", "split"]) if mt else "main")
    elif label == "interactive":
        lo = round(u(1.0, 3.0), 2)
        p.update(mode="threads" if mt else "select", work_ms=[lo, round(u(lo, 6.0), 2)],
                 conns=rng.randint(1, 3) if mt else rng.randint(1, 2),
                 burst=[rng.randint(10, 25), rng.randint(25, 60)],
                 gap_s=[round(u(0.8, 1.5), 2), round(u(1.5, 4.0), 2)],
                 think_ms=rng.choice([0.0, round(u(0.2, 2.0), 2)]))
    elif label == "compute_batch":
        kernel = rng.choice(["sha256", "zlib"]) if mt and compute_threads > 1 else \
            rng.choice(["arith", "sha256", "zlib"])
        p.update(kernel=kernel, threads=compute_threads if mt else 1,
                 buf_kb=rng.choice([64, 128, 256, 512, 1024]), level=rng.randint(1, 9))
    elif label == "io_batch":
        p.update(file_mb=rng.randint(4, 32), chunk_kb=rng.choice([64, 128, 256, 512, 1024]),
                 fsync_every=rng.randint(1, 8), mb_per_s=round(u(5.0, 40.0), 1),
                 read_back=rng.random() < 0.7, read_share=round(u(0.3, 1.0), 2),
                 keep=rng.randint(2, 4))
    elif label == "memory_heavy":
        p.update(target_mb=rng.randint(150, 450), chunk_mb=rng.choice([4, 8, 16, 32]),
                 grow_s=round(u(1.0, 4.0), 2), after=rng.choice(["hold", "grow", "churn"]),
                 slow_mb=rng.randint(1, 4), tick_s=[round(u(0.5, 1.5), 2), round(u(1.5, 3.0), 2)])
    elif label == "background":
        p.update(period_s=round(u(0.2, 1.0), 3), jitter=round(u(0.05, 0.3), 2),
                 work_ms=round(u(1.0, 8.0), 2), log=rng.random() < 0.5,
                 threads=2 if mt else 0)
    elif label == "idle":
        p.update(mode="events" if mt else rng.choice(["pipe", "sleep"]),
                 threads=rng.randint(1, 3), nap_s=rng.randint(60, 600))
    else:
        raise ValueError(f"unknown class {label!r}; classes: {', '.join(CLASSES)}")
    return p


# --- parent side --------------------------------------------------------------------------

def read_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


@dataclass
class Workload:
    """One started process. ``role`` is "main" for the process the class describes,
    "feed" for a stream's sender and "client" for an interactive server's client; both
    carry their workload's class as label."""
    label: str
    role: str
    pid: int
    start_time: int
    name: str
    params: dict
    group: int                               # index of the workload it belongs to
    thread_names: dict[int, str] = field(default_factory=dict)
    port: int | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.start_time

    def alive(self) -> bool:
        """Still running as the same process (same pid and start time, not a zombie)."""
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return read_start_time(self.pid) == self.start_time

    def describe(self) -> dict:
        return {"label": self.label, "role": self.role, "pid": self.pid,
                "start_time": self.start_time, "name": self.name, "group": self.group,
                "threads": self.thread_names, "params": self.params}


class WorkloadSet:
    """Processes started by ``start_mix``; a context manager that stops them on exit."""

    def __init__(self, seed: int, temp_dir: Path) -> None:
        self.seed = seed
        self.temp_dir = temp_dir
        self.workloads: list[Workload] = []
        self.stopped = False
        atexit.register(self.stop)

    def __enter__(self) -> WorkloadSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Any:
        return iter(self.workloads)

    def __len__(self) -> int:
        return len(self.workloads)

    def identities(self) -> dict[tuple[int, int], Workload]:
        return {w.identity: w for w in self.workloads}

    def by_label(self, label: str, role: str | None = "main") -> list[Workload]:
        return [w for w in self.workloads
                if w.label == label and (role is None or w.role == role)]

    def stop(self, grace_s: float = 3.0) -> None:
        """End every process by its pid: SIGTERM, then SIGKILL after ``grace_s``; reap
        them and remove the temporary folder. Safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        running = [w for w in self.workloads if w.popen is not None and w.popen.poll() is None]
        # An unreaped child keeps its pid, so signalling by pid cannot hit another process.
        for w in running:
            try:
                os.kill(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for w in running:
            assert w.popen is not None
            try:
                w.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(w.pid, signal.SIGKILL)
                w.popen.wait(10)
        for w in self.workloads:
            if w.popen is not None and w.popen.stdin is not None:
                w.popen.stdin.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _launch(spec: dict, stdin_pipe: bool, temp_dir: Path) -> tuple[subprocess.Popen, int]:
    rfd, wfd = os.pipe()
    spec = dict(spec, ready_fd=wfd, parent=os.getpid())
    env = dict(os.environ)
    env[_SPEC_ENV] = json.dumps(spec)
    env[_PATH_ENV] = str(Path(__file__).resolve())
    tokens = random.Random(spec["name_seed"] + 7)
    argv = [sys.executable, "-c", _BOOT]
    argv += [random_name(tokens) for _ in range(tokens.randint(0, 2))]
    err = open(temp_dir / f"{spec['name_seed']}.err", "wb")
    try:
        proc = subprocess.Popen(argv, env=env, pass_fds=(wfd,), close_fds=True,
                                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    finally:
        os.close(wfd)
        err.close()
    return proc, rfd


def _await_ready(proc: subprocess.Popen, rfd: int, timeout: float, err: Path) -> dict:
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pid {proc.pid} not ready after {timeout:.0f} s")
            if select.select([rfd], [], [], left)[0]:
                more = os.read(rfd, 4096)
                if not more:
                    tail = err.read_text(errors="replace")[-2000:] if err.exists() else ""
                    raise RuntimeError(f"pid {proc.pid} exited before it was ready: {tail}")
                buf += more
    finally:
        os.close(rfd)
    return json.loads(buf.split(b"\n", 1)[0])


def start_mix(counts: Mapping[str, int] | None = None, seed: int = 1, *,
              cpu_threads_budget: int = 2, overrides: Mapping[str, Mapping[str, Any]] | None = None,
              temp_parent: str | Path | None = None, ready_timeout_s: float = 15.0
              ) -> WorkloadSet:
    """Start ``counts[class]`` processes of each class (``DEFAULT_COUNTS`` if None).

    Within a class the threading variant alternates from a random first one, so any count
    of two or more has both. ``cpu_threads_budget`` caps the burning threads of all
    ``compute_batch`` processes together (a process that would overrun it gets one thread;
    more processes than the budget is an error). ``overrides[class]`` replaces drawn
    parameters, e.g. ``{"compute_batch": {"mt": False}}``. Temporary files go to a fresh
    folder under ``temp_parent`` (the system's temporary folder by default).
    """
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    for label in counts:
        if label not in CLASSES:
            raise ValueError(f"unknown class {label!r}; classes: {', '.join(CLASSES)}")
    if counts.get("compute_batch", 0) > cpu_threads_budget:
        raise ValueError(f"{counts['compute_batch']} compute_batch processes exceed the "
                         f"CPU budget of {cpu_threads_budget} threads; raise cpu_threads_budget")
    overrides = overrides or {}
    rng = random.Random(seed)
    temp_dir = Path(tempfile.mkdtemp(prefix=random_name(rng) + "-",
                                     dir=None if temp_parent is None else str(temp_parent)))
    wset = WorkloadSet(seed, temp_dir)

    plans: list[dict] = []
    budget = cpu_threads_budget
    left_compute = counts.get("compute_batch", 0)
    for label in CLASSES:
        first_mt = rng.random() < 0.5
        for i in range(counts.get(label, 0)):
            forced = overrides.get(label, {})
            mt = bool(forced.get("mt", (i % 2 == 0) == first_mt))
            threads = 1
            if label == "compute_batch":
                left_compute -= 1
                threads = min(int(forced.get("threads", 2)), budget - left_compute) if mt else 1
                threads = max(threads, 1)
                budget -= threads
            params = _draw(label, rng, mt, threads)
            # "threads" of a compute process stays as the budget allowed.
            params.update({k: v for k, v in forced.items()
                           if k != "mt" and not (k == "threads" and label == "compute_batch")})
            if label in ("io_batch", "background"):
                params["dir"] = str(temp_dir / random_name(rng))
            plans.append({"label": label, "role": "main", "params": params,
                          "name": random_name(rng), "name_seed": rng.getrandbits(31)})

    def start(group: list[tuple[int, dict]]) -> list[Workload]:
        launched = []
        for index, plan in group:
            proc, rfd = _launch(plan, plan["label"] == "idle"
                                and plan["params"].get("mode") == "pipe", temp_dir)
            launched.append((index, plan, proc, rfd))
        started = []
        for index, plan, proc, rfd in launched:
            wl = Workload(label=plan["label"], role=plan["role"], pid=proc.pid, start_time=0,
                          name=plan["name"], params=plan["params"], group=index, popen=proc)
            wset.workloads.append(wl)       # before waiting, so stop() covers it on failure
            info = _await_ready(proc, rfd, ready_timeout_s,
                                temp_dir / f"{plan['name_seed']}.err")
            wl.start_time = read_start_time(proc.pid) or 0
            wl.thread_names = {int(k): v for k, v in info.get("threads", {}).items()}
            wl.port = info.get("port")
            started.append(wl)
        return started

    try:
        mains = start(list(enumerate(plans)))
        # Second wave: each stream's feed and each server's client, pointed at its port.
        helpers = []
        for wl in mains:
            if wl.label not in ("realtime_stream", "interactive"):
                continue
            p = wl.params
            hp: dict[str, Any] = {"seed": rng.getrandbits(31), "port": wl.port}
            if wl.label == "realtime_stream":
                role = "feed"
                hp.update({k: p[k] for k in ("transport", "rate", "msg_bytes", "tick_ms")})
            else:
                role = "client"
                hp.update({k: p[k] for k in ("conns", "burst", "gap_s", "think_ms")})
            helpers.append((wl.group, {"label": wl.label, "role": role, "params": hp,
                                       "name": random_name(rng),
                                       "name_seed": rng.getrandbits(31)}))
        start(helpers)
    except BaseException:
        wset.stop()
        raise
    return wset


# --- command line --------------------------------------------------------------------------

def parse_counts(items: list[str] | None) -> dict[str, int] | None:
    """``["idle=2", "compute_batch=1"]`` -> counts; None when no item is given."""
    if not items:
        return None
    counts: dict[str, int] = {}
    for item in items:
        label, sep, n = item.partition("=")
        if not sep or label not in CLASSES or not n.isdigit():
            raise argparse.ArgumentTypeError(
                f"--count wants CLASS=N with CLASS one of {', '.join(CLASSES)}: {item!r}")
        counts[label] = int(n)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-mix", help="start a mix, print pids and labels, stop at the end")
    run.add_argument("--seconds", type=float, default=60.0)
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--count", action="append", metavar="CLASS=N",
                     help="processes of a class (repeatable); given any, only those classes "
                          "run; default one of each")
    run.add_argument("--cpu-threads", type=int, default=2,
                     help="most burning compute threads at once (default 2)")
    run.add_argument("--json", action="store_true", help="print one JSON object per process")
    args = parser.parse_args(argv)
    try:
        counts = parse_counts(args.count)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    with start_mix(counts, args.seed, cpu_threads_budget=args.cpu_threads) as wset:
        for w in wset:
            if args.json:
                print(json.dumps(w.describe()), flush=True)
            else:
                print(f"{w.pid:>7} {w.start_time:>10} {w.label:<17} {w.role:<6} {w.name}",
                      flush=True)
        print(f"running {len(wset)} processes for {args.seconds:g} s "
              f"(temporary files in {wset.temp_dir})", file=sys.stderr, flush=True)
        try:
            time.sleep(args.seconds)
        except KeyboardInterrupt:
            pass
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
