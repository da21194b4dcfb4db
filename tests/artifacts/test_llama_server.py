"""llama.cpp's own llama-server loads the generated models, served from a release installed for real.

Needs the cached runtime build (``python -m tierfleet.artifacts.llama_build .cache/runtime``,
about ten minutes on two cores); skipped with that instruction when it is absent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
from tierfleet.artifacts.http_store import StoreServer
from tierfleet.artifacts.llama_build import cached_runtime, pack_runtime
from tierfleet.artifacts.manifest import publish
from tierfleet.lab.runner import run_local
from tierfleet.lab.system import wait_until
from tierfleet.operations import release

CACHE = Path(os.environ.get("TIERFLEET_CACHE", Path(__file__).resolve().parents[2] / ".cache")) / "runtime"
RUNTIME = cached_runtime(CACHE)
pytestmark = pytest.mark.skipif(
    RUNTIME is None,
    reason=f"no cached llama-server under {CACHE}: build it with "
           "`python -m tierfleet.artifacts.llama_build .cache/runtime` (4-10 min on 2 cores)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return None, b""


class Server:
    def __init__(self, model: Path, log: Path, binary: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [str(binary or RUNTIME.server), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "-t", "1", "-c", "256", "-np", "1"],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def wait_healthy(self, limit_s: float = 60.0) -> bool:
        """Poll /health until 200; False if the process exits first (or the bound passes)."""

        def settled() -> str:
            if self.proc.poll() is not None:
                return "exited"
            return "healthy" if http(self.url + "/health")[0] == 200 else ""

        return wait_until(settled, timeout=limit_s, interval=0.05) == "healthy"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    started: list[Server] = []

    def start(model: Path, binary: Path | None = None) -> Server:
        srv = Server(model, tmp_path / f"server-{len(started)}.log", binary)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def test_serves_a_model_installed_as_a_release(tmp_path, serve):
    files = write_tiny_gguf(tmp_path / "src" / "tiny.gguf", qtype="q8_0", seed=3)
    m = publish(tmp_path / "store", files, kind="model", name="tiny", version="1", compress=True, level=3)
    root = tmp_path / "host"
    with StoreServer(tmp_path / "store") as store:
        res = run_local(release.artifact, root=str(root), release="tiny-1", manifest=m,
                        source=f"{store.url}tiny/1/", compressed=True)
    assert not res.failed, res.stderr
    assert not run_local(release.switch, root=str(root), release="tiny-1").failed

    srv = serve(root / "current" / m.entrypoint)
    assert srv.wait_healthy(), srv.log.read_text()[-2000:]
    status, body = http(srv.url + "/v1/completions", {"prompt": "the fleet", "max_tokens": 8, "seed": 1})
    assert status == 200
    reply = json.loads(body)
    assert reply["usage"]["completion_tokens"] > 0
    assert isinstance(reply["choices"][0]["text"], str) and reply["choices"][0]["text"].strip()
    status, body = http(srv.url + "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    assert status == 200 and json.loads(body)["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_split_model_loads_from_its_first_shard(tmp_path, serve, qtype):
    files = write_tiny_gguf(tmp_path / "split.gguf", qtype=qtype, split_max_tensors=8)
    assert len(files) == 3
    srv = serve(files[0])
    assert srv.wait_healthy(), srv.log.read_text()[-2000:]
    status, body = http(srv.url + "/props")
    assert status == 200


def test_missing_shard_fails_to_load(tmp_path, serve):
    files = write_tiny_gguf(tmp_path / "split.gguf", qtype="q8_0", split_max_tensors=8)
    files[1].unlink()
    srv = serve(files[0])
    assert not srv.wait_healthy()
    assert srv.proc.wait(timeout=30) != 0
    assert f"failed to load GGUF split from {files[1]}" in srv.log.read_text()


def test_runtime_and_model_both_served_from_releases(tmp_path, serve):
    """The packed runtime artifact, installed (decompressed, unpacked) as a release, serves a model release."""
    store = tmp_path / "store"
    rt = pack_runtime(RUNTIME, store, level=3)
    files = write_tiny_gguf(tmp_path / "src" / "tiny.gguf", qtype="q8_0", split_max_tensors=8)
    m = publish(store, files, kind="model", name="tiny", version="1")
    rt_root, model_root = tmp_path / "opt" / "runtime", tmp_path / "srv" / "model"
    with StoreServer(store) as srv:
        res = run_local(release.artifact, root=str(rt_root), release="cpu-1", manifest=rt,
                        source=f"{srv.url}{rt.name}/{rt.version}/", compressed=True, unpack=True)
        assert not res.failed, res.stderr
        res = run_local(release.artifact, root=str(model_root), release="tiny-1", manifest=m,
                        source=f"{srv.url}tiny/1/")
        assert not res.failed, res.stderr
    for root, rid in ((rt_root, "cpu-1"), (model_root, "tiny-1")):
        assert not run_local(release.switch, root=str(root), release=rid).failed

    binary = rt_root / "current" / "bin" / "llama-server"
    assert os.access(binary, os.X_OK)
    server = serve(model_root / "current" / m.entrypoint, binary=binary)
    assert server.wait_healthy(), server.log.read_text()[-2000:]
    status, body = http(server.url + "/v1/completions", {"prompt": "edge", "max_tokens": 4})
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] > 0
