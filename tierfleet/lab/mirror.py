"""The lab's mirror: the signed apt repository and the artifact store over HTTP on loopback.

One server process per lab (``python -m tierfleet.lab.mirror``, started and watched by
:class:`MirrorProcess`) serves, through :class:`tierfleet.artifacts.http_store.StoreServer`,

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
request, for paths under its ``prefix`` (default ``/artifacts/``), and applied by the store's
handler (:class:`tierfleet.artifacts.http_store.BodyFault`):

- ``{"mode": "corrupt"}``             every 1000th byte flipped (from byte 0), lengths unchanged;
- ``{"mode": "truncate", "after": N}`` the connection is closed after N body bytes;
- ``{"mode": "slow", "rate": B}``     the body is sent at about B bytes per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tierfleet.artifacts.http_store import FAULT_MODES, BodyFault, RangeRequestHandler, StoreServer
from tierfleet.exceptions import ConfigError, LabError
from tierfleet.lab.system import CLEAN_ENV, cgroup_create, cgroup_join, pid_alive, wait_until

FAULT_FILE = "mirror-fault.json"
PID_FILE = "mirror.pid"
LOG_FILE = "mirror.log"


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


# --- faults --------------------------------------------------------------------------------------

def set_fault(lab_dir: Path, mode: str, *, after: int = 1024, rate: int = 65536,
              prefix: str = "/artifacts/") -> dict:
    """Make the running mirror misbehave for paths under ``prefix`` (read on every request)."""
    if mode not in FAULT_MODES:
        raise ConfigError("tierfleet lab fault mirror", "mode", f"{mode!r}; allowed: {', '.join(FAULT_MODES)}")
    fault = {"mode": mode, "after": int(after), "rate": max(1, int(rate)), "prefix": prefix}
    (Path(lab_dir) / FAULT_FILE).write_text(json.dumps(fault) + "\n")
    return fault


def clear_fault(lab_dir: Path) -> None:
    (Path(lab_dir) / FAULT_FILE).unlink(missing_ok=True)


def read_fault(lab_dir: Path, path: str) -> BodyFault | None:
    """The fault set for a request path, if any (an unreadable fault file is no fault)."""
    try:
        fault = json.loads((Path(lab_dir) / FAULT_FILE).read_text())
        if not path.startswith(fault.get("prefix", "/artifacts/")):
            return None
        return BodyFault(fault["mode"], after=int(fault.get("after", 1024)), rate=max(1, int(fault.get("rate", 65536))))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


# --- the server process ----------------------------------------------------------------------------

def mirror_handler(lab_dir: Path) -> type[RangeRequestHandler]:
    """The store handler with the lab's faults and an access log on stderr."""

    class MirrorHandler(RangeRequestHandler):
        server_version = "tierfleet-lab-mirror/1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

        def body_fault(self) -> BodyFault | None:
            return read_fault(lab_dir, self.path)

    return MirrorHandler


def mirror_server(lab_dir: Path, apt_repo: Path, port: int = 0, bind: str = "127.0.0.1",
                  jetson_repo: Path | None = None) -> StoreServer:
    """The lab mirror's server (not started): the roots above, the lab's faults."""
    artifacts_dir(lab_dir).mkdir(parents=True, exist_ok=True)
    roots = {"/apt/": Path(apt_repo), "/base/": Path(apt_repo), "/artifacts/": artifacts_dir(lab_dir)}
    if jetson_repo is not None:
        roots["/jetson/"] = Path(jetson_repo)
    return StoreServer(host=bind, port=port, roots=roots, handler=mirror_handler(Path(lab_dir)))


def serve(lab_dir: Path, apt_repo: Path, port: int, bind: str = "127.0.0.1", jetson_repo: Path | None = None
          ) -> None:
    mirror_server(lab_dir, apt_repo, port, bind, jetson_repo).serve_forever()


class MirrorProcess:
    """The lab's mirror server process: started in the cgroup ``<lab id>/_mirror``, its pid in
    ``<lab dir>/mirror.pid``, its log in ``<lab dir>/mirror.log`` (``lab down`` ends it with the cgroup)."""

    def __init__(self, lab_dir: Path, lab_id: str) -> None:
        self.lab_dir = Path(lab_dir)
        self.cgroup = f"{lab_id}/_mirror"
        self.pid_file = self.lab_dir / PID_FILE
        self.log = self.lab_dir / LOG_FILE

    def alive(self) -> bool:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return False
        return pid_alive(pid)

    @staticmethod
    def pick_port(wanted: int) -> int:
        """``wanted`` when it is free (running hosts' bridges still point at it), else a free one."""
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", wanted))
            except OSError:
                s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start(self, port: int, apt_repo: Path, jetson_repo: Path, timeout: float = 15) -> int:
        """Start the server unless it runs; returns its port once it accepts connections."""
        if self.alive() and port:
            return port
        port = self.pick_port(port)
        cgroup_create(self.cgroup)
        env = dict(CLEAN_ENV, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tierfleet.lab.mirror", "--lab-dir", str(self.lab_dir), "--apt-repo",
                 str(apt_repo), "--jetson-repo", str(jetson_repo), "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=lambda: (os.setsid(), cgroup_join(self.cgroup)))
        self.pid_file.write_text(f"{proc.pid}\n")

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                if proc.poll() is not None:
                    raise LabError(f"the lab mirror did not start; see {self.log}") from None
                return False

        if not wait_until(accepting, timeout=timeout, interval=0.05):
            raise LabError(f"the lab mirror did not start; see {self.log}")
        return port

    def forget(self) -> None:
        """Drop the pid file (``lab down`` has ended the process with the lab's cgroups)."""
        self.pid_file.unlink(missing_ok=True)


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
