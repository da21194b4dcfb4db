"""Real parts for the shard tests: llama.cpp's own llama-server in router mode, tiny GGUF models made here
(one of them split into three files), the ops daemon's gate over real loopback HTTP.

Needs the cached runtime build (``make runtime``); skipped with that instruction when it is absent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
from tierfleet.artifacts.llama_build import cached_runtime
from tierfleet.lab.system import wait_until
from tierfleet.shards import PresetShard, estimate_memory, gguf_info, render_preset
from tierfleet_ops.gate import Gate
from tierfleet_ops.shards import parse_shards

CACHE = Path(os.environ.get("TIERFLEET_CACHE", Path(__file__).resolve().parents[2] / ".cache")) / "runtime"
RUNTIME = cached_runtime(CACHE)
needs_runtime = pytest.mark.skipif(
    RUNTIME is None, reason=f"no cached llama-server under {CACHE}: build it with `make runtime` (4-10 min)")

CTX = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 60.0) -> tuple[int | None, bytes]:
    """One real HTTP request; (status, body), ``(None, b"")`` when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, b""


def complete(url: str, model: str, tokens: int = 4, timeout: float = 60.0, **extra) -> tuple[int | None, bytes]:
    return http(url + "/v1/completions", {"model": model, "prompt": "the fleet", "max_tokens": tokens, **extra},
                timeout=timeout)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, list[Path]]:
    """Three tiny models: ``a`` (Q8_0), ``b`` (F16), ``c`` (Q8_0 split into three files)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "a": write_tiny_gguf(root / "a" / "a.gguf", qtype="q8_0", seed=11),
        "b": write_tiny_gguf(root / "b" / "b.gguf", qtype="f16", seed=12),
        "c": write_tiny_gguf(root / "c" / "c.gguf", qtype="q8_0", seed=13, split_max_tensors=8),
    }


def memory_of(files: list[Path]) -> int:
    """A shard's estimate from its real files, as a CPU host computes it."""
    return estimate_memory(gguf_info(files), CTX, 1, "cpu", 0).budget_bytes


class Router:
    """llama-server in router mode with a rendered preset, in its own cgroup when one is given."""

    def __init__(self, workdir: Path, models: dict[str, list[Path]], cgroup: Path | None = None) -> None:
        assert RUNTIME is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models = models
        self.preset = workdir / "shards.ini"
        self.preset.write_text(render_preset([PresetShard(n, str(f[0])) for n, f in models.items()],
                                             threads=1, context_size=CTX, gpu_layers=0, parallel=1))
        self.log = workdir / "router.log"
        self.cgroup = cgroup
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [str(RUNTIME.server), "--host", "127.0.0.1", "--port", str(self.port),
                "--models-preset", str(self.preset), "--models-max", str(len(self.models)),
                "--no-models-autoload"]

    def start(self) -> Router:
        procs = str(self.cgroup / "cgroup.procs") if self.cgroup else None

        def enter_cgroup() -> None:  # in the child, before exec: the router and every child it starts
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        self.proc = subprocess.Popen(self.argv(), stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     preexec_fn=enter_cgroup if procs else None)
        assert wait_until(lambda: self.proc.poll() is not None or http(self.url + "/health", timeout=2)[0] == 200,
                          timeout=60) and self.proc.poll() is None, self.log.read_text()[-2000:]
        return self

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        except psutil.NoSuchProcess:
            return []

    def child_of(self, shard: str) -> psutil.Process | None:
        for c in self.children():
            try:
                argv = c.cmdline()
            except psutil.Error:
                continue
            if "--alias" in argv and argv[argv.index("--alias") + 1] == shard:
                return c
        return None

    def states(self) -> dict[str, str]:
        status, body = http(self.url + "/models", timeout=5)
        if status != 200:
            return {}
        return {m["id"]: m["status"]["value"] for m in json.loads(body)["data"]}

    def kill(self) -> None:
        """SIGKILL the router, as the OOM killer or a crash would."""
        assert self.proc is not None
        kids = self.children()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        psutil.wait_procs(kids, timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for k in psutil.wait_procs(kids, timeout=10)[1]:
            k.kill()


@pytest.fixture
def router(tmp_path, tiny_models):
    started: list[Router] = []

    def make(models: dict[str, list[Path]] | None = None, cgroup: Path | None = None) -> Router:
        r = Router(tmp_path, models or tiny_models, cgroup).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def gate():
    started: list[Gate] = []

    def make(router: Router, shards: dict[str, dict], budget: int, **section) -> Gate:
        models = {n: {"memory_bytes": memory_of(router.models[n]),
                      "files": [{"path": str(p), "size": p.stat().st_size} for p in router.models[n]], **opts}
                  for n, opts in shards.items()}
        cfg = parse_shards({"mode": "router", "listen": f"127.0.0.1:{free_port()}", "runtime_url": router.url,
                            "memory_budget_bytes": budget, "models": models, "sync_s": 0.5, **section})
        g = Gate(cfg)
        g.start()
        g.url = "http://" + cfg.listen  # type: ignore[attr-defined]
        started.append(g)
        assert wait_until(lambda: g.runtime_up, timeout=20)
        return g

    yield make
    for g in started:
        g.stop()


def shard(g: Gate, name: str) -> dict:
    return next(s for s in g.snapshot() if s["name"] == name)
