"""The control API: JSON lines over a unix socket (mode 0660, group-owned) and its client.

One request per connection: ``{"cmd": "status"}``, ``{"cmd": "hold", "profile": "eco"}``,
``{"cmd": "release"}``, ``{"cmd": "reload"}``, ``{"cmd": "dry-run", "profile": null}``.
Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. The socket is
the only way in: no TCP, and only root and the socket's group can connect.

The server is one asyncio event loop in one thread, so a client costs a file descriptor and a
coroutine, never a thread, and every resource is bounded:

* at most :data:`MAX_CONNECTIONS` connections are held; when one more arrives, the oldest
  connection that has not yet sent its request is cut (a client sends its one line at once, so
  a crowd of idle connections cannot lock out ``status``);
* a request line must arrive within :data:`REQUEST_TIMEOUT_S` and be at most
  :data:`MAX_REQUEST` bytes; answers are written within the same deadline;
* requests run on :data:`WORKERS` threads (they take the daemon's lock);
* the peer is checked with ``SO_PEERCRED``/``SO_PEERGROUPS``: root, the daemon's own user or a
  member of the socket's group; anyone else is answered ``not allowed`` and logged.

If the server's loop dies, the daemon is told (``on_fatal``): it stops, restoring the recorded
originals, and exits with an error so systemd restarts it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import grp
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ControlError, OpsError

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

COMMANDS = ("status", "hold", "release", "reload", "dry-run")
#: longest request line, bytes
MAX_REQUEST = 4096
#: connections held at once (idle ones beyond this are cut, oldest first)
MAX_CONNECTIONS = 16
#: a client must send its request (and take its answer) within this many seconds
REQUEST_TIMEOUT_S = 2.0
#: requests executed at once
WORKERS = 2
#: kernel queue of connections not yet accepted
BACKLOG = 128
#: ``SO_PEERGROUPS`` (Linux >= 4.13); the socket module does not name it
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
#: a refused peer is logged once per uid per this many seconds
REFUSAL_LOG_S = 60.0


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


def answer_line(daemon: Daemon, line: bytes) -> bytes:
    """One request line in, one answer line out (JSON errors and handler bugs are answered)."""
    try:
        req = json.loads(line)
    except ValueError:
        resp: dict[str, Any] = {"ok": False, "error": "request is not JSON"}
    else:
        try:
            resp = handle_request(daemon, req)
        except Exception as exc:  # noqa: BLE001 - answer the client, log the bug
            log.exception("control request %r failed", req)
            resp = {"ok": False, "error": f"internal error: {exc}"}
    return json.dumps(resp, default=str).encode() + b"\n"


# --- who is asking -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """The process at the other end of a unix socket, as the kernel saw it at connect time."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def peer_of(sock: Any) -> Peer:
    """``SO_PEERCRED`` (pid, uid, gid) and ``SO_PEERGROUPS`` (supplementary groups) of a unix socket.

    >>> a, b = socket.socketpair()
    >>> p = peer_of(a); (p.pid, p.uid, p.gid) == (os.getpid(), os.geteuid(), os.getegid())
    True
    >>> a.close(); b.close()
    """
    fmt = "3i"
    pid, uid, gid = struct.unpack(fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       struct.calcsize(fmt)))
    groups: tuple[int, ...] = ()
    for n in (256, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * n)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue  # more groups than the buffer holds
            break  # kernel without SO_PEERGROUPS: the primary gid still counts
        groups = struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])
        break
    return Peer(pid, uid, gid, groups)


def peer_allowed(peer: Peer, group_gid: int | None, own_uid: int) -> bool:
    """Root, the daemon's own user, or a member (primary or supplementary) of the socket's group.

    >>> peer_allowed(Peer(10, 0, 0), 990, 0), peer_allowed(Peer(10, 1000, 1000, (990,)), 990, 0)
    (True, True)
    >>> peer_allowed(Peer(10, 1000, 1000, (27,)), 990, 0), peer_allowed(Peer(10, 1000, 990), None, 0)
    (False, False)
    """
    if peer.uid in (0, own_uid):
        return True
    return group_gid is not None and (peer.gid == group_gid or group_gid in peer.groups)


# --- the server --------------------------------------------------------------------------------

