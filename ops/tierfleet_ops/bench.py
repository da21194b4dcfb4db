"""``tierfleet-ops bench``: the daemon's own cost and its reaction to a load step, measured.

A real daemon process is started on this host and watched with psutil, in the case it runs in
on a deployed host:

* every backend this host has (its real ``/sys``, or ``--sysfs-root``), and NVML replayed from
  the recorded H200 probe (:mod:`tierfleet_ops.testing.fakenvml`) unless ``--no-fake-nvml``;
* a real llama-server (``--llama-server BIN --model GGUF``: started here with ``--metrics`` on a
  free loopback port) or an already running one (``--runtime-url``), scraped every tick
  (``/metrics``, ``/slots``), its threads pinned every ``pinning.interval_s``;
* profiles that set the fake GPU's power limit and locked clocks and, on a host with cpufreq,
  the governor it already has (re-verified every ``reapply_s`` without changing the host).

Printed: what was set up, then the CPU share of one core and the RSS over ``--seconds`` at the
given tick (goals: <= 0.5 % of one core, <= 48 MiB RSS), then the reaction time from a CPU load
step (busy processes on every CPU, started as the ``eco`` hold is released) to the profile
switch seen on the control socket (goal: one tick plus the dwell).

``python -m tierfleet_ops.bench --seconds 10`` runs it without the console script.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

#: the recorded H200 NVML probe shipped with the package
FAKE_NVML = Path(__file__).resolve().parent / "data" / "h200_nvml_probe.json"

POLICY = """\
version: 1
tick_s: {tick}
reapply_s: 10
on_stop: restore
default_profile: eco
profiles:
  eco:{eco}
  performance:{performance}
switching:
  order: [eco, performance]
  signals: [cpu_util]
  up: {{performance: 60}}
  down: {{performance: 30}}
  dwell_s: {dwell}
  min_hold_s: 0
{runtime}pinning:
  enabled: {pinning}
  interval_s: 5
