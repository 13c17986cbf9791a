"""New processes as they happen: the kernel's proc connector (netlink, ``CONFIG_PROC_EVENTS``).

A sweep sees a new process up to a second after it started; the connector says so within
microseconds of its fork or exec. corelane uses it twice: a child that inherited a
demotion from its parent is put back to neutral at once, and a new process is sampled
faster for its first seconds, so that it is judged sooner.

The socket is plain ``AF_NETLINK`` / ``NETLINK_CONNECTOR``, read on the event loop
(``ProcEventWatcher``); parsing is pure (``parse``). When the kernel's queue overflowed
(``ENOBUFS``), events were lost and subscribers are told to rescan /proc; without the
connector (not root, an older kernel) the watcher says so once and the sweep carries on
alone.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
NLMSG_DONE = 3
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002

_NLMSG = struct.Struct("=IHHII")         # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")       # id.idx, id.val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")           # what, cpu, timestamp_ns
_FORK = struct.Struct("=IIII")           # parent pid, parent tgid, child pid, child tgid
_EXEC = struct.Struct("=II")             # process pid, process tgid
RCVBUF_BYTES = 4 << 20


@dataclass(frozen=True)
class ProcEvent:
    """A process forked (``parent`` is its parent process) or exec'd a new program."""
    what: str                            # "fork" | "exec"
    pid: int
    parent: int | None
    ts_ns: int                           # the kernel's CLOCK_MONOTONIC time of the event


def listen_message(pid: int = 0) -> bytes:
    """The request that subscribes a socket to process events."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
    return _NLMSG.pack(_NLMSG.size + len(cn), NLMSG_DONE, 0, 0, pid) + cn


def parse(data: bytes) -> list[ProcEvent]:
    """The process-level fork and exec events in one datagram (a thread's creation is a
    fork event too: left out, since a thread shares its process's settings)."""
    out: list[ProcEvent] = []
    at = 0
    while at + _NLMSG.size <= len(data):
        length, _, _, _, _ = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size:
            break
        body = at + _NLMSG.size
        if body + _CN_MSG.size + _EVENT.size <= min(len(data), at + length):
            idx, val, _, _, _, _ = _CN_MSG.unpack_from(data, body)
            ev = body + _CN_MSG.size
            what, _, ts = _EVENT.unpack_from(data, ev)
            payload = ev + _EVENT.size
            if (idx, val) == (CN_IDX_PROC, CN_VAL_PROC):
                if what == PROC_EVENT_FORK and payload + _FORK.size <= len(data):
                    _, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(data, payload)
                    if child_pid == child_tgid:
                        out.append(ProcEvent("fork", child_tgid, parent_tgid, ts))
                elif what == PROC_EVENT_EXEC and payload + _EXEC.size <= len(data):
                    pid, tgid = _EXEC.unpack_from(data, payload)
                    if pid == tgid:
                        out.append(ProcEvent("exec", tgid, None, ts))
        at += (length + 3) & ~3          # NLMSG_ALIGN
    return out


class ConnectorUnavailable(RuntimeError):
    """The proc connector cannot be used here; the message says why."""


def open_connector() -> socket.socket:
    """A non-blocking netlink socket subscribed to process events."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except (OSError, AttributeError) as exc:
        raise ConnectorUnavailable(f"no netlink connector socket: {exc}") from None
    try:
        for option in (33, socket.SO_RCVBUF):    # SO_RCVBUFFORCE as root, else capped
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF_BYTES)
                break
            except OSError:
                continue
        sock.bind((0, CN_IDX_PROC))
        sock.send(listen_message())
    except OSError as exc:
        sock.close()
        why = "not permitted (it needs root or CAP_NET_ADMIN)" \
            if exc.errno in (errno.EPERM, errno.EACCES) else (exc.strerror or str(exc))
        raise ConnectorUnavailable(f"the kernel's proc connector: {why}") from None
    sock.setblocking(False)
    return sock


Listener = Callable[[list[ProcEvent]], None]


class ProcEventWatcher:
    """Reads process events on the event loop and hands them to its listeners; after an
    overflow it tells its rescanners instead, once."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.rescanners: list[Callable[[], None]] = []
        self.available: bool | None = None
        self.reason = ""
        self.events = 0
        self.overflows = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, listener: Listener, rescan: Callable[[], None] | None = None) -> None:
        self.listeners.append(listener)
        if rescan is not None:
            self.rescanners.append(rescan)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """Start reading; False (and said once in the log) where the connector is not
        available, and the sweep alone sees new processes."""
        try:
            self._sock = open_connector()
        except ConnectorUnavailable as exc:
            self.available, self.reason = False, str(exc)
            log.warning("%s: new processes are seen by the sweep alone (up to "
                        "collector.interval_s late)", exc)
            return False
        self.available = True
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        batch: list[ProcEvent] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflows += 1
                    log.info("process events overflowed the kernel's queue; rescanning /proc")
                    self._call(self.rescanners, ())
                    continue
                log.warning("reading process events failed: %s", exc)
                break
            batch.extend(parse(data))
        if batch:
            self.events += len(batch)
            self._call(self.listeners, (batch,))

    @staticmethod
    def _call(functions: Iterable[Callable[..., None]], args: tuple) -> None:
        for fn in functions:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - one listener must not stop the others
                log.warning("a process event listener failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

