"""Lab figures: up/down time and memory per host for fleets of N hosts (``tierfleet lab bench``).

Uses its own state dir and addresses (``.201`` onwards in the address block,
:func:`tierfleet.lab.spec.address_block`) so it never touches a running lab.
Memory per host is summed over every process in the host's cgroup (supervisor, nspawn, the
container, its bridges): RSS and PSS from ``/proc/<pid>/smaps_rollup``; "memcg" is what the host's
memory cgroup is charged (processes plus the page cache of its files); "machine" is the growth of
free(1)'s "used" (MemTotal - MemFree - Buffers - Cached - SReclaimable) while the fleet is up, divided by N.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tierfleet.lab.fleet import Lab
from tierfleet.lab.spec import address_block, cycle_spec
from tierfleet.lab.system import cgroup_memory_bytes, cgroup_pids


def _mem_used_kib() -> int:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    # what free(1) calls "used": page cache and reclaimable slab do not count
    return (info["MemTotal"] - info["MemFree"] - info["Buffers"] - info["Cached"] - info["SReclaimable"])


def _rss_pss_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def bench_one(n: int, log=print) -> dict:
    with tempfile.TemporaryDirectory(prefix="tierfleet-lab-bench-") as tmp, address_block(200):
        lab = Lab(Path(tmp) / "lab", log=log)
        try:
            lab.up(cycle_spec(1))  # warm the caches (base, apt repo) outside the measurement
            lab.down()
            used_before = _mem_used_kib()
            t0 = time.monotonic()
            lab.up(cycle_spec(n))
            t_ssh = time.monotonic() - t0
            states = lab.wait_running(timeout=120)
            t_running = time.monotonic() - t0
            time.sleep(3)  # let boot-time processes settle before measuring memory
            per_host = [_rss_pss_kib(cgroup_pids(f"{lab.id}/{h.name}")) for h in lab.hosts()]
            memcg = [cgroup_memory_bytes(f"{lab.id}/{h.name}") for h in lab.hosts()]
            used_after = _mem_used_kib()
            t1 = time.monotonic()
            lab.up()  # every host already running: the "later up takes seconds" path
            t_again = time.monotonic() - t1
            t2 = time.monotonic()
            lab.down()
            t_down = time.monotonic() - t2
        finally:
            lab.down()
    return {
        "n": n,
        "up_ssh_s": t_ssh,
        "up_running_s": t_running,
        "up_again_s": t_again,
        "down_s": t_down,
        "not_running": sorted(k for k, v in states.items() if v != "running"),
        "rss_mib": sum(r for r, _ in per_host) / len(per_host) / 1024,
        "pss_mib": sum(p for _, p in per_host) / len(per_host) / 1024,
        "machine_mib": (used_after - used_before) / n / 1024,
        "memcg_mib": (sum(memcg) / len(memcg) / 2 ** 20) if all(m is not None for m in memcg) else float("nan"),
    }


def run_bench(counts: list[int], log=print) -> list[str]:
    lines = [f"{'N':>3} {'up:ssh s':>9} {'up:running s':>13} {'up again s':>11} {'down s':>7} "
             f"{'RSS MiB/host':>13} {'PSS MiB/host':>13} {'memcg MiB/host':>15} {'machine MiB/host':>17}"]
    for n in counts:
        r = bench_one(n, log)
        lines.append(f"{r['n']:>3} {r['up_ssh_s']:>9.1f} {r['up_running_s']:>13.1f} {r['up_again_s']:>11.1f} "
                     f"{r['down_s']:>7.1f} {r['rss_mib']:>13.1f} {r['pss_mib']:>13.1f} {r['memcg_mib']:>15.1f} "
                     f"{r['machine_mib']:>17.1f}"
                     + (f"  not running: {','.join(r['not_running'])}" if r["not_running"] else ""))
    return lines
