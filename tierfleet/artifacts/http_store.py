"""Serve artifact-store directories over HTTP with byte ranges (for resumable downloads).

One handler serves every store: the fleet's (tests, benchmarks) and the lab's mirror
(:mod:`tierfleet.lab.mirror`). Python's ``http.server`` ignores ``Range`` headers, which makes
``curl -C -`` start over; :class:`RangeRequestHandler` answers GET and HEAD for files under its
server's ``roots`` (URL prefix -> directory), a single ``Range: bytes=a-b`` / ``bytes=a-`` /
``bytes=-n`` with ``206 Partial Content`` and an unsatisfiable range with ``416``. Paths are
percent-decoded and must resolve inside their root (links included); anything else, directories
too, is ``404``. :class:`StoreServer` runs it on loopback addresses only.

A handler subclass may make a response's body misbehave (:meth:`RangeRequestHandler.body_fault`
returning a :class:`BodyFault`): bytes corrupted in place (lengths unchanged), the connection
closed after some bytes, or the body sent slowly. The lab's ``tierfleet lab fault mirror`` and
the release tests use these.

Example::

    >>> import tempfile, urllib.request, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "f").write_bytes(b"0123456789")
    >>> with StoreServer(d) as srv:
    ...     req = urllib.request.Request(srv.url + "f", headers={"Range": "bytes=4-"})
    ...     with urllib.request.urlopen(req) as resp:
    ...         resp.status, resp.read()
    (206, b'456789')
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tierfleet.exceptions import ConfigError

#: one range; at most 20 digits a side (any file size fits; int() of thousands of digits would raise)
RANGE_RE = re.compile(r"\s*bytes=(\d{0,20})-(\d{0,20})\s*")
#: bytes per write of a response body
CHUNK = 64 * 1024
#: what a :class:`BodyFault` can do to a response body
FAULT_MODES = ("corrupt", "truncate", "slow")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` -> (start, end inclusive); None for no (or an unsupported) range,
    ``(-1, -1)`` for one that cannot be satisfied.

    >>> parse_range("bytes=10-19", 100), parse_range("bytes=90-", 100), parse_range("bytes=-5", 100)
    ((10, 19), (90, 99), (95, 99))
    >>> parse_range("bytes=95-500", 100), parse_range("bytes=200-", 100), parse_range("bytes=0-1,5-6", 100)
    ((95, 99), (-1, -1), None)
    """
    if not header:
        return None
    m = RANGE_RE.fullmatch(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n and size else (-1, -1)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return (-1, -1)
    return start, min(end, size - 1)


def corrupt(data: bytes, offset: int) -> bytes:
    """Flip every 1000th byte of a file (positions counted from the file's start, so a resumed
    download gets the same bad bytes at the same offsets): byte 1000 of a file read from byte 999 on.

    >>> corrupt(bytes(3), 999)
    b'\\x00\\xff\\x00'
    """
    out = bytearray(data)
    for i in range((-offset) % 1000, len(out), 1000):
        out[i] ^= 0xFF
    return bytes(out)


@dataclass(frozen=True)
class BodyFault:
    """What goes wrong with one response body.

    - ``corrupt``: every 1000th byte of the file flipped (:func:`corrupt`), lengths unchanged;
    - ``truncate``: the connection is closed after ``after`` body bytes (Content-Length promised more);
    - ``slow``: the body is sent at about ``rate`` bytes per second.
    """

    mode: str
    after: int = 1024
    rate: int = 65536

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ConfigError("body fault", "mode", f"{self.mode!r}; allowed: {', '.join(FAULT_MODES)}")


class RangeRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the files under ``self.server.roots``, with single byte ranges; quiet logs.

    Hooks for subclasses: :meth:`body_fault` (a fault for this response's body), :meth:`serve`
    (every GET and HEAD goes through it), :meth:`log_message` (silent here).
    """

    server_version = "tierfleet-store/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server API
        self.serve(body=False)

    def body_fault(self) -> BodyFault | None:
        """The fault for this response's body; none here."""
        return None

    def resolve(self) -> Path | None:
        """The file the request's path names under one of the roots, or None."""
        # percent-decoded like http.server's own translate_path (curl sends "+" as %2B)
        path = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        roots: Mapping[str, Path] = getattr(self.server, "roots", {})
        for prefix, root in roots.items():
            if path.startswith(prefix):
                base = Path(root).resolve()
                try:
                    target = (base / path[len(prefix):]).resolve()
                    found = base in target.parents and target.is_file()
                except (OSError, ValueError):  # a NUL byte, a name too long
                    return None
                return target if found else None
        return None

    def serve(self, body: bool) -> None:
        """Answer one GET (``body``) or HEAD: 200 or 206 with the bytes, 404, or 416."""
        target = self.resolve()
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "Not Found")
            return
        stat = target.stat()
        size = stat.st_size
        rng = parse_range(self.headers.get("Range"), size)
        if rng == (-1, -1):
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = rng if rng else (0, size - 1)
        length = end - start + 1 if size else 0
        self.send_response(HTTPStatus.PARTIAL_CONTENT if rng else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body and length:
            self._send_body(target, start, length, self.body_fault())

    def _send_body(self, target: Path, start: int, length: int, fault: BodyFault | None) -> None:
        mode = fault.mode if fault else None
        sent = 0
        with open(target, "rb") as fh:
            fh.seek(start)
            while sent < length:
                n = min(CHUNK, length - sent)
                if mode == "slow":
                    n = min(n, max(1, fault.rate // 10))
                data = fh.read(n)
                if not data:
                    break
                if mode == "corrupt":
                    data = corrupt(data, start + sent)
                if mode == "truncate" and sent + len(data) > fault.after:
                    self.wfile.write(data[:max(0, fault.after - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)
                sent += len(data)
                if mode == "slow":
                    time.sleep(len(data) / fault.rate)


class StoreServer:
    """A threaded HTTP server for a store on a loopback address; a context manager.

    ``directory`` is served at ``/``; or give ``roots``, URL prefixes (ending in ``/``) to
    directories. ``url`` ends with ``/``. ``handler`` may be a :class:`RangeRequestHandler`
    subclass (the lab mirror's reads its faults from a file; tests cut transfers short).
    """

    def __init__(self, directory: Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 handler: type[RangeRequestHandler] = RangeRequestHandler,
                 roots: Mapping[str, Path] | None = None) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError("http_store", "host", f"{host!r} is not allowed; expected a loopback address")
        if (directory is None) == (roots is None):
            raise ConfigError("http_store", "roots", "give a directory or URL prefixes -> directories, not both")
        self.roots = {"/": Path(directory)} if directory is not None else {p: Path(d) for p, d in roots.items()}
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._httpd.roots = self.roots  # type: ignore[attr-defined] - read by the handler
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def serve_forever(self) -> None:
        """Serve in the calling thread (a server process)."""
        self._httpd.serve_forever()

    def start(self) -> StoreServer:
        # a short poll interval: stop() returns within 50 ms instead of half a second
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="store-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join()

    def __enter__(self) -> StoreServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
