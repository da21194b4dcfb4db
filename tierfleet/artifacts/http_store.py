"""Serve an artifact-store directory over HTTP with byte ranges (for resumable downloads).

Python's ``http.server`` ignores ``Range`` headers, which makes ``curl -C -`` start over; this
handler answers ``Range: bytes=START-[END]`` with ``206 Partial Content`` and an unsatisfiable
range with ``416``. It serves loopback addresses only (the lab's hosts reach it through
addresses the lab sets up on the loopback side).

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
import os
import re
import shutil
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tierfleet.exceptions import ConfigError

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges; quiet logs."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def send_head(self):  # type: ignore[override]
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not header or os.path.isdir(path):
            return super().send_head()
        match = RANGE_RE.match(header.strip())
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
        if start >= size or end < start:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        end = min(end, size - 1)
        fh = open(path, "rb")
        fh.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._range_left = end - start + 1
        return fh

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        left = getattr(self, "_range_left", None)
        if left is None:
            shutil.copyfileobj(source, outputfile)
            return
        while left > 0:
            chunk = source.read(min(left, 1 << 16))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)
        self._range_left = None


class StoreServer:
    """A threaded HTTP server for ``directory`` on a loopback address; a context manager.

    ``url`` ends with ``/``. ``handler`` may be a :class:`RangeRequestHandler` subclass (tests
    use one that cuts a transfer short).
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0,
                 handler: type[RangeRequestHandler] = RangeRequestHandler) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError("http_store", "host", f"{host!r} is not allowed; expected a loopback address")
        self.directory = Path(directory)
        self._httpd = ThreadingHTTPServer((host, port), partial(handler, directory=str(self.directory)))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> StoreServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="store-server", daemon=True)
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
