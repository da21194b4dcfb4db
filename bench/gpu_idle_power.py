"""Idle GPU power with a model shard loaded vs unloaded, on a machine with a real NVIDIA GPU. READ-ONLY.

Usage (on the GPU machine, with a CUDA build of llama-server and any GGUF)::

    python bench/gpu_idle_power.py --llama-server /path/to/llama-server --model model.gguf
    python bench/gpu_idle_power.py ... --seconds 30 --settle 15 --gpu 0 --json out.json

It measures four states, each sampled every 100 ms for ``--seconds`` after ``--settle`` seconds (clocks and
power ramp down slowly after a change):

1. ``no runtime``: no llama-server (no CUDA context from this script);
2. ``loaded, idle``: llama-server with the model on the GPU (``-ngl 99``), one completion answered, then idle;
3. ``asleep``: the same server after its own ``--sleep-idle-seconds`` put it to sleep (model and KV cache
   freed, the process and its CUDA context kept: what llama-server's sleep and router-mode sleep give);
4. ``unloaded``: the process ended (what the shard gate's unload does: the router's child exits).

and prints mean/median power (W), GPU memory used, SM clock, performance state and compute processes for each,
with the saving of 4 against 2. It never changes a GPU setting: the only NVML calls are ``nvmlInit``,
``nvmlShutdown``, ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetName``,
``nvmlDeviceGetPowerUsage``, ``nvmlDeviceGetMemoryInfo``, ``nvmlDeviceGetClockInfo``,
``nvmlDeviceGetPerformanceState`` and ``nvmlDeviceGetComputeRunningProcesses`` (the ``nvidia-smi
--query-gpu=power.draw,memory.used,clocks.sm,pstate`` readings); no ``nvidia-smi`` option that sets anything is
run, and persistence mode, clocks and power limits are left as they are.

Measured on an H200 (driver 580.159, ``bench/results/gpu_idle_power_h200.txt``): 80.2 W with no runtime, 123.6 W
loaded and idle, 125.1 W asleep (the CUDA context keeps SM clocks at 1980 MHz), 80.4 W unloaded. ``--fake-nvml
PROBE.json`` replays a recorded NVML probe (``tests/ops/data/h200_nvml_probe.json``) instead of the driver (to try
the script where there is no GPU; the figures are then the recording's).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def load_nvml(fake: str | None) -> Any:
    if fake:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
        from tierfleet_ops.testing.fakenvml import FakeNvml

        return FakeNvml(fake)
    import pynvml

    return pynvml


def reading(nvml: Any, fn: str, *args: Any) -> Any:
    """One NVML getter, or None where the GPU or the library does not support it."""
    try:
        return getattr(nvml, fn)(*args)
    except (AttributeError, nvml.NVMLError):
        return None


def sample(nvml: Any, handle: Any, seconds: float, interval: float = 0.1) -> dict[str, Any]:
    watts, mem, sm, pstate, procs = [], [], [], [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        p = reading(nvml, "nvmlDeviceGetPowerUsage", handle)
        if p is not None:
            watts.append(p / 1000.0)
        m = reading(nvml, "nvmlDeviceGetMemoryInfo", handle)
        if m is not None:
            mem.append(m.used / 2**20)
        c = reading(nvml, "nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1))
        if c is not None:
            sm.append(c)
        s = reading(nvml, "nvmlDeviceGetPerformanceState", handle)
        if s is not None:
            pstate.append(s)
        pr = reading(nvml, "nvmlDeviceGetComputeRunningProcesses", handle)
        if pr is not None:
            procs.append(len(pr))
        time.sleep(interval)
    return {
        "samples": len(watts),
        "power_w_mean": statistics.fmean(watts) if watts else None,
        "power_w_median": statistics.median(watts) if watts else None,
        "memory_used_mib": statistics.median(mem) if mem else None,
        "sm_mhz_median": statistics.median(sm) if sm else None,
        "pstate": max(set(pstate), key=pstate.count) if pstate else None,
        "compute_processes": max(procs) if procs else None,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        c.request(method, path, body=json.dumps(body) if body else None, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data.startswith(b"{") else {}
    except (OSError, ValueError):
        return 0, {}


def wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-server", required=True, help="a llama-server built with CUDA")
    ap.add_argument("--model", required=True, help="a GGUF (the first file of a split set)")
    ap.add_argument("--gpu", type=int, default=0, help="GPU index (NVML order)")
    ap.add_argument("--seconds", type=float, default=30.0, help="sampling time per state")
    ap.add_argument("--settle", type=float, default=15.0, help="wait after each change before sampling")
    ap.add_argument("--sleep-after", type=int, default=5, help="llama-server --sleep-idle-seconds for state 3")
    ap.add_argument("--ngl", type=int, default=99, help="layers offloaded to the GPU")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--fake-nvml", metavar="PROBE.json", help="replay a recorded NVML probe (no GPU needed)")
    args = ap.parse_args()

    nvml = load_nvml(args.fake_nvml)
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(args.gpu)
        name = reading(nvml, "nvmlDeviceGetName", handle)
        states: dict[str, dict[str, Any]] = {}
        print(f"GPU {args.gpu}: {name}; {args.seconds:g} s per state after {args.settle:g} s settling", flush=True)
        time.sleep(args.settle)
        states["no runtime"] = sample(nvml, handle, args.seconds)

        port = free_port()
        proc = subprocess.Popen([args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
                                 "-ngl", str(args.ngl), "--sleep-idle-seconds", str(args.sleep_after)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(lambda: call(port, "GET", "/health")[0] == 200, 600, "llama-server to load the model")
            status, _ = call(port, "POST", "/completion", {"prompt": "Hello", "n_predict": 8})
            if status != 200:
                raise SystemExit(f"the completion failed: {status}")
            # loaded and idle: sampled before the sleep timer runs out, restarted by a request each time
            loaded: list[dict[str, Any]] = []
            left = args.seconds
            while left > 0:
                call(port, "POST", "/completion", {"prompt": "Hello", "n_predict": 1})
                chunk = min(left, max(1.0, args.sleep_after - 1.5))
                loaded.append(sample(nvml, handle, chunk))
                left -= chunk
            states["loaded, idle"] = {k: (statistics.fmean(x[k] for x in loaded if x[k] is not None)
                                          if k.startswith("power") else loaded[-1][k]) for k in loaded[0]}
            states["loaded, idle"]["note"] = f"requests every {max(1.0, args.sleep_after - 1.5):g} s keep it awake"
            wait(lambda: call(port, "GET", "/props")[1].get("is_sleeping") is True, 120, "llama-server to sleep")
            time.sleep(args.settle)
            states["asleep"] = sample(nvml, handle, args.seconds)
        finally:
            proc.terminate()
            proc.wait(60)
        time.sleep(args.settle)
        states["unloaded"] = sample(nvml, handle, args.seconds)
    finally:
        nvml.nvmlShutdown()

    print(f"\n{'state':<14} {'mean W':>8} {'median W':>9} {'mem MiB':>8} {'SM MHz':>7} {'P':>3} {'procs':>6}")
    for label, s in states.items():
        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)
        print(f"{label:<14} {f(s['power_w_mean'], '8.1f')} {f(s['power_w_median'], '9.1f')} "
              f"{f(s['memory_used_mib'], '8.0f')} {f(s['sm_mhz_median'], '7.0f')} {f(s['pstate'], '3d')} "
              f"{f(s['compute_processes'], '6d')}")
    lo, hi = states["unloaded"]["power_w_mean"], states["loaded, idle"]["power_w_mean"]
    if lo is not None and hi is not None:
        print(f"\nunloading the idle shard saves {hi - lo:.1f} W ({(hi - lo) / hi:.0%} of its idle draw)")
    if args.json:
        args.json.write_text(json.dumps({"gpu": name, "fake_nvml": bool(args.fake_nvml), "states": states}, indent=1))


if __name__ == "__main__":
    main()
