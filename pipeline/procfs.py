"""Low-level /proc readers, without psutil.

Every reader takes the ``proc`` folder to read (``HostPaths.proc``: ``/proc`` on a live
host, a folder of snapshot files in tests). Processes vanish between any two
reads: a reader returns ``None`` (or zeros, where the file is optional) for a file that is
missing or unreadable and never lets an ``OSError`` out.

The parsers work on ``bytes`` because decoding whole files costs more than the parse.
Field numbers below are 1-based, as in proc(5).
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import NamedTuple

PF_KTHREAD = 0x00200000            # stat field 9 (flags): a kernel thread

CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")

# Indices into the list that ``split_stat`` returns: fields after "(comm)", field 3 first.
ST_STATE = 0            # field 3
ST_PPID = 1             # field 4
ST_FLAGS = 6            # field 9
ST_UTIME = 11           # field 14, clock ticks
ST_STIME = 12           # field 15
ST_NICE = 16            # field 19
ST_THREADS = 17         # field 20
ST_START = 19           # field 22, clock ticks since boot
ST_VSIZE = 20           # field 23, bytes
ST_RSS = 21             # field 24, pages
ST_PROCESSOR = 36       # field 39, CPU last run on
ST_RT_PRIORITY = 37     # field 40
ST_POLICY = 38          # field 41

_O_RDONLY = os.O_RDONLY
_open = os.open
_read = os.read
_close = os.close


def clock_ticks() -> int:
    return CLOCK_TICKS


def page_size() -> int:
    return PAGE_SIZE


def read_bytes(path: str | bytes, size: int = 4096) -> bytes | None:
    """The whole file, or None when it is missing or unreadable (the process is gone).

    os.open/os.read skips the io layer's buffer and object set-up, which is most of the
    cost of reading a small /proc file from Python.
    """
    try:
        fd = _open(path, _O_RDONLY)
    except OSError:
        return None
    try:
        data = _read(fd, size)
        if len(data) == size:          # larger than one read: keep going
            parts = [data]
            while True:
                more = _read(fd, size)
                if not more:
                    break
                parts.append(more)
            data = b"".join(parts)
        return data
    except OSError:
        return None
    finally:
        _close(fd)


def list_pids(proc: str) -> list[int]:
    """Numeric entries of a proc folder, i.e. every process."""
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def list_tids(proc: str, pid: int) -> list[int]:
    """Thread ids of one process; empty if it is gone."""
    try:
        names = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


# --- /proc/PID/stat ------------------------------------------------------------------------

def split_stat(data: bytes) -> tuple[bytes, list[bytes]]:
    """(comm, fields from field 3 on). comm may hold spaces and ')': split at the last ')'."""
    close = data.rindex(b")")
    return data[data.index(b"(") + 1:close], data[close + 2:].split()


class Stat(NamedTuple):
    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    utime: int                 # clock ticks, all threads
    stime: int
    nice: int
    num_threads: int
    start_time: int            # clock ticks since boot
    vsize: int                 # bytes
    rss_pages: int
    processor: int
    rt_priority: int
    policy: int

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(data: bytes) -> Stat:
    comm, f = split_stat(data)
    return Stat(
        pid=int(data[:data.index(b" ")]),
        comm=comm.decode("utf-8", "replace"),
        state=f[ST_STATE].decode(),
        ppid=int(f[ST_PPID]),
        flags=int(f[ST_FLAGS]),
        utime=int(f[ST_UTIME]),
        stime=int(f[ST_STIME]),
        nice=int(f[ST_NICE]),
        num_threads=int(f[ST_THREADS]),
        start_time=int(f[ST_START]),
        vsize=int(f[ST_VSIZE]),
        rss_pages=int(f[ST_RSS]),
        processor=int(f[ST_PROCESSOR]) if len(f) > ST_PROCESSOR else -1,
        rt_priority=int(f[ST_RT_PRIORITY]) if len(f) > ST_RT_PRIORITY else 0,
        policy=int(f[ST_POLICY]) if len(f) > ST_POLICY else 0,
    )


def read_stat(proc: str, pid: int, tid: int | None = None) -> Stat | None:
    path = f"{proc}/{pid}/stat" if tid is None else f"{proc}/{pid}/task/{tid}/stat"
    data = read_bytes(path)
    if not data:
        return None
    try:
        return parse_stat(data)
    except (ValueError, IndexError):
        return None


# --- /proc/PID/status ----------------------------------------------------------------------

_VOL = b"\nvoluntary_ctxt_switches:"
_INVOL = b"\nnonvoluntary_ctxt_switches:"
_AFFINITY = b"\nCpus_allowed_list:"
_UID = b"\nUid:"


def _line_value(data: bytes, key: bytes, start: int = 0) -> tuple[bytes | None, int]:
    """The text after ``key`` up to the end of its line, and where that line ends."""
    i = data.find(key, start)
    if i < 0:
        return None, start
    i += len(key)
    j = data.find(b"\n", i)
    if j < 0:
        j = len(data)
    return data[i:j].strip(), j


def status_ctx_switches(data: bytes) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the one task a status file is about."""
    i = data.rfind(_VOL)          # near the end: search from there
    if i < 0:
        return 0, 0
    i += len(_VOL)
    j = data.find(b"\n", i)
    vol = int(data[i:j])
    k = data.find(_INVOL, j) + len(_INVOL)
    e = data.find(b"\n", k)
    return vol, int(data[k:e if e >= 0 else len(data)])


