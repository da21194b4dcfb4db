"""Small system helpers for the lab: commands, cgroups, mounts, processes, and the one wait helper.

Every command runs from an argument list (no shell); where a command line has to be one string
(socat's ``EXEC:``) its parts are quoted with :func:`shlex.quote` and checked for characters socat
would read as syntax. OS errors are turned into :class:`~tierfleet.exceptions.LabError` here.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import tenacity

from tierfleet.exceptions import LabError

T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup2_root() -> Path | None:
    """Where cgroup2 is mounted: ``/sys/fs/cgroup/unified`` (v1 hybrid) or ``/sys/fs/cgroup`` (pure v2)."""
    if (CGROUP_ROOT / "unified" / "cgroup.procs").exists():
        return CGROUP_ROOT / "unified"
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return CGROUP_ROOT
    return None


def cgroup_roots() -> list[Path]:
    """Hierarchies a lab process joins: cgroup2 (for ``cgroup.kill``), and where present the v1
    name=systemd one (nspawn expects it) and the v1 memory one (per-host memory figures)."""
    roots = [r for r in (cgroup2_root(),) if r is not None]
    for v1 in ("systemd", "memory"):
        if (CGROUP_ROOT / v1 / "cgroup.procs").exists():
            roots.append(CGROUP_ROOT / v1)
    return roots


def cgroup_memory_bytes(rel: str) -> int | None:
    """Memory charged to a cgroup subtree (processes and their page cache), where accounted."""
    for path in (CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes",
                 (cgroup2_root() or CGROUP_ROOT) / rel / "memory.current"):
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def wait_until(check: Callable[[], T], *, timeout: float, interval: float = 0.1) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something true, or until ``timeout``
    seconds have passed; return its last value. An exception from ``check`` ends the wait at once.

    The one poll loop of the lab, its tests and benchmarks (tenacity underneath).

    >>> wait_until(lambda: 42, timeout=1)
    42
    >>> calls = []
    >>> wait_until(lambda: calls.append(1) or len(calls) >= 3, timeout=10, interval=0.01), len(calls)
    (True, 3)
    >>> wait_until(lambda: [], timeout=0.05, interval=0.01)
    []
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_result(lambda result: not result),
        retry_error_callback=lambda state: state.outcome.result())
    return retrying(check)


CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(argv: list[str], *, check: bool = True, input: str | bytes | None = None, timeout: float = 600,
        env: dict | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command; raise LabError naming it and its stderr on failure."""
    try:
        proc = subprocess.run(
            [str(a) for a in argv], input=input.encode() if isinstance(input, str) else input,
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
            timeout=timeout, env=env,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found (lab prerequisites missing?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(map(str, argv))}: timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"{' '.join(map(str, argv))} failed (rc {proc.returncode}): {' | '.join(err)}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, mounts, network namespaces, iptables); "
                       "run it as root, e.g. with sudo")


# --- cgroups -------------------------------------------------------------------------------------

def cgroup_paths(rel: str) -> list[Path]:
    return [root / rel for root in cgroup_roots()]


def cgroup_layout_ok() -> bool:
    return cgroup2_root() is not None


def cgroup_create(rel: str) -> None:
    for p in cgroup_paths(rel):
        p.mkdir(parents=True, exist_ok=True)


def cgroup_join(rel: str, pid: int | None = None) -> None:
    """Move a process (default: the caller) into ``rel`` in every hierarchy (for ``preexec_fn``)."""
    pid = pid or os.getpid()
    for p in cgroup_paths(rel):
        p.mkdir(parents=True, exist_ok=True)
        (p / "cgroup.procs").write_text(f"{pid}\n")


def cgroup_pids(rel: str) -> list[int]:
    """Every pid in a cgroup subtree (cgroup2 view)."""
    base = cgroup2_root()
    pids: list[int] = []
    if base is None or not (base / rel).is_dir():
        return pids
    root = base / rel
    if not root.is_dir():
        return pids
    for dirpath, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            try:
                pids += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
            except OSError:
                pass
    return pids


def cgroup_kill(rel: str, wait: float = 5.0) -> None:
    """Kill everything in a cgroup subtree and remove it from every hierarchy."""
    base = cgroup2_root()
    uni = base / rel if base else None
    if uni is not None and uni.is_dir():
        kill_file = uni / "cgroup.kill"
        if kill_file.exists():
            try:
                kill_file.write_text("1\n")
            except OSError:
                pass
        for pid in cgroup_pids(rel):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(lambda: not cgroup_pids(rel), timeout=wait, interval=0.05)
    for p in cgroup_paths(rel):
        if not p.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(p, topdown=False), key=lambda t: -len(t[0])):
            # a cgroup stays busy for a moment after its last process is gone
            wait_until(functools.partial(_rmdir, dirpath), timeout=2.5, interval=0.05)


def _rmdir(path: str) -> bool:
    """Remove an empty directory; True when it is gone, False while the kernel still holds it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


# --- mounts --------------------------------------------------------------------------------------

def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix``, deepest first."""
    prefix = str(Path(prefix).resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].encode().decode("unicode_escape")
        if mp == prefix or mp.startswith(prefix + "/"):
            found.append(Path(mp))
    return sorted(set(found), key=lambda p: -len(str(p)))


def umount_all(prefix: Path) -> None:
    for mp in mounts_under(prefix):
        r = run(["umount", mp], check=False)
        if r.returncode != 0:
            run(["umount", "-l", mp], check=False)


# --- processes -----------------------------------------------------------------------------------

def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def which(name: str) -> str | None:
    return shutil.which(name, path=CLEAN_ENV["PATH"])
