"""Finding the inference runtime's processes and pinning every one of their threads.

Processes are found by systemd unit (their cgroup path), pid file, container id (cgroup path)
or executable name, through psutil (whose ``psutil.PROCFS_PATH`` moves the proc root for recorded
trees; ``--proc-root`` sets it). Each thread of the runtime gets ``sched_setaffinity``
(command-line equivalent: ``taskset -a -p -c 2-15 PID``). New threads inherit their creator's
mask, but the daemon re-checks every ``pinning.interval_s`` anyway. The runtime's configured
thread count (llama.cpp ``-t``/``--threads``, ``OMP_NUM_THREADS``) is compared with the
inference cores; it is read once per process (a process's command line and environment do not
change).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .errors import CommandError, UnavailableError
from .knobs import Change, Knob
from .runner import Runner
from .state import StateStore
from .sysfs import format_cpulist, parse_cpulist

log = logging.getLogger(__name__)


@dataclass
class RuntimeMatch:
    """How to find the runtime: any of these that is set must match."""

    unit: str | None = None
    pidfile: str | None = None
    container: str | None = None
    name: str | None = None
    #: ids of the containers found by ``container_label`` (resolved through the engine every pass)
    container_label: str | None = None
    container_ids: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.unit or self.pidfile or self.container or self.name or self.container_label)


def parse_cgroup(text: str) -> list[str]:
    """cgroup paths of a process from ``/proc/<pid>/cgroup``.

    >>> parse_cgroup("0::/system.slice/llama-server.service\\n")
    ['/system.slice/llama-server.service']
    """
    out = []
    for ln in text.splitlines():
        parts = ln.split(":", 2)
        if len(parts) == 3:
            out.append(parts[2])
    return out


def cgroup_matches(paths: list[str], unit: str | None, container: str | None | list[str]) -> bool:
    """True when a cgroup path names the unit (``/<unit>``) or contains the container id (or one of them).

    >>> cgroup_matches(["/system.slice/llama-server.service"], "llama-server.service", None)
    True
    >>> cgroup_matches(["/system.slice/docker-abc123.scope"], None, "abc123")
    True
    >>> cgroup_matches(["/system.slice/llama-server.service.d"], "llama-server.service", None)
    False
    """
    ids = [container] if isinstance(container, str) else list(container or [])
    for p in paths:
        segs = p.split("/")
        if unit and unit in segs:
            return True
        if any(c and c in p for c in ids):
            return True
    return False


def parse_pidfile(text: str) -> int | None:
    """The pid in a pid file, or ``None``.

    >>> parse_pidfile("1234\\n"), parse_pidfile("junk")
    (1234, None)
    """
    t = text.strip().split()
    return int(t[0]) if t and t[0].isdigit() else None


def parse_thread_count(argv: list[str], environ: dict[str, str]) -> int | None:
    """The thread count a runtime was started with: llama.cpp ``-t N``/``--threads N``/
    ``--threads=N``, else ``OMP_NUM_THREADS``.

    >>> parse_thread_count(["llama-server", "-m", "x.gguf", "-t", "14"], {})
    14
    >>> parse_thread_count(["python", "serve.py"], {"OMP_NUM_THREADS": "8"})
    8
    >>> parse_thread_count(["llama-server", "--threads=6"], {}) , parse_thread_count(["x"], {})
    (6, None)
    """
    for i, a in enumerate(argv):
        if a in ("-t", "--threads") and i + 1 < len(argv) and argv[i + 1].isdigit():
            return int(argv[i + 1])
        if a.startswith("--threads=") and a.split("=", 1)[1].isdigit():
            return int(a.split("=", 1)[1])
    v = environ.get("OMP_NUM_THREADS", "").split(",")[0]
    return int(v) if v.isdigit() else None


def read_cgroup(pid: int) -> list[str]:
    """cgroup paths of a process (``/proc/<pid>/cgroup`` under ``psutil.PROCFS_PATH``; psutil has
    no accessor for them); empty when the process is gone."""
    try:
        with open(os.path.join(psutil.PROCFS_PATH, str(pid), "cgroup"), errors="replace") as f:
            return parse_cgroup(f.read())
    except OSError:
        return []


def find_runtime(match: RuntimeMatch) -> list[int]:
    """Pids of the runtime's processes."""
    if match.empty():
        return []
    pids: set[int] = set()
    if match.pidfile:
        try:
            pid = parse_pidfile(Path(match.pidfile).read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid > 0 and psutil.pid_exists(pid):
            pids.add(pid)
    ids = [c for c in [match.container, *match.container_ids] if c]
    if match.unit or ids or match.name:
        me = os.getpid()
        for p in psutil.process_iter(["name", "cmdline"] if match.name else None):
            if p.pid == me:
                continue
            if (match.unit or ids) and cgroup_matches(read_cgroup(p.pid), match.unit, ids):
                pids.add(p.pid)
                continue
            if match.name:
                argv = p.info["cmdline"] or []
                if p.info["name"] == match.name or (argv and os.path.basename(argv[0]) == match.name):
                    pids.add(p.pid)
    return sorted(pids)


@dataclass
class PinReport:
    pids: list[int] = field(default_factory=list)
    threads: int = 0
    newly_pinned: int = 0
    failed: int = 0
    thread_mismatch: dict[int, int] = field(default_factory=dict)


class Pinner:
    """Pins every thread of the runtime to the inference CPUs; remembers originals to undo."""

    def __init__(self, match: RuntimeMatch, state: StateStore | None = None) -> None:
        self.match = match
        self.state = state if state is not None else StateStore(None)
        self.pinned_total = 0
        self._reported: dict[int, int] = {}
        #: pid -> (its psutil.Process, its configured thread count): read once per process
        self._procs: dict[int, tuple[psutil.Process, int | None]] = {}

    def _process(self, pid: int) -> tuple[psutil.Process, int | None] | None:
        known = self._procs.get(pid)
        if known is not None and known[0].is_running():  # same pid and start time
            return known
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                argv = proc.cmdline()
                try:
                    env = proc.environ()
                except psutil.AccessDenied:
                    env = {}
        except psutil.Error:
            return None
        self._procs[pid] = (proc, parse_thread_count(argv, env))
        return self._procs[pid]

    def pin(self, cpus: list[int], dry_run: bool = False, threads: int | None = None) -> PinReport:
        """One pass: pin any thread whose mask is not ``cpus`` (``dry_run``: only count them).

        ``threads`` is the thread count the placement wants (one per physical core of ``cpus``; default: one
        per CPU); a runtime started with another count is reported, once per process and count.
        Original masks are written to the state file before the threads are changed.
        """
        want = set(cpus)
        wanted_threads = threads if threads else len(want)
        rep = PinReport()
        if not want:
            return rep
        todo: list[tuple[int, int, set[int]]] = []
        pids = find_runtime(self.match)
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
        for pid in pids:
            known = self._process(pid)
            if known is None:
                continue  # gone meanwhile
            proc, configured = known
            try:
                tids = [t.id for t in proc.threads()]
            except psutil.Error:
                continue
            rep.pids.append(pid)
            if configured is not None and configured != wanted_threads:
                rep.thread_mismatch[pid] = configured
            for tid in tids:
                try:
                    have = os.sched_getaffinity(tid)
                except OSError:
                    continue  # the thread ended meanwhile
                rep.threads += 1
                if have != want:
                    todo.append((pid, tid, have))
        if dry_run:
            rep.newly_pinned = len(todo)  # would be pinned
            todo = []
        self.state.record_pins({tid: format_cpulist(have) for _, tid, have in todo})
        for pid, tid, _ in todo:
            try:
                os.sched_setaffinity(tid, want)
                rep.newly_pinned += 1
            except ProcessLookupError:
                continue
            except OSError as exc:
                rep.failed += 1
                log.warning("pin thread %d of %d: %s", tid, pid, exc)
        self.pinned_total += 0 if dry_run else rep.newly_pinned
        for pid, n in rep.thread_mismatch.items():
            if self._reported.get(pid) != n:  # once per process and count, not every pass
                log.warning("runtime pid %d runs %d threads but its placement wants %d (inference CPUs %s)",
                            pid, n, wanted_threads, format_cpulist(want))
        self._reported = dict(rep.thread_mismatch)
        return rep

    def unpin(self) -> int:
        """Give threads that still exist their original masks back (persisted, so this also
        works after a SIGKILL and restart); returns how many."""
        n = 0
        for tid, mask in list(self.state.pins.items()):
            try:
                os.sched_setaffinity(tid, parse_cpulist(mask))
                n += 1
            except OSError:
                pass  # the thread is gone
        self.state.forget_pins(list(self.state.pins))
        return n


class SliceCpus:
    """The OS side's CPUs as knobs: ``AllowedCPUs=`` of system.slice and user.slice.

    Read with ``systemctl show --property=AllowedCPUs --value SLICE`` (empty: unrestricted),
    written with ``systemctl set-property --runtime SLICE AllowedCPUs=LIST`` (an empty value
    lifts the limit). Only where cgroup v2 with the cpuset controller is mounted. As knobs they
    go through the same save -> apply -> verify -> restore path, so the original survives a
    SIGKILL of the daemon in the state file.
    """

    def __init__(self, runner: Runner, cgroup_root: str = "/sys/fs/cgroup", slices: tuple[str, ...] =
                 ("system.slice", "user.slice")) -> None:
        self.runner = runner
        self.cgroup_root = Path(cgroup_root)
        self.slices = slices

    def available(self) -> bool:
        try:
            ctl = (self.cgroup_root / "cgroup.controllers").read_text().split()
        except OSError:
            return False
        return "cpuset" in ctl and self.runner.which("systemctl") is not None

    def _read(self, unit: str) -> str | None:
        try:
            return self.runner.run(["systemctl", "show", "--property=AllowedCPUs", "--value", unit]).strip()
        except (CommandError, UnavailableError):
            return None

    def _write(self, unit: str, cpus: str) -> None:
        argv = ["systemctl", "set-property", "--runtime", unit, f"AllowedCPUs={cpus}"]
        log.info("run %s", shlex.join(argv))
        self.runner.run(argv)

    def knobs(self) -> dict[str, Knob]:
        """One knob per slice (empty when cgroup v2 cpuset or systemctl is missing)."""
        if not self.available():
            return {}
        return {f"systemd.{s}.AllowedCPUs": Knob(f"systemd.{s}.AllowedCPUs", "systemd", f"{s} AllowedCPUs",
                                                 read=lambda s=s: self._read(s),
                                                 write=lambda v, s=s: self._write(s, v),
                                                 equal=lambda want, have: parse_cpulist(want) == parse_cpulist(have))
                for s in self.slices}

    def changes(self, cpus: list[int]) -> list[Change]:
        return [Change(k, format_cpulist(cpus)) for k in self.knobs().values()]


_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@-]+$")


def check_unit_name(unit: str) -> bool:
    """systemd unit names are letters, digits and ``:_.@-``.

    >>> check_unit_name("llama-server.service"), check_unit_name("x; rm -rf /")
    (True, False)
    """
    return bool(_UNIT_RE.match(unit))
