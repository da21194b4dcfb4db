"""The lab's mirror: the signed apt repository and the artifact store over HTTP on loopback.

One ``http.server`` process per lab (``python -m tierfleet.lab.mirror``) serves

- ``/apt/...``        the stand-in apt repository (:func:`tierfleet.lab.base.ensure_apt_repo`), with
  the signing key ASCII-armoured as ``/apt/tierfleet-lab.asc``; the same repository as ``/base/...``
  (the source hosts boot with; see :data:`tierfleet.lab.state.BASE_APT_URL`);
- ``/jetson/...``     NVIDIA's Jetson layout, ``{common,t234,t210}/dists/r<major.minor>`` and
  ``jetson-ota-public.asc`` (:func:`tierfleet.lab.base.ensure_jetson_repo`);
- ``/artifacts/...``  the artifact store ``<lab dir>/artifacts`` with ``SHA256SUMS`` and
  ``manifest.json`` kept by :func:`publish`.

It listens on ``127.0.0.1:<port>`` of the machine; inside every host it is reached through the
host's unix-socket bridge as ``http://mirror.lab/apt``, ``http://mirror.lab/jetson`` and ``http://artifacts.lab/artifacts``.
GET and HEAD, with single ``Range: bytes=a-b`` requests answered 206 (resumable downloads).

Faults (``tierfleet lab fault mirror ...``) are read from ``<lab dir>/mirror-fault.json`` on every
request, for paths under its ``prefix`` (default ``/artifacts/``):

- ``{"mode": "corrupt"}``             every 1000th byte flipped (from byte 0), lengths unchanged;
- ``{"mode": "truncate", "after": N}`` the connection is closed after N body bytes;
- ``{"mode": "slow", "rate": B}``     the body is sent at about B bytes per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import urllib.parse
import os
import re
import shutil
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tierfleet.exceptions import ConfigError

FAULT_FILE = "mirror-fault.json"
FAULT_MODES = ("corrupt", "truncate", "slow")
CHUNK = 64 * 1024


def artifacts_dir(lab_dir: Path) -> Path:
    return Path(lab_dir) / "artifacts"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def publish(lab_dir: Path, src: Path, name: str | None = None) -> dict:
    """Copy a file into the artifact store and record it in ``SHA256SUMS`` and ``manifest.json``.

    ``name`` may contain ``/`` (sub-directories); it may not leave the store. Returns the manifest
    entry ``{"name", "sha256", "size", "path"}`` where ``path`` is the URL path under the mirror.
    """
    src = Path(src)
    name = name or src.name
    if name.startswith("/") or ".." in Path(name).parts or not re.fullmatch(r"[A-Za-z0-9._+/-]+", name):
        raise ConfigError(str(src), "name", f"{name!r}: use letters, digits, '._+-/' and no '..'")
    store = artifacts_dir(lab_dir)
    dest = store / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    manifest_path = store / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entry = {"name": name, "sha256": _sha256(dest), "size": dest.stat().st_size, "path": f"/artifacts/{name}"}
    manifest[name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (store / "SHA256SUMS").write_text("".join(f"{e['sha256']}  {n}\n" for n, e in sorted(manifest.items())))
    return entry


def set_fault(lab_dir: Path, mode: str, *, after: int = 1024, rate: int = 65536,
              prefix: str = "/artifacts/") -> dict:
    if mode not in FAULT_MODES:
        raise ConfigError("tierfleet lab fault mirror", "mode", f"{mode!r}; allowed: {', '.join(FAULT_MODES)}")
    fault = {"mode": mode, "after": int(after), "rate": max(1, int(rate)), "prefix": prefix}
    path = Path(lab_dir) / FAULT_FILE
    path.write_text(json.dumps(fault) + "\n")
    return fault


def clear_fault(lab_dir: Path) -> None:
    (Path(lab_dir) / FAULT_FILE).unlink(missing_ok=True)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` -> (start, end inclusive); None for no/unsupported range.

    >>> parse_range("bytes=10-19", 100), parse_range("bytes=90-", 100), parse_range("bytes=-5", 100)
    ((10, 19), (90, 99), (95, 99))
    >>> parse_range("bytes=200-", 100)
    (-1, -1)
    """
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n else (-1, -1)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return (-1, -1)
    return start, min(end, size - 1)


def corrupt(data: bytes, offset: int) -> bytes:
    """Flip every 1000th byte of the file (positions counted from the file start)."""
    out = bytearray(data)
    first = (-offset) % 1000
    for i in range(first, len(out), 1000):
        out[i] ^= 0xFF
    return bytes(out)


class Handler(BaseHTTPRequestHandler):
    server_version = "tierfleet-lab-mirror/1"
    protocol_version = "HTTP/1.1"
    roots: dict[str, Path] = {}
    lab_dir: Path = Path(".")

    def log_message(self, fmt, *args):  # noqa: D401 - http.server API
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def _resolve(self) -> Path | None:
        # percent-decoded like http.server's own translate_path (curl sends "+" as %2B)
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                rel = path[len(prefix):]
                target = (root / rel).resolve()
                if target == root.resolve() or root.resolve() in target.parents:
                    return target if target.is_file() else None
        return None

    def _fault(self) -> dict | None:
        try:
            fault = json.loads((self.lab_dir / FAULT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return fault if self.path.startswith(fault.get("prefix", "/artifacts/")) else None

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        target = self._resolve()
        if target is None:
            self.send_error(404, "Not Found")
            return
        size = target.stat().st_size
        rng = parse_range(self.headers.get("Range"), size)
        if rng == (-1, -1):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = rng if rng else (0, size - 1)
        length = end - start + 1 if size else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(int(target.stat().st_mtime)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body or not length:
            return
        fault = self._fault()
        sent = 0
        with open(target, "rb") as fh:
            fh.seek(start)
            while sent < length:
                n = min(CHUNK, length - sent)
                if fault and fault["mode"] == "slow":
                    n = min(n, max(1, fault["rate"] // 10))
                data = fh.read(n)
                if not data:
                    break
                if fault and fault["mode"] == "corrupt":
                    data = corrupt(data, start + sent)
                if fault and fault["mode"] == "truncate" and sent + len(data) > fault["after"]:
                    data = data[: max(0, fault["after"] - sent)]
                    self.wfile.write(data)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)
                sent += len(data)
                if fault and fault["mode"] == "slow":
                    time.sleep(len(data) / fault["rate"])


def serve(lab_dir: Path, apt_repo: Path, port: int, bind: str = "127.0.0.1", jetson_repo: Path | None = None
          ) -> None:
    artifacts_dir(lab_dir).mkdir(parents=True, exist_ok=True)
    Handler.roots = {"/apt/": Path(apt_repo), "/base/": Path(apt_repo), "/artifacts/": artifacts_dir(lab_dir)}
    if jetson_repo is not None:
        Handler.roots["/jetson/"] = Path(jetson_repo)
    Handler.lab_dir = Path(lab_dir)
    httpd = ThreadingHTTPServer((bind, port), Handler)
    httpd.daemon_threads = True
    httpd.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tierfleet.lab.mirror")
    ap.add_argument("--lab-dir", required=True, type=Path)
    ap.add_argument("--apt-repo", required=True, type=Path)
    ap.add_argument("--jetson-repo", type=Path)
    ap.add_argument("--port", required=True, type=int)
    args = ap.parse_args(argv)
    serve(args.lab_dir, args.apt_repo, args.port, jetson_repo=args.jetson_repo)


if __name__ == "__main__":
    main()
