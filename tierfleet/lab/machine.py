"""What the lab changes on the machine itself, recorded before it changes and put back by ``lab down``.

- ``/run/systemd/nspawn``: systemd-nspawn keeps its per-machine files there; on a machine whose
  PID 1 is not systemd nothing mounts a tmpfs on it, so the lab does (and unmounts it when no
  systemd-nspawn runs any more);
- ``/proc/sys/fs/inotify/max_user_instances``: every host's systemd takes inotify instances; with
  more than 8 hosts on the machine (this lab's and any other lab's running ones) the limit is raised to 1024;
  the old value is written back once no systemd-nspawn runs any more (another lab may still need it).

The record is a plain dict (the state file's ``restore``).
"""

from __future__ import annotations

from pathlib import Path

import psutil

from tierfleet.lab.system import mounts_under, run

INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
NSPAWN_RUN = Path("/run/systemd/nspawn")
INOTIFY_HOSTS = 8
INOTIFY_LIMIT = 1024


def setup(restore: dict, nhosts: int, running: int | None = None) -> None:
    """Prepare the machine for ``nhosts`` more hosts, recording in ``restore`` what to put back.

    ``running``: hosts already up on the machine (default: the systemd-nspawn processes found).
    """
    running = nspawn_count() if running is None else running
    if NSPAWN_RUN not in mounts_under(NSPAWN_RUN):
        NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "mode=755,size=16m", "tierfleet-lab-nspawn", NSPAWN_RUN])
        restore["nspawn_tmpfs"] = True
    if nhosts + running > INOTIFY_HOSTS and INOTIFY.exists():
        current = int(INOTIFY.read_text())
        if current < INOTIFY_LIMIT:
            restore.setdefault("inotify_max_user_instances", current)
            INOTIFY.write_text(f"{INOTIFY_LIMIT}\n")


def nspawn_count() -> int:
    """systemd-nspawn processes on the machine (this lab's hosts and other labs')."""
    return sum(1 for p in psutil.process_iter(["name"]) if p.info["name"] == "systemd-nspawn")


def nspawn_running() -> bool:
    """True while any systemd-nspawn runs on the machine (this lab's or another's)."""
    return nspawn_count() > 0


def restore(record: dict, busy: bool | None = None) -> None:
    """Put back what :func:`setup` recorded (and drop it from ``record``); while other hosts still run
    (``busy``, default: any systemd-nspawn found), the raised inotify limit and the tmpfs stay, and so does
    their record."""
    busy = nspawn_running() if busy is None else busy
    old = record.get("inotify_max_user_instances")
    if old is not None and INOTIFY.exists() and not busy:
        INOTIFY.write_text(f"{old}\n")
    if not busy:
        record.pop("inotify_max_user_instances", None)
    if record.pop("nspawn_tmpfs", False) and not busy:
        run(["umount", NSPAWN_RUN], check=False)