def status_affinity(data: bytes) -> bytes:
    value, _ = _line_value(data, _AFFINITY)
    return value or b""


def status_uid(data: bytes) -> int:
    """The real uid (first number of the Uid line), -1 if absent."""
    value, _ = _line_value(data, _UID)
    if not value:
        return -1
    return int(value.split()[0])


class Status(NamedTuple):
    name: str
    uid: int
    threads: int
    vm_rss_kb: int
    vm_size_kb: int
    vol_ctx: int
    invol_ctx: int
    cpus_allowed_list: str


def parse_status(data: bytes) -> Status:
    """The fields corelane uses, by scanning for their keys (no per-line split)."""
    def number(key: bytes) -> int:
        value, _ = _line_value(data, key)
        return int(value.split()[0]) if value else 0

    name, _ = _line_value(b"\n" + data, b"\nName:")
    vol, invol = status_ctx_switches(data)
    return Status(
        name=(name or b"").decode("utf-8", "replace"),
        uid=status_uid(data),
        threads=number(b"\nThreads:") or 1,
        vm_rss_kb=number(b"\nVmRSS:"),
        vm_size_kb=number(b"\nVmSize:"),
        vol_ctx=vol,
        invol_ctx=invol,
        cpus_allowed_list=status_affinity(data).decode(),
    )


def read_status(proc: str, pid: int, tid: int | None = None) -> Status | None:
    path = f"{proc}/{pid}/status" if tid is None else f"{proc}/{pid}/task/{tid}/status"
    data = read_bytes(path)
    if not data:
        return None
    try:
        return parse_status(data)
    except (ValueError, IndexError):
        return None


# --- /proc/PID/schedstat -------------------------------------------------------------------

class SchedStat(NamedTuple):
    run_time_ns: int           # time on a CPU
    run_delay_ns: int          # time runnable, waiting for a CPU
    timeslices: int


def parse_schedstat(data: bytes) -> SchedStat:
    a, b, c = data.split()[:3]
    return SchedStat(int(a), int(b), int(c))


def read_schedstat(proc: str, pid: int, tid: int | None = None) -> SchedStat | None:
    path = f"{proc}/{pid}/schedstat" if tid is None else f"{proc}/{pid}/task/{tid}/schedstat"
    data = read_bytes(path, 256)
    if not data:
        return None
    try:
        return parse_schedstat(data)
    except ValueError:
        return None


