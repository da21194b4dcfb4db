"""Record a real, noisy CPU-utilisation trace on this host with psutil (fixture generator).

Two worker processes run bursty load: in each 100 ms slot a worker is busy with probability p,
the way request arrivals load a server. The phases step p through idle, medium (near the
switching thresholds), heavy, medium and idle. ``psutil.cpu_percent()`` is sampled every
``--step`` seconds over all CPUs. Other work on the host adds its own noise, as in production.

    python tests/ops/record_trace.py --out tests/ops/data/cpu_util_noisy_trace.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import time

import psutil

PHASES = [("idle", 0.05), ("medium", 0.45), ("heavy", 0.9), ("medium", 0.45), ("idle", 0.05)]


def worker(p: mp.Value, stop: mp.Event, seed: int) -> None:
    rnd = random.Random(seed)
    while not stop.is_set():
        end = time.monotonic() + 0.1
        if rnd.random() < p.value:
            while time.monotonic() < end:
                pass
        else:
            time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=15.0)
    ap.add_argument("--step", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    p = mp.Value("d", 0.0)
    stop = mp.Event()
    procs = [mp.Process(target=worker, args=(p, stop, i)) for i in range(psutil.cpu_count())]
    for pr in procs:
        pr.start()
    psutil.cpu_percent(None)
    samples, t0 = [], time.monotonic()
    try:
        for name, prob in PHASES:
            p.value = prob
            end = time.monotonic() + args.phase_s
            while time.monotonic() < end:
                time.sleep(args.step)
                samples.append({"t": round(time.monotonic() - t0, 3), "cpu": psutil.cpu_percent(None),
                                "phase": name})
    finally:
        stop.set()
        for pr in procs:
            pr.join()
    meta = {"host": platform.node(), "cpus": psutil.cpu_count(), "step_s": args.step,
            "phases": PHASES, "phase_s": args.phase_s, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "how": "tests/ops/record_trace.py: bursty busy-loop workers, psutil.cpu_percent over all CPUs"}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "samples": samples}, f, indent=0)


if __name__ == "__main__":
    main()