class ControlServer:
    """Serves the control socket from one asyncio loop in a background thread."""

    def __init__(self, daemon: Daemon, path: str, group: str | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 workers: int = WORKERS, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.path = Path(path)
        self.group = group
        self.daemon = daemon
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.workers = workers
        self.on_fatal = on_fatal
        #: gid whose members may connect (the socket file's group)
        self.group_gid: int | None = None
        self.refused_total = 0
        self.cut_total = 0
        self._sock: socket.socket | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        #: every open connection, and those still waiting for their request line (oldest first)
        self._conns: dict[int, asyncio.BaseTransport] = {}
        self._waiting: collections.OrderedDict[int, asyncio.BaseTransport] = collections.OrderedDict()
        self._refusal_log: dict[int, tuple[float, int]] = {}

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2.0)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # left behind by a daemon that was killed
            else:
                raise ControlError(f"{self.path}: another daemon is answering on this socket")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)  # the socket is born 0660
        try:
            sock.bind(str(self.path))
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        if self.group:
            try:
                os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("control socket: cannot give it to group %s: %s", self.group, exc)
        self.group_gid = os.stat(self.path).st_gid
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return sock

    def start(self) -> None:
        self._sock = self._bind()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers,
                                                           thread_name_prefix="control")
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            self.stop()
            raise ControlError(f"{self.path}: control server did not start: {self._failed}")

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - the daemon must learn that control is gone
            self._failed = exc
            self._ready.set()
            if self._stopping is not None and not self._stopping.is_set():
                self._die(exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        assert self._sock is not None
        # backlog: the kernel's queue, and the most connections accepted in one go (asyncio)
        server = await asyncio.start_unix_server(self._client, sock=self._sock, limit=MAX_REQUEST,
                                                 backlog=BACKLOG)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for t in list(self._conns.values()):
                t.abort()  # type: ignore[attr-defined]
            await server.wait_closed()

    def _refuse(self, peer: Peer) -> None:
        self.refused_total += 1
        now = time.monotonic()
        last, n = self._refusal_log.get(peer.uid, (float("-inf"), 0))
        if now - last >= REFUSAL_LOG_S:
            log.warning("control socket: refused pid %d uid %d gid %d: neither root nor in group %s%s",
                        peer.pid, peer.uid, peer.gid, self.group_gid,
                        f" ({n} more refused since the last report)" if n else "")
            self._refusal_log[peer.uid] = (now, 0)
        else:
            self._refusal_log[peer.uid] = (last, n + 1)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_one(reader, writer)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one connection's bug: log it, keep serving the others
            log.exception("control connection failed")
        except BaseException as exc:  # noqa: BLE001 - no handler is written for this: stop the daemon
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        log.critical("control server failed: %r", exc, exc_info=exc)
        if self._stopping is not None:
            self._stopping.set()
        if self.on_fatal:
            self.on_fatal(exc)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        self._conns[key] = writer.transport
        try:
            try:
                peer = peer_of(writer.get_extra_info("socket"))
            except OSError:
                return
            allowed = peer_allowed(peer, self.group_gid, os.geteuid())
            if not allowed:
                self._refuse(peer)
            if len(self._conns) > self.max_connections:
                if not self._waiting:
                    await self._reply(writer, {"ok": False, "error": "busy: too many requests at once"})
                    return
                _, oldest = self._waiting.popitem(last=False)
                oldest.abort()  # type: ignore[attr-defined]  # its readline sees EOF; it ends
                self.cut_total += 1
            self._waiting[key] = writer.transport
            try:
                line = await asyncio.wait_for(reader.readline(), self.request_timeout_s)
            except asyncio.TimeoutError:
                log.debug("control: no request within %.1f s; closed", self.request_timeout_s)
                return
            except ValueError:  # LimitOverrunError: a line longer than MAX_REQUEST
                await self._reply(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                return
            except ConnectionError:
                return
            finally:
                self._waiting.pop(key, None)
            if not line.endswith(b"\n"):
                return  # EOF before a full line (or cut to make room)
            if not allowed:  # answered after the request was read, so the client sees the answer
                await self._reply(writer, {"ok": False, "error": "not allowed: control needs root or the "
                                                               "socket's group"})
                return
            answer = await asyncio.get_running_loop().run_in_executor(self._pool, answer_line, self.daemon, line)
            await self._send(writer, answer)
        finally:
            self._conns.pop(key, None)
            self._waiting.pop(key, None)
            writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, resp: dict[str, Any]) -> None:
        await self._send(writer, json.dumps(resp).encode() + b"\n")

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
        except (asyncio.TimeoutError, ConnectionError):
            writer.transport.abort()

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop already ended
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(10)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._sock:
            self._sock.close()
            self._sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: str, req: dict[str, Any], timeout_s: float = 10.0) -> Any:
    """Send one request to the daemon; returns ``result`` or raises :class:`ControlError`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    s.connect(path)
                    break
                except BlockingIOError:  # the daemon's queue is full for a moment: wait for a place
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
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
    if not isinstance(resp, dict) or not resp.get("ok"):
        raise ControlError(resp.get("error", "request failed") if isinstance(resp, dict) else "request failed")
    return resp["result"]
