"""``tierfleet-ops bench``: the daemon's own cost and its reaction to a load step, measured.

A real daemon process is started on this host (its real /proc and /sys, a temporary policy,
state and socket, metrics off) and watched with psutil:

* CPU share of one core and RSS over ``--seconds`` at the given tick (goals: <= 0.5 % of one
  core, <= 40 MB RSS);
* reaction time from a CPU load step (busy processes on every CPU, started as the ``eco`` hold
  is released) to the profile switch seen on the control socket (goal: one tick plus the dwell).

``python -m tierfleet_ops.bench --seconds 10`` runs it without the console script.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

import psutil

POLICY = """\
version: 1
tick_s: {tick}
on_stop: restore
default_profile: eco
profiles:
  eco: {{}}
  performance: {{}}
switching:
  order: [eco, performance]
  signals: [cpu_util]
  up: {{performance: 60}}
  down: {{performance: 30}}
  dwell_s: {dwell}
  min_hold_s: 0
pinning:
  enabled: false
"""


def _spin(stop: mp.synchronize.Event) -> None:
    while not stop.is_set():
        pass


def run_bench(seconds: float, tick: float, echo: Callable[[str], None] = print, dwell: float = 2.0) -> dict:
    from .control import request

    with tempfile.TemporaryDirectory(prefix="tierfleet-ops-bench-") as d:
        pol = Path(d, "policy.yaml")
        pol.write_text(POLICY.format(tick=tick, dwell=dwell))
        sock = str(Path(d, "ops.sock"))
        argv = [sys.executable, "-m", "tierfleet_ops", "run", "--policy", str(pol), "--state",
                str(Path(d, "state.json")), "--socket", sock, "--metrics-port", "0", "--log-level", "warning"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.05)
            p = psutil.Process(proc.pid)
            # hold eco while measuring the idle cost, so other work on the host cannot switch it
            request(sock, {"cmd": "hold", "profile": "eco"})
            time.sleep(2 * tick)  # let imports and the first ticks settle
            c0, t0 = p.cpu_times(), time.monotonic()
            rss_max = 0
            while time.monotonic() - t0 < seconds:
                rss_max = max(rss_max, p.memory_info().rss)
                time.sleep(min(1.0, seconds / 10))
            c1, t1 = p.cpu_times(), time.monotonic()
            cpu_pct = 100.0 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)
            echo(f"daemon cpu: {cpu_pct:.3f} % of one core over {t1 - t0:.0f} s at a {tick:g} s tick "
                 f"(goal <= 0.5 %)")
            echo(f"daemon rss: {rss_max / 2**20:.1f} MiB max (goal <= 40 MiB)")
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
            proc.terminate()
            proc.wait(timeout=30)
    return {"cpu_pct": cpu_pct, "rss_mib": rss_max / 2**20, "reaction_s": reaction}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tierfleet_ops.bench")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tick", type=float, default=1.0)
    a = ap.parse_args()
    run_bench(a.seconds, a.tick)


if __name__ == "__main__":
    main()
