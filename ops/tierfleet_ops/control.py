"""The control API: JSON lines over a unix socket (mode 0660, group-owned) and its client.

One request per connection: ``{"cmd": "status"}``, ``{"cmd": "hold", "profile": "eco"}``,
``{"cmd": "release"}``, ``{"cmd": "reload"}``, ``{"cmd": "dry-run", "profile": null}``.
Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. The socket is
the only way in: no TCP, and only root and the socket's group can connect.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ControlError, OpsError

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

COMMANDS = ("status", "hold", "release", "reload", "dry-run")
MAX_REQUEST = 4096


def handle_request(daemon: Daemon, req: Any) -> dict[str, Any]:
    """Run one request against the daemon (pure dispatch; errors become ``ok: false``)."""
    if not isinstance(req, dict) or req.get("cmd") not in COMMANDS:
        return {"ok": False, "error": f"unknown request; commands: {', '.join(COMMANDS)}"}
    cmd = req["cmd"]
    try:
        if cmd == "status":
            return {"ok": True, "result": daemon.status()}
        if cmd == "hold":
            prof = req.get("profile")
            if not isinstance(prof, str):
                return {"ok": False, "error": "hold needs a profile name"}
            daemon.hold(prof)
            return {"ok": True, "result": {"profile": daemon.selector.current, "held": prof}}
        if cmd == "release":
            daemon.hold(None)
            return {"ok": True, "result": {"held": None}}
        if cmd == "reload":
            with daemon.lock:
                ok = daemon.reload()
            if not ok:
                return {"ok": False, "error": f"kept policy {daemon.policy.hash}: {daemon.policy_error}"}
            return {"ok": True, "result": {"policy": daemon.policy.hash}}
        prof = req.get("profile")
        if prof is not None and prof not in daemon.policy.profiles:
            return {"ok": False, "error": f"{prof!r} is not a profile; allowed: "
                                          f"{', '.join(sorted(daemon.policy.profiles))}"}
        return {"ok": True, "result": daemon.dry_run(prof)}
    except OpsError as exc:
        return {"ok": False, "error": str(exc)}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            req = json.loads(line)
        except ValueError:
            resp: dict[str, Any] = {"ok": False, "error": "request is not JSON"}
        else:
            try:
                resp = handle_request(self.server.daemon, req)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - answer the client, log the bug
                log.exception("control request %r failed", req)
                resp = {"ok": False, "error": f"internal error: {exc}"}
        self.wfile.write(json.dumps(resp, default=str).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 32


class ControlServer:
    """Serves the control socket in a background thread."""

    def __init__(self, daemon: Daemon, path: str, group: str | None = None) -> None:
        self.path = Path(path)
        self.group = group
        self.daemon = daemon
        self._srv: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # left behind by a daemon that was killed
            else:
                raise ControlError(f"{self.path}: another daemon is answering on this socket")
            finally:
                probe.close()
        old = os.umask(0o117)  # the socket is born 0660
        try:
            srv = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        srv.daemon = self.daemon  # type: ignore[attr-defined]
        os.chmod(self.path, 0o660)
        if self.group:
            try:
                os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("control socket: cannot give it to group %s: %s", self.group, exc)
        self._srv = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: str, req: dict[str, Any], timeout_s: float = 10.0) -> Any:
    """Send one request to the daemon; returns ``result`` or raises :class:`ControlError`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(path)
            s.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"{path}: cannot reach the daemon: {exc.strerror or exc}") from None
    try:
        resp = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: answer is not JSON") from None
    if not resp.get("ok"):
        raise ControlError(resp.get("error", "request failed"))
    return resp["result"]