"""


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    end = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def _healthy(url: str) -> bool:
    from .signals import fetch

    return fetch(url + "/health") is not None


def _profiles(sysfs_root: str, nvml: bool) -> tuple[str, str]:
    """Profile bodies that exercise every backend without changing this host: the fake GPU gets
    real settings, cpufreq the governor each policy already has (when they all have one)."""
    from .backends.cpufreq import CPUFREQ
    from .sysfs import Sysfs

    sysfs = Sysfs(sysfs_root)
    govs = {sysfs.read(f"{CPUFREQ}/{p}/scaling_governor") for p in sysfs.listdir(CPUFREQ) if p.startswith("policy")}
    cpufreq = f" governor: {govs.pop()}," if len(govs) == 1 and None not in govs else ""
    eco, perf = "", ""
    if cpufreq:
        eco += f"\n    cpufreq: {{{cpufreq.strip(' ,')}}}"
        perf += f"\n    cpufreq: {{{cpufreq.strip(' ,')}}}"
    if nvml:
        eco += "\n    nvml: {power_limit_w: 300, locked_sm_clocks_mhz: [345, 1200]}"
        perf += "\n    nvml: {power_limit_w: 700, locked_sm_clocks_mhz: false}"
    return eco or " {}", perf or " {}"


def run_bench(seconds: float, tick: float, echo: Callable[[str], None] = print, dwell: float = 2.0, *,
              llama_server: str | None = None, model: str | None = None, runtime_url: str | None = None,
              fake_nvml: str | None = str(FAKE_NVML), sysfs_root: str = "/sys") -> dict[str, Any]:
    from .control import request

    with tempfile.TemporaryDirectory(prefix="tierfleet-ops-bench-") as d:
        procs: list[subprocess.Popen[Any]] = []
        runtime = ""
        try:
            if llama_server and model:
                port = _free_port()
                runtime_url = f"http://127.0.0.1:{port}"
                llama = subprocess.Popen(
                    [llama_server, "-m", model, "--host", "127.0.0.1", "--port", str(port), "--metrics",
                     "-t", "1", "-c", "256", "-np", "2"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(llama)
                Path(d, "llama.pid").write_text(f"{llama.pid}\n")
                _wait(lambda: llama.poll() is not None or _healthy(runtime_url or ""), "llama-server /health")
                if llama.poll() is not None:
                    raise RuntimeError(f"bench: {llama_server} exited with {llama.returncode}")
                runtime = f"  pidfile: {Path(d, 'llama.pid')}\n"
            if runtime_url:
                runtime = (f"runtime:\n  metrics_url: {runtime_url}/metrics\n  slots_url: {runtime_url}/slots\n"
                           + (runtime or "  name: llama-server\n"))
            eco, perf = _profiles(sysfs_root, fake_nvml is not None)
            pol = Path(d, "policy.yaml")
            pol.write_text(POLICY.format(tick=tick, dwell=dwell, eco=eco, performance=perf, runtime=runtime,
                                         pinning="true" if runtime else "false"))
            sock = str(Path(d, "ops.sock"))
            argv = [sys.executable, "-m", "tierfleet_ops", "run", "--policy", str(pol), "--state",
                    str(Path(d, "state.json")), "--socket", sock, "--metrics-port", "0", "--log-level", "warning",
                    "--sysfs-root", sysfs_root]
            if fake_nvml:
                argv += ["--fake-nvml", fake_nvml]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            _wait(lambda: proc.poll() is not None or os.path.exists(sock), "the daemon's socket")
            if proc.poll() is not None:
                raise RuntimeError(f"daemon did not start: {proc.stderr.read() if proc.stderr else ''}")
            p = psutil.Process(proc.pid)
            # hold eco while measuring the idle cost, so other work on the host cannot switch it
            request(sock, {"cmd": "hold", "profile": "eco"})
            st = request(sock, {"cmd": "status"})
            if runtime_url:
                _wait(lambda: request(sock, {"cmd": "status"})["signals"].get("model_loaded") is True,
                      "the runtime to be scraped")
            time.sleep(2 * tick)  # let imports and the first ticks settle
            backends = ", ".join(b["name"] + (" (recorded H200 probe)" if b["name"] == "nvml" and fake_nvml else "")
                                 for b in st["backends"]) or "none"
            echo(f"setup: backends {backends}; absent: "
                 + (", ".join(st["absent_backends"]) or "none")
                 + (f"; runtime {runtime_url} scraped every tick" if runtime_url else "; no runtime"))
            c0, t0 = p.cpu_times(), time.monotonic()
            rss_max = 0
            while time.monotonic() - t0 < seconds:
                rss_max = max(rss_max, p.memory_info().rss)
                time.sleep(min(1.0, seconds / 10))
            c1, t1 = p.cpu_times(), time.monotonic()
            cpu_pct = 100.0 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)
            st = request(sock, {"cmd": "status"})
            pins = st["pinning"]
            echo(f"daemon cpu: {cpu_pct:.3f} % of one core over {t1 - t0:.0f} s at a {tick:g} s tick "
                 f"(goal <= 0.5 %); {st['ticks']} ticks, {len(pins['pids'])} runtime process(es), "
                 f"{pins['threads']} thread(s) pinned")
            echo(f"daemon rss: {rss_max / 2**20:.1f} MiB max (goal <= 48 MiB)")
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
            step = time.monotonic()
            for s in spinners:
                s.start()
            request(sock, {"cmd": "release"})
            reaction = None
            try:
                while time.monotonic() - step < 10 * tick + 5 * dwell:
                    if request(sock, {"cmd": "status"})["profile"] == "performance":
                        reaction = time.monotonic() - step
                        break
                    time.sleep(0.05)
            finally:
                stop.set()
                for s in spinners:
                    s.join()
            if reaction is None:
                echo("reaction: no switch seen")
            else:
                echo(f"reaction: load step -> profile switch in {reaction:.2f} s "
                     f"(goal ~ tick + dwell = {tick + dwell:.2f} s)")
        finally:
            for pr in reversed(procs):
                if pr.poll() is None:
                    pr.terminate()
                    pr.wait(timeout=30)
    return {"cpu_pct": cpu_pct, "rss_mib": rss_max / 2**20, "reaction_s": reaction}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tierfleet_ops.bench")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tick", type=float, default=1.0)
    ap.add_argument("--llama-server", default=None, help="llama-server binary to start and scrape")
    ap.add_argument("--model", default=None, help="GGUF model for --llama-server")
    ap.add_argument("--runtime-url", default=None, help="scrape an already running llama-server (loopback)")
    ap.add_argument("--sysfs-root", default="/sys")
    ap.add_argument("--no-fake-nvml", action="store_true", help="no NVML replay (a real driver is used if loaded)")
    a = ap.parse_args(argv)
    run_bench(a.seconds, a.tick, llama_server=a.llama_server, model=a.model, runtime_url=a.runtime_url,
              fake_nvml=None if a.no_fake_nvml else str(FAKE_NVML), sysfs_root=a.sysfs_root)


if __name__ == "__main__":
    main()
