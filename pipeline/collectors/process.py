"""The process collector: one ``ProcessSample`` per process per sweep, from /proc.

A process is (pid, start_time). Per identity the sampler keeps what it needs for rates
(the previous CPU ticks and wall time) and what rarely changes (cmdline, uid, cgroup,
container id, whether it is a kernel thread), read once on first sight. An identity that
is not seen in a sweep is dropped; a pid that comes back with another start time is a new
identity (cpu_share 0.0 again).

The sweep is the collector's hot path (1,000 processes every second or so): it reads
stat, status, schedstat and io of each process with os.open/os.read and parses only the
fields it needs by position or by a key search, with no regular expressions, no decoding
of whole files and no intermediate objects beyond the sample itself.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from pipeline import procfs
from pipeline.hostpaths import LIVE, HostPaths
from pipeline.procfs import (
    PF_KTHREAD, ST_FLAGS, ST_NICE, ST_POLICY, ST_PPID, ST_PROCESSOR, ST_RSS, ST_RT_PRIORITY,
    ST_START, ST_STATE, ST_STIME, ST_THREADS, ST_UTIME, ST_VSIZE,
)
from pipeline.events import ProcessSample
from pipeline.topology import cpulist_format

ThreadDetail = Literal["all", "leader"]

_VOL = b"\nvoluntary_ctxt_switches:"
_VOL_LEN = len(_VOL)
_INVOL_LEN = len(b"\nnonvoluntary_ctxt_switches:")
_AFF = b"\nCpus_allowed_list:"
_AFF_LEN = len(_AFF)

# Slots of the per-identity state list (a list indexes faster than attribute access).
(_START_B, _TICKS, _WALL, _TEMPLATE, _COMM, _DIR, _STAT, _PARSED, _SCHED, _SCHEDV, _CTX,
 _IO, _TASKS, _SINGLE) = range(14)

_NO_IO = (0, 0, 0, 0)
_O_RDONLY = os.O_RDONLY
_open = os.open
_read = os.read
_close = os.close


class ProcessSampler:
    """Sweeps every process under ``paths.proc``.

    ``thread_detail="all"`` sums context switches and schedstat over every thread of a
    multi-threaded process (a worker thread's wake-ups are not in the leader's files);
    ``"leader"`` reads the leader's files alone, which is cheaper and blind to them.
    ``clock`` is the wall clock for cpu_share (monotonic seconds), injectable for tests.

    Unchanged files are not parsed twice: a stat line identical to the previous sweep's
    reuses its parsed values, and a single-threaded process whose schedstat has not moved
    (it has not run since, so it cannot have switched or done I/O) reuses its context
    switches and I/O counters without reading /proc/PID/io.
    """

    def __init__(self, paths: HostPaths = LIVE, thread_detail: ThreadDetail = "all",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if thread_detail not in ("all", "leader"):
            raise ValueError(f"thread_detail must be 'all' or 'leader', not {thread_detail!r}")
        self.thread_detail: ThreadDetail = thread_detail
        self._proc = paths.proc
        self._live = paths.is_live      # an affinity can be asked of the kernel by pid
        self._clock = clock
        self._state: dict[str, list] = {}
        self._last_sweep: float | None = None
        self.interval_s = 0.0             # wall time between the last two sweeps
        self.reuse_unchanged = True       # False: read and parse every file every sweep
        # Interned decodings of values that repeat across processes and sweeps.
        self._affinities: dict[bytes, str] = {}
        self._states: dict[bytes, str] = {}

    @property
    def known(self) -> int:
        """Identities seen in the last sweep."""
        return len(self._state)

    def _first_sight(self, pid: int, start: int, pdir: str, comm: bytes, flags: int,
                     status: bytes) -> list | None:
        """State for a new identity: the static facts, read once. None if it is gone."""
        proc = self._proc
        cmdline = procfs.read_cmdline(proc, pid)
        if cmdline is None:
            return None
        cg = procfs.read_cgroup(proc, pid)
        cgroup, cid = cg if cg is not None else ("", None)
        try:
            uid = procfs.status_uid(status)
        except ValueError:
            uid = -1
        template = ProcessSample(
            pid=pid, start_time=start, ppid=0, name=comm.decode("utf-8", "replace"),
            cmdline=cmdline, uid=uid, cgroup=cgroup, container_id=cid,
            kernel_thread=bool(flags & PF_KTHREAD))
        return [b"", 0, 0.0, template, comm, pdir, b"", None, b"", None, None, _NO_IO, {},
                False]

    def _status_affinity(self, status: bytes) -> str:
        """Cpus_allowed_list from a status file, which has it a few lines before the end."""
        end = len(status)
        a = status.rfind(_AFF, end - 1024 if end > 1024 else 0)
        if a < 0:
            a = status.rfind(_AFF)
        if a < 0:
            return ""
        a += _AFF_LEN
        aff_b = status[a:status.find(b"\n", a)]
        affinity = self._affinities.get(aff_b)
        if affinity is None:
            affinity = self._affinities[aff_b] = aff_b.strip().decode()
        return affinity

    def sweep(self) -> list[ProcessSample]:
        """One sample per live process. Processes that vanish mid-read are left out."""
        now = self._clock()
        last = self._last_sweep
        self.interval_s = now - last if last is not None else 0.0
        self._last_sweep = now
        try:
            names = os.listdir(self._proc)
        except OSError:
            names = []
        out, self._state = self._read(names, now)  # identities not seen are evicted
        return out

    def sample(self, pids: Iterable[int]) -> list[ProcessSample]:
        """Samples of some processes only, between sweeps (new ones, to judge them sooner);
        each one's rates are since its own last sample."""
        out, seen = self._read([str(p) for p in pids], self._clock())
        self._state.update(seen)
        return out

    def _read(self, names: Iterable[str], now: float) -> tuple[list[ProcessSample],
                                                              dict[str, list]]:
        """Samples of the named /proc entries, and their identities' state after."""
        proc = self._proc
        old = self._state
        new: dict[str, list] = {}
        out: list[ProcessSample] = []
        append = out.append
        hz = float(procfs.CLOCK_TICKS)
        page = procfs.PAGE_SIZE
        live = self._live
        read = procfs.read_bytes
        getaffinity = os.sched_getaffinity
        states = self._states
        all_threads = self.thread_detail == "all"
        reuse = self.reuse_unchanged
        O_RDONLY = _O_RDONLY
        os_open, os_read, os_close = _open, _read, _close

        for name in names:
            st = old.get(name)
            if st is None:
                if not name.isdigit():
                    continue
                pdir = f"{proc}/{name}/"
            else:
                pdir = st[_DIR]
            # The two files every sweep needs; either missing: the process is gone. Its
            # status (the costliest file to generate) is read only where needed, below.
            try:
                fd = os_open(pdir + "stat", O_RDONLY)
                try:
                    data = os_read(fd, 1024)
                finally:
                    os_close(fd)
                fd = os_open(pdir + "schedstat", O_RDONLY)
                try:
                    sched = os_read(fd, 256)
                finally:
                    os_close(fd)
            except OSError:
                continue
            if not data or not sched:
                continue
            status = b""
            try:
                if reuse and st is not None and data == st[_STAT]:
                    # Same stat line: same identity, same values (the usual idle process).
                    state, ppid, ticks, nice, threads, vsize, rss, last_cpu, rt, policy = \
                        st[_PARSED]
                    share = 0.0
                else:
                    close = data.rindex(b")")
                    f = data[close + 2:].split()
                    start_b = f[ST_START]
                    if st is None or start_b != st[_START_B]:
                        # New identity (first sight, or the pid was reused).
                        status = read(pdir + "status")
                        if not status:
                            continue
                        st = self._first_sight(int(name), int(start_b), pdir,
                                               data[len(name) + 2:close],
                                               int(f[ST_FLAGS]), status)
                        if st is None:
                            continue
                        st[_START_B] = start_b
                        fresh = True
                    else:
                        fresh = False
                        comm = data[len(name) + 2:close]
                        if comm != st[_COMM]:          # renamed (prctl): a new template
                            st[_COMM] = comm
                            st[_TEMPLATE] = msgspec.structs.replace(
                                st[_TEMPLATE], name=comm.decode("utf-8", "replace"))
                    state_b = f[ST_STATE]
                    state = states.get(state_b)
                    if state is None:
                        state = states[state_b] = state_b.decode()
                    ticks = int(f[ST_UTIME]) + int(f[ST_STIME])
                    threads = int(f[ST_THREADS])
                    if len(f) > ST_POLICY:
                        last_cpu = int(f[ST_PROCESSOR])
                        rt = int(f[ST_RT_PRIORITY])
                        policy = int(f[ST_POLICY])
                    else:
                        last_cpu, rt, policy = -1, 0, 0
                    ppid = int(f[ST_PPID])
                    nice = int(f[ST_NICE])
                    vsize = int(f[ST_VSIZE])
                    rss = int(f[ST_RSS]) * page
                    st[_STAT] = data
                    st[_PARSED] = (state, ppid, ticks, nice, threads, vsize, rss, last_cpu,
                                   rt, policy)
                    if fresh:
                        share = 0.0
                    else:
                        dt = now - st[_WALL]
                        share = (ticks - st[_TICKS]) / hz / dt if dt > 0 else 0.0

                single = threads == 1
                quiet = reuse and single and st[_SINGLE] and sched == st[_SCHED]
                # Affinity: corelane itself changes it on sleeping processes, so it is read
                # every sweep. A process that has not run since the last one has nothing
                # else new in its status: one syscall answers for much less than the file.
                affinity = None
                if quiet and live:
                    try:
                        affinity = cpulist_format(frozenset(getaffinity(int(name))))
                    except OSError:            # gone, or not ours to ask: the file says
                        pass
                if affinity is None:
                    status = status or read(pdir + "status")
                    if not status:
                        continue
                    affinity = self._status_affinity(status)

                if quiet:
                    # Not run since the last sweep: no switches, no I/O of its own.
                    run, delay, slices = st[_SCHEDV]
                    vol, invol = st[_CTX]
                    io_r, io_w, io_rc, io_wc = st[_IO]
                else:
                    i = status.rfind(_VOL) + _VOL_LEN
                    j = status.find(b"\n", i)
                    vol = int(status[i:j])
                    k = j + _INVOL_LEN
                    e = status.find(b"\n", k)
                    invol = int(status[k:e] if e > 0 else status[k:])
                    run, delay, slices = sched.split()[:3]
                    run = int(run)
                    delay = int(delay)
                    slices = int(slices)
                    st[_SCHED] = sched
                    st[_SCHEDV] = (run, delay, slices)
                    st[_CTX] = (vol, invol)
                    if not single and all_threads:
                        # The leader's files cover the leader thread: add the others'.
                        tv, ti, tr, td, ts = self._other_threads(pdir, name, st)
                        vol += tv
                        invol += ti
                        run += tr
                        delay += td
                        slices += ts
                    try:
                        fd = os_open(pdir + "io", O_RDONLY)
                        try:
                            io = os_read(fd, 1024)
                        finally:
                            os_close(fd)
                    except OSError:            # not ours to read, or gone: zeros
                        io = b""
                    if io:
                        g = io.split()
                        if len(g) >= 12 and g[8] == b"read_bytes:":
                            io_r, io_w, io_rc, io_wc = (int(g[9]), int(g[11]), int(g[1]),
                                                        int(g[3]))
                        else:
                            io_r, io_w, io_rc, io_wc = procfs.parse_io(io)
                    else:
                        io_r = io_w = io_rc = io_wc = 0
                    st[_IO] = (io_r, io_w, io_rc, io_wc)
                st[_SINGLE] = single

                # Copy the identity's template and set the fields that move: several
                # times cheaper than a 29-keyword constructor call.
                s = st[_TEMPLATE].__copy__()
                s.ppid = ppid
                s.state = state
                s.cpu_share = share
                s.cpu_time_s = ticks / hz
                s.rss_bytes = rss
                s.vm_bytes = vsize
                s.threads = threads
                s.vol_ctx = vol
                s.invol_ctx = invol
                s.run_time_ns = run
                s.run_delay_ns = delay
                s.timeslices = slices
                s.io_read_bytes = io_r
                s.io_write_bytes = io_w
                s.io_rchar = io_rc
                s.io_wchar = io_wc
                s.last_cpu = last_cpu
                s.nice = nice
                s.policy = policy
                s.rt_priority = rt
                s.affinity = affinity
                append(s)
            except (ValueError, IndexError):
                # A file cut short by an exiting process: the process is gone.
                continue
            st[_TICKS] = ticks
            st[_WALL] = now
            new[name] = st
        return out, new

    def _other_threads(self, pdir: str, leader: str, st: list) -> tuple[int, int, int, int, int]:
        """Context switches and schedstat of every thread but the leader, summed.

        A thread whose schedstat has not moved since the last sweep has not switched
        either, so its status file is not read again.
        """
        try:
            tids = os.listdir(pdir + "task")
        except OSError:
            return 0, 0, 0, 0, 0
        read = procfs.read_bytes
        seen = st[_TASKS] if self.reuse_unchanged else {}
        kept: dict[str, tuple] = {}
        vol = invol = run = delay = slices = 0
        for tid in tids:
            if tid == leader:
                continue
            base = f"{pdir}task/{tid}/"
            sched = read(base + "schedstat", 256)
            if not sched:
                continue                   # the thread exited between listdir and read
            prev = seen.get(tid)
            if prev is not None and prev[0] == sched:
                row = prev
            else:
                status = read(base + "status")
                if not status:
                    continue
                try:
                    v, i = procfs.status_ctx_switches(status)
                    a, b, c = sched.split()[:3]
                    row = (sched, v, i, int(a), int(b), int(c))
                except ValueError:
                    continue
            kept[tid] = row
            vol += row[1]
            invol += row[2]
            run += row[3]
            delay += row[4]
            slices += row[5]
        st[_TASKS] = kept
        return vol, invol, run, delay, slices
