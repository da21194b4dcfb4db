"""Model shards: wake-up latency against the disk, the gate's added latency, memory given back on unload.

Usage::

    python bench/shards.py                        # a ~200 MB and a ~60 MB Q8_0 GGUF, 400 gate requests
    python bench/shards.py --size-mb 500 --requests 1000
    python bench/shards.py --file model.gguf      # a real model (first file of a split set) instead
    python bench/shards.py --llama-defaults       # shards loaded with llama.cpp's warm-up and weight repacking
    python bench/shards.py --runtime-arg=--mlock  # the router (and so its children) with more arguments

Needs the cached llama-server build (``make runtime``). Prints, on this machine:

1. **Wake-up** of a shard through the gate (request for an unloaded shard -> loaded: the router starts a
   child, which maps the GGUF and has every page read in; with ``--llama-defaults`` it also repacks the
   weights and runs its warm-up pass) next to a plain sequential read
   of the same files (1 MiB ``read()``\\ s: the physical limit), with the page cache cold (the files'
   pages dropped with ``posix_fadvise(POSIX_FADV_DONTNEED)``: only these files, nothing else on the host)
   and warm. The runtime's own start cost (a child with the ~170 kB tiny model) is reported separately and
   taken off: ``efficiency = read time / (wake-up - start cost)``, goal >= 80 %.
2. **Added latency** of the gate: the same small completion (1 token) sent alternately to the router
   directly and through the gate, each over its own kept-alive connection; p50/p90/p99 of both and the
   difference of the medians (goal <= 1 ms at p50).
3. **Memory given back**: the child's resident memory loaded, and the host's used memory (``MemTotal -
   MemAvailable``) before the load, loaded, and after the gate unloaded it (the process exits); for
   comparison the same model in llama-server's own sleep (``--sleep-idle-seconds``: the process stays).

The models are synthetic (``tierfleet.artifacts.gguf_tiny.write_sized_gguf``): llama-shaped, so the read
and warm-up pattern is llama.cpp's; ``--file`` measures a real one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from tierfleet.artifacts.gguf_tiny import write_sized_gguf, write_tiny_gguf  # noqa: E402
from tierfleet.artifacts.llama_build import cached_runtime  # noqa: E402
from tierfleet.lab.system import wait_until  # noqa: E402
from tierfleet.shards import PresetShard, estimate_memory, gguf_info, render_preset  # noqa: E402
from tierfleet_ops.gate import Gate  # noqa: E402
from tierfleet_ops.shards import parse_shards  # noqa: E402

MB = 10**6
MIB = 2**20
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_cache(files: list[Path]) -> None:
    """Evict these files' clean pages from the page cache (and only theirs)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(files: list[Path]) -> float | None:
    """Share of the files' pages in the page cache (``fincore``), or None without the tool."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", *map(str, files)], capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    res, size = sum(int(x) for x in out[0::2]), sum(int(x) for x in out[1::2])
    return res / size if size else None


def read_seconds(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(1 << 20):
                pass
    return time.perf_counter() - t0


class Conn:
    """One kept-alive HTTP/1.1 connection (http.client), for timing requests without connection setup."""

    def __init__(self, port: int) -> None:
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(self, path: str, body: dict) -> tuple[int, bytes]:
        self.c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = self.c.getresponse()
        return r.status, r.read()


def used_bytes() -> int:
    vm = psutil.virtual_memory()
    return vm.total - vm.available


class Setup:
    def __init__(self, work: Path, models: dict[str, list[Path]], budget: int, extra: list[str] = (),
                 warmup: bool = False, repack: bool = False) -> None:
        rt = cached_runtime(REPO / ".cache" / "runtime")
        if rt is None:
            sys.exit("no cached llama-server: run `make runtime` first")
        self.server = rt.server
        self.models = models
        preset = work / "shards.ini"
        preset.write_text(render_preset([PresetShard(n, str(f[0]), warmup=warmup, repack=repack)
                                         for n, f in models.items()],
                                        threads=max(1, len(os.sched_getaffinity(0)) - 1), context_size=512,
                                        gpu_layers=0, parallel=1))
        self.rport, self.gport = free_port(), free_port()
        self.router = subprocess.Popen(
            [str(self.server), "--host", "127.0.0.1", "--port", str(self.rport), "--models-preset", str(preset),
             "--models-max", str(len(models)), "--no-models-autoload", *extra],
            stdout=open(work / "router.log", "wb"), stderr=subprocess.STDOUT)
        est = {n: estimate_memory(gguf_info(f), 512, 1, "cpu", 0).budget_bytes for n, f in models.items()}
        cfg = parse_shards({"mode": "router", "listen": f"127.0.0.1:{self.gport}",
                            "runtime_url": f"http://127.0.0.1:{self.rport}", "memory_budget_bytes": budget,
                            "models": {n: {"memory_bytes": est[n]} for n in models}, "sync_s": 1,
                            "load_timeout_s": 600})
        self.gate = Gate(cfg)
        self.gate.start()
        if not wait_until(lambda: self.gate.runtime_up, timeout=60):
            sys.exit("the router did not come up; see router.log")

    def shard(self, name: str) -> dict:
        return next(s for s in self.gate.snapshot() if s["name"] == name)

    def unload(self, name: str) -> None:
        """Unload ``name`` and wait until its child has exited (its mappings gone, so its pages can be dropped)."""
        child = self.child(name)
        c = Conn(self.rport)
        c.post("/models/unload", {"model": name})
        wait_until(lambda: self.shard(name)["state"] == "unloaded", timeout=60, interval=0.05)
        if child is not None:
            wait_until(lambda: not child.is_running(), timeout=60, interval=0.05)

    def child(self, name: str) -> psutil.Process | None:
        for p in psutil.Process(self.router.pid).children():
            try:
                if name in p.cmdline():
                    return p
            except psutil.Error:
                pass
        return None

    def close(self) -> None:
        self.gate.stop()
        self.router.terminate()
        self.router.wait(30)


#: llama.cpp's log lines that end the phases of a load (the router prefixes its children's lines with ``[port]``)
PHASES = (("start", "load_model: loading model"), ("weights", "llama threadpool init"),
          ("context", "llama_server: model loaded"))


def log_seconds(stamp: str) -> float | None:
    """A llama.cpp log time stamp (minutes.seconds.milliseconds.microseconds since the process started).

    >>> log_seconds("0.00.308.147"), log_seconds("1.02.003.000"), log_seconds("x")
    (0.308147, 62.003, None)
    """
    parts = stamp.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    m, sec, ms, us = map(int, parts)
    return round(m * 60 + sec + ms / 1e3 + us / 1e6, 6)


def child_phases(log: Path, port: int) -> dict[str, float] | None:
    """Seconds of each phase of the last load by the child on ``port``, from the router's log: ``start`` (process
    start to opening the model), ``weights`` (mapping and reading the weights), ``context`` (KV cache and compute
    buffers, up to "model loaded")."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith(f"[{port}] "):
            continue
        body = line[len(f"[{port}] "):]
        t = log_seconds(body.split(" ", 1)[0])
        for phase, text in PHASES:
            if t is not None and text in body:
                marks[phase] = t
    if len(marks) != len(PHASES):
        return None
    return {"start": marks["start"], "weights": marks["weights"] - marks["start"],
            "context": marks["context"] - marks["weights"]}