# --- /proc/PID/io --------------------------------------------------------------------------

class IoCounters(NamedTuple):
    read_bytes: int = 0
    write_bytes: int = 0
    rchar: int = 0
    wchar: int = 0


IO_ZERO = IoCounters()


def parse_io(data: bytes) -> IoCounters:
    f = data.split()
    # The kernel prints a fixed order: rchar wchar syscr syscw read_bytes write_bytes ...
    if len(f) >= 12 and f[0] == b"rchar:" and f[8] == b"read_bytes:":
        return IoCounters(int(f[9]), int(f[11]), int(f[1]), int(f[3]))
    values = {f[i]: f[i + 1] for i in range(0, len(f) - 1, 2)}
    return IoCounters(int(values.get(b"read_bytes:", 0)), int(values.get(b"write_bytes:", 0)),
                      int(values.get(b"rchar:", 0)), int(values.get(b"wchar:", 0)))


def read_io(proc: str, pid: int) -> IoCounters:
    """I/O counters; zeros where the file is missing or not ours to read."""
    data = read_bytes(f"{proc}/{pid}/io", 1024)
    if not data:
        return IO_ZERO
    try:
        return parse_io(data)
    except ValueError:
        return IO_ZERO


# --- cmdline and cgroup --------------------------------------------------------------------

def parse_cmdline(data: bytes) -> str:
    """NUL-separated arguments as one line; empty for kernel threads and zombies."""
    return data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def read_cmdline(proc: str, pid: int) -> str | None:
    """None when the process is gone, "" when it has no command line."""
    data = read_bytes(f"{proc}/{pid}/cmdline")
    if data is None:
        return None
    return parse_cmdline(data)


def autogroup_enabled(proc: str) -> bool | None:
    """``kernel.sched_autogroup_enabled``: with it on, each session is a scheduling group
    and nice orders threads only inside one; None where the kernel has no such switch."""
    data = read_bytes(f"{proc}/sys/kernel/sched_autogroup_enabled", 16)
    if not data or not data.strip().isdigit():
        return None
    return data.strip() != b"0"


PRESSURE_RESOURCES = ("cpu", "memory", "io")


