"""systemd readiness and watchdog over ``$NOTIFY_SOCKET`` (no systemd-python needed).

Command-line equivalent: ``systemd-notify READY=1``.
"""

from __future__ import annotations

import os
import socket


def notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``); False without a socket."""
    path = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(path)
        s.sendall(message.encode())
    return True


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is for this process."""
    e = env if env is not None else os.environ
    usec, pid = e.get("WATCHDOG_USEC"), e.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