def wake(setup: Setup, name: str, cold: bool) -> tuple[float, float]:
    """(gate's wake-up seconds, request seconds) for one request to the unloaded shard ``name``."""
    if setup.shard(name)["state"] != "unloaded":
        setup.unload(name)
    if cold:
        drop_cache(setup.models[name])
    t0 = time.perf_counter()
    status, body = Conn(setup.gport).post("/v1/completions", {"model": name, "prompt": "the", "max_tokens": 1})
    total = time.perf_counter() - t0
    if status != 200:
        sys.exit(f"wake-up of {name} failed: {status} {body[:300]!r}")
    return setup.shard(name)["last_wake_s"], total


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=200, help="the big synthetic shard, MB")
    ap.add_argument("--file", type=Path, help="measure this GGUF (first file of a split set) as the big shard")
    ap.add_argument("--requests", type=int, default=400, help="requests per path for the added latency")
    ap.add_argument("--repeat", type=int, default=3, help="wake-ups per cache state")
    ap.add_argument("--runtime-arg", action="append", default=[], metavar="ARG",
                    help="an argument for llama-server's router, which its children inherit (repeatable), e.g. "
                    "--runtime-arg=--mlock")
    ap.add_argument("--llama-defaults", action="store_true",
                    help="load with llama.cpp's warm-up pass and weight repacking (what a preload or pinned shard "
                    "gets); by default the shards load as the deploy renders an on-demand shard: without both")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=REPO / ".cache") as tmp:
        work = Path(tmp)
        if args.file:
            first = args.file.resolve()
            stem = first.name.split("-00001-of-")[0]
            big = sorted(first.parent.glob(stem + "-0*-of-*.gguf")) or [first]
        else:
            print(f"writing a {args.size_mb} MB synthetic Q8_0 GGUF ...", flush=True)
            big = [write_sized_gguf(work / "big" / "big.gguf", args.size_mb * MB, seed=1)]
        tiny = write_tiny_gguf(work / "tiny" / "tiny.gguf", qtype="q8_0", seed=1)
        size = sum(f.stat().st_size for f in big)
        setup = Setup(work, {"big": big, "tiny": tiny}, budget=1 << 50, extra=args.runtime_arg,
                      warmup=args.llama_defaults, repack=args.llama_defaults)
        try:
            print(f"\nmachine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB; "
                  f"llama-server {setup.server} {' '.join(args.runtime_arg)}".rstrip())
            print("shards load " + ("with llama.cpp's warm-up and repacking (--llama-defaults)" if args.llama_defaults
                                    else "as the deploy renders an on-demand shard: warmup = false, repack = false"))
            print(f"big shard: {size / MB:.0f} MB in {len(big)} file(s); tiny: {tiny[0].stat().st_size / 1e3:.0f} kB")

            # 1. wake-up vs sequential read
            starts = [wake(setup, "tiny", cold=False)[0] for _ in range(args.repeat)]
            start = statistics.median(starts)
            print("\n1. wake-up (request for an unloaded shard -> loaded) vs a sequential read of its files")
            print(f"   runtime start cost (tiny model, warm): median {start * 1e3:.0f} ms "
                  f"({', '.join(f'{s * 1e3:.0f}' for s in starts)} ms)")
            print(f"   {'cache':<6} {'read s':>8} {'read MB/s':>10} {'wake s':>8} {'wake-start s':>13} "
                  f"{'efficiency':>11} {'request s':>10}")
            phases_by_cache = {}
            for cold in (True, False):
                reads, wakes, totals, phases = [], [], [], []
                for _ in range(args.repeat):
                    if setup.shard("big")["state"] != "unloaded":
                        setup.unload("big")  # a loaded child maps the file: its pages could not be dropped
                    if cold:
                        drop_cache(big)
                    reads.append(read_seconds(big))
                    w, t = wake(setup, "big", cold)
                    wakes.append(w)
                    totals.append(t)
                    child = setup.child("big")
                    argv = child.cmdline() if child else []
                    if "--port" in argv[:-1]:
                        ph = child_phases(work / "router.log", int(argv[argv.index("--port") + 1]))
                        if ph:
                            phases.append(ph)
                r, w, t = statistics.median(reads), statistics.median(wakes), statistics.median(totals)
                eff = r / max(1e-9, w - start)
                cf = cached_fraction(big)
                print(f"   {'cold' if cold else 'warm':<6} {r:8.3f} {size / MB / r:10.0f} {w:8.3f} {w - start:13.3f} "
                      f"{eff:10.0%} {t:10.3f}" + (f"   (after: {cf:.0%} of the file cached)" if cf is not None else ""))
                if phases:
                    phases_by_cache["cold" if cold else "warm"] = (r, {k: statistics.median(p[k] for p in phases)
                                                                       for k in phases[0]})
            if phases_by_cache:
                print("   inside the child (llama.cpp's own log, medians): process start to opening the model; the "
                      "weights (mapped, every page read in); the context (KV cache, compute buffers)")
                for label, (r, ph) in phases_by_cache.items():
                    print(f"   {label:<6} start {ph['start']:.3f} s  weights {ph['weights']:.3f} s  context "
                          f"{ph['context']:.3f} s   read time / weights: {r / max(1e-9, ph['weights']):.0%}")

            # 2. added latency of the gate
            setup.unload("big")
            direct, gated = Conn(setup.rport), Conn(setup.gport)
            body = {"model": "tiny", "prompt": "the", "max_tokens": 1}
            for c in (direct, gated):  # warm both connections and the slot
                for _ in range(20):
                    c.post("/v1/completions", body)
            d, g = [], []
            for _ in range(args.requests):
                for conn, out in ((direct, d), (gated, g)):
                    t0 = time.perf_counter()
                    status, _ = conn.post("/v1/completions", body)
                    out.append(time.perf_counter() - t0)
                    assert status == 200
            print(f"\n2. added latency of the gate, 1-token completion, {args.requests} alternating requests each")
            for label, xs in (("router directly", d), ("through the gate", g)):
                print(f"   {label:<17} p50 {pct(xs, .5) * 1e3:6.2f} ms  p90 {pct(xs, .9) * 1e3:6.2f} ms  "
                      f"p99 {pct(xs, .99) * 1e3:6.2f} ms")
            diffs = sorted(b - a for a, b in zip(d, g))
            print(f"   added: p50 {(pct(g, .5) - pct(d, .5)) * 1e3:.2f} ms (median of paired differences "
                  f"{statistics.median(diffs) * 1e3:.2f} ms); goal <= 1 ms")

            # 3. memory given back
            print("\n3. memory given back after an unload (big shard)")
            setup.unload("big")
            before = used_bytes()
            wake(setup, "big", cold=False)
            child = setup.child("big")
            rss = child.memory_info() if child else None
            loaded = used_bytes()
            setup.unload("big")
            wait_until(lambda: child is None or not child.is_running(), timeout=30)
            time.sleep(0.5)
            after = used_bytes()
            if rss:
                print(f"   child loaded: RSS {rss.rss / MIB:.0f} MiB (file-backed {getattr(rss, 'shared', 0) / MIB:.0f}"
                      f" MiB); the process exits on unload")
            print(f"   host used memory: before {before / MIB:.0f} MiB, loaded +{(loaded - before) / MIB:.0f} MiB, "
                  f"after unload +{(after - before) / MIB:.0f} MiB (other work on the host moves this figure)")
        finally:
            setup.close()

        # llama-server's own sleep, for comparison: the process and its memory stay
        port = free_port()
        p = subprocess.Popen([str(setup.server), "-m", str(big[0]), "--host", "127.0.0.1", "--port", str(port),
                              "-c", "512", "--sleep-idle-seconds", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def props() -> dict:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    c.request("GET", "/props")
                    return json.loads(c.getresponse().read())
                except (OSError, ValueError):
                    return {}

            wait_until(lambda: props().get("is_sleeping") is False, timeout=120)
            Conn(port).post("/v1/completions", {"prompt": "the", "max_tokens": 1})
            awake = psutil.Process(p.pid).memory_info().rss
            wait_until(lambda: props().get("is_sleeping") is True, timeout=60)
            asleep = psutil.Process(p.pid).memory_info().rss
            print(f"   llama-server --sleep-idle-seconds (one shard): RSS awake {awake / MIB:.0f} MiB, "
                  f"asleep {asleep / MIB:.0f} MiB (the process stays: {asleep / MIB:.0f} MiB held, and on a GPU "
                  "its CUDA context)")
        finally:
            p.terminate()
            p.wait(30)


if __name__ == "__main__":
    main()