def parse_pressure(resource: str, text: str) -> dict[str, float]:
    """A PSI file (``/proc/pressure/memory``, a cgroup's ``memory.pressure``) as
    {"memory_some": avg10, "memory_full": avg10}: the share of the last 10 s, in percent,
    in which some (or all) runnable tasks were stalled on the resource."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for field in rest.split():
            name, _, value = field.partition("=")
            if name == "avg10" and kind in ("some", "full"):
                try:
                    out[f"{resource}_{kind}"] = float(value)
                except ValueError:
                    pass
    return out


def read_pressure(proc: str) -> dict[str, float]:
    """Host-wide pressure stall figures; empty where the kernel has PSI off (no
    /proc/pressure, or ``psi=0``)."""
    return read_pressure_files(lambda resource: f"{proc}/pressure/{resource}")


def read_pressure_files(path_of: Callable[[str], str]) -> dict[str, float]:
    """The pressure figures of the PSI files ``path_of(resource)`` names (the host's, or a
    cgroup's ``<resource>.pressure``); a file that is not there adds nothing."""
    out: dict[str, float] = {}
    for resource in PRESSURE_RESOURCES:
        data = read_bytes(path_of(resource))
        if data:
            out.update(parse_pressure(resource, data.decode("ascii", "replace")))
    return out


def read_argv(proc: str, pid: int) -> list[str]:
    """The command line as its arguments (empty when the process is gone)."""
    data = read_bytes(f"{proc}/{pid}/cmdline")
    return [part.decode("utf-8", "replace") for part in (data or b"").split(b"\0") if part]


# 64 hex digits as the last path element, bare (cgroup v1 cgroupfs driver: /docker/<id>,
# /kubepods/.../<id>) or in a systemd scope (docker-<id>.scope, cri-containerd-<id>.scope,
# crio-<id>.scope, libpod-<id>.scope).
_CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$")


def container_id(cgroup_path: str) -> str | None:
    """The container id a cgroup path names, or None."""
    m = _CONTAINER_ID.search(cgroup_path.rstrip("/"))
    return m.group(1) if m else None


def parse_cgroup(text: str) -> tuple[str, str | None]:
    """(the most telling cgroup path, container id or None) from a /proc/PID/cgroup file.

    v2 has one line ``0::/path``; v1 one line per hierarchy (``4:cpu,cpuacct:/path``), and
    hybrid hosts have both. A path naming a container wins; then a non-root v2 path; then
    the cpuset or cpu hierarchy (the ones corelane acts on); then any non-root path.
    """
    paths: list[tuple[str, str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths.append((parts[1], parts[2]))
    for _, path in paths:
        cid = container_id(path)
        if cid:
            return path, cid
    for controllers, path in paths:
        if controllers == "" and path != "/":
            return path, None
    for wanted in ("cpuset", "cpu"):
        for controllers, path in paths:
            if wanted in controllers.split(",") and path != "/":
                return path, None
    for _, path in paths:
        if path != "/":
            return path, None
    return ("/" if paths else ""), None


def read_cgroup(proc: str, pid: int) -> tuple[str, str | None] | None:
    """(cgroup path, container id) or None when the process is gone."""
    data = read_bytes(f"{proc}/{pid}/cgroup")
    if data is None:
        return None
    return parse_cgroup(data.decode("utf-8", "replace"))


# --- host-wide -----------------------------------------------------------------------------

def boot_time(proc: str, now: float | None = None) -> float:
    """Seconds since the epoch at boot; 0.0 if unknown.

    ``btime`` in /proc/stat is whole seconds, cut down: up to a second early, which makes
    every process look up to a second older than it is (and its start-up over before it
    is). ``now`` less /proc/uptime (10 ms steps, on the same boot clock as a process's
    start time) gives the fraction; where the two disagree by more than a second (a saved
    /proc read later) ``btime`` stands."""
    data = read_bytes(os.path.join(proc, "stat"), 65536)
    if not data:
        return 0.0
    value, _ = _line_value(b"\n" + data, b"\nbtime")
    if not value:
        return 0.0
    btime = float(value)
    uptime = read_bytes(os.path.join(proc, "uptime"), 256)
    try:
        up = float(uptime.split()[0]) if uptime else None
    except (ValueError, IndexError):
        up = None
    if up is not None:
        booted = (time.time() if now is None else now) - up
        if btime - 0.05 <= booted < btime + 1.05:   # 10 ms steps, and the read between
            return booted
    return btime



class ThreadTotals(NamedTuple):
    vol_ctx: int
    invol_ctx: int
    run_time_ns: int
    run_delay_ns: int
    timeslices: int
    threads_read: int


def thread_totals(proc: str, pid: int) -> ThreadTotals | None:
    """Context switches and schedstat summed over every thread in /proc/PID/task.

    The leader's own files cover the leader thread alone. Threads that exit mid-read are
    skipped; None when the process itself is gone.
    """
    tids = list_tids(proc, pid)
    if not tids:
        return None
    vol = invol = run = delay = slices = n = 0
    for tid in tids:
        base = f"{proc}/{pid}/task/{tid}/"
        st = read_bytes(base + "status")
        ss = read_bytes(base + "schedstat", 256)
        if not st or not ss:
            continue
        try:
            v, i = status_ctx_switches(st)
            a, b, c = ss.split()[:3]
            run += int(a)
            delay += int(b)
            slices += int(c)
        except ValueError:
            continue
        vol += v
        invol += i
        n += 1
    return ThreadTotals(vol, invol, run, delay, slices, n)
