"""The health gate's shell, run for real by sh against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tierfleet.operations.runtime import health_script


class Server(BaseHTTPRequestHandler):
    healthy = True

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health" and self.healthy:
            self._send(200, {"status": "ok"})
        else:
            self._send(503, {"error": {"message": "Loading model"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        assert request["n_predict"] == 8
        self._send(200, {"content": " hello world", "stop": True})


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def release_root(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    for release in ("a", "b"):
        (root / "releases" / release).mkdir(parents=True)
    (root / "current").symlink_to("releases/b")
    (root / "previous").symlink_to("releases/a")
    return root


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    (shim / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)


def test_healthy_server_passes_and_changes_nothing(server, tmp_path):
    root = release_root(tmp_path, "model")
    result = run(health_script(server.server_port, 10, "llama-server.service", {str(root): "releases/a"}), tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.readlink(root / "current") == "releases/b"
    assert (tmp_path / "systemctl.log").read_text() == "restart llama-server.service\n"


def test_unhealthy_server_rolls_every_root_back(server, tmp_path):
    Server.healthy = False
    try:
        switched = release_root(tmp_path, "model")      # this run moved a -> b
        untouched = release_root(tmp_path, "runtime")   # this run left it on b
        first = tmp_path / "first"
        first.mkdir()
        (first / "current").symlink_to("releases/x")  # nothing served before: left as it is
        restore = {str(switched): "releases/a", str(untouched): "releases/b", str(first): ""}
        result = run(health_script(server.server_port, 2, "llama-server.service", restore), tmp_path)
    finally:
        Server.healthy = True
    assert result.returncode == 1
    assert "tierfleet: health gate failed" in result.stderr and "the release that served before" in result.stderr
    assert os.readlink(switched / "current") == "releases/a"
    assert os.readlink(untouched / "current") == "releases/b"
    assert os.readlink(first / "current") == "releases/x"
    assert (tmp_path / "systemctl.log").read_text() == "restart llama-server.service\n" * 2


def test_nothing_listening_fails_within_the_timeout(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(health_script(port, 1, "x'; touch /tmp/tierfleet-pwned; '", {}), tmp_path)
    assert result.returncode == 1
    assert (tmp_path / "systemctl.log").read_text() == "restart x'; touch /tmp/tierfleet-pwned; '\n" * 2
    assert not Path("/tmp/tierfleet-pwned").exists()


def test_failed_restart_is_a_failed_gate(server, tmp_path):
    root = release_root(tmp_path, "model")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\nexit 1\n')
    (shim / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    script = health_script(server.server_port, 5, "llama-server.service", {str(root): "releases/a"})
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert os.readlink(root / "current") == "releases/a"


def test_health_without_completion_fails(tmp_path):
    class NoCompletion(Server):
        def do_POST(self):
            self._send(500, {"error": {"message": "failed to decode"}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NoCompletion)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = run(health_script(httpd.server_port, 2, "llama-server.service", {}), tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 1
