"""The ops daemon as a real process with the shard gate in front of a real llama-server router that runs in
its own cgroup (as under its systemd unit): every runtime process and thread the router starts is pinned,
status (socket, CLI) and metrics report the shards, and "no shard loaded" is the idle signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tierfleet.lab.system import wait_until
from tierfleet_ops.control import request
from tierfleet_ops.errors import ControlError

from ..ops import machines
from .conftest import complete, free_port, memory_of, needs_runtime

CGROUP2 = Path("/sys/fs/cgroup/unified")
if not (CGROUP2 / "cgroup.procs").exists():
    CGROUP2 = Path("/sys/fs/cgroup")

pytestmark = [
    needs_runtime,
    pytest.mark.skipif(os.geteuid() != 0 or not (CGROUP2 / "cgroup.procs").exists(),
                       reason="needs root and a cgroup2 hierarchy to give the runtime its own cgroup"),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs (1 for the OS, 1 for inference)"),
]

POLICY = textwrap.dedent("""\
    version: 1
    tick_s: 0.2
    default_profile: balanced
    profiles:
      eco:
        cpufreq: {{governor: powersave}}
      balanced:
        cpufreq: {{governor: schedutil}}
    switching:
      order: [eco, balanced]
      signals: [queue]
      up: {{balanced: 50}}
      down: {{balanced: 20}}
      dwell_s: 0.4
      min_hold_s: 0
      idle_profile: eco
    runtime:
      unit: {unit}
    pinning:
      enabled: true
      reserve_cores: 1
      interval_s: 30          # long: a newly loaded shard is pinned at once by the gate's hook, not by this
    shards:
      mode: router
      listen: "127.0.0.1:{gate_port}"
      runtime_url: "{runtime}"
      memory_budget_bytes: {budget}
      sync_s: 0.5
      models:
        a: {{memory_bytes: {mem_a}, ttl_s: 3}}
        c: {{memory_bytes: {mem_c}}}
    """)


@pytest.fixture
def cgroup():
    path = CGROUP2 / f"tierfleet-shards-test-{os.getpid()}.service"
    path.mkdir()
    yield path
    wait_until(lambda: not (path / "cgroup.procs").read_text().split(), timeout=20)
    path.rmdir()


def masks(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}


def status(sock: str) -> dict | None:
    try:
        return request(sock, {"cmd": "status"})
    except ControlError:
        return None


def test_daemon_pins_router_children_and_reports_shards(tmp_path, cgroup, router, tiny_models):
    r = router(cgroup=cgroup)
    gate_port, metrics_port = free_port(), free_port()
    pol = tmp_path / "policy.yaml"
    pol.write_text(POLICY.format(unit=cgroup.name, gate_port=gate_port, runtime=r.url,
                                 budget=10 * memory_of(tiny_models["a"]), mem_a=memory_of(tiny_models["a"]),
                                 mem_c=memory_of(tiny_models["c"])))
    root = machines.acpi_cpufreq(tmp_path / "sys", 2)
    sock = str(tmp_path / "ops.sock")
    daemon = subprocess.Popen([sys.executable, "-m", "tierfleet_ops", "run", "--policy", str(pol), "--state",
                               str(tmp_path / "state.json"), "--socket", sock, "--metrics-port", str(metrics_port),
                               "--sysfs-root", str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        st = wait_until(lambda: (s := status(sock)) and s["shards"] and s["shards"][0]["state"] == "unloaded" and s,
                        timeout=30)
        assert [s["name"] for s in st["shards"]] == ["a", "c"]
        # nothing loaded: the idle profile
        st = wait_until(lambda: (s := status(sock))["profile"] == "eco" and s, timeout=20)
        assert st["signals"]["model_loaded"] is False and st["reason"] == "no model loaded"
        inference = {int(c) for c in st["placement"]["inference"].split(",")}
        assert inference != set(os.sched_getaffinity(0))  # pinning changes something

        gate = f"http://127.0.0.1:{gate_port}"
        assert complete(gate, "a")[0] == 200
        assert complete(gate, "c")[0] == 200
        children = {n: r.child_of(n) for n in ("a", "c")}
        assert all(children.values())
        # every process the router started, and every thread in them, on the inference CPUs
        pids = [r.proc.pid, *(c.pid for c in children.values())]
        assert wait_until(lambda: all(masks(p) == {frozenset(inference)} for p in pids), timeout=20), \
            {p: masks(p) for p in pids}
        st = wait_until(lambda: (s := status(sock))["signals"]["model_loaded"] and s, timeout=20)
        assert set(st["pinning"]["pids"]) >= set(pids)
        # a may already be past its TTL on a slow machine: its state is checked on c, which has none
        a, c = (next(s for s in st["shards"] if s["name"] == n) for n in ("a", "c"))
        assert a["loads"] == 1 and a["wake_s"]["count"] == 1 and c["state"] == "loaded"
        assert wait_until(lambda: next(s for s in status(sock)["shards"] if s["name"] == "c")["rss_bytes"],
                          timeout=40) > 1 << 20
        held = {s["name"]: s["memory_bytes"] for s in st["shards"] if s["state"] in ("loading", "loaded", "unloading")}
        assert "c" in held and st["shard_budget"]["held_bytes"] == sum(held.values())

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("tierfleet_ops_shard_loaded", (("shard", "c"),))] == 1.0
        assert samples[("tierfleet_ops_shard_loads_total", (("shard", "a"),))] == 1.0
        assert samples[("tierfleet_ops_shard_wake_seconds_count", (("shard", "a"),))] == 1.0
        assert samples[("tierfleet_ops_shard_memory_bytes", (("shard", "c"),))] == memory_of(tiny_models["c"])
        assert samples[("tierfleet_ops_shard_runtime_busy_slots", (("shard", "c"),))] == 0.0

        out = subprocess.run([sys.executable, "-m", "tierfleet_ops", "status", "--socket", sock],
                             capture_output=True, text=True, timeout=30).stdout
        assert "shards:   router mode" in out
        assert any(ln.split()[:2] == ["c", "loaded"] for ln in out.splitlines()), out
        assert any(ln.split()[0] == "a" and "loads 1 " in ln for ln in out.splitlines() if ln.strip()), out

        daemon.send_signal(signal.SIGUSR1)  # every thread's stack to stderr; the daemon goes on

        # a's TTL (3 s) passes: unloaded, its process gone; c (no TTL) stays
        assert wait_until(lambda: r.states()["a"] == "unloaded", timeout=30)
        assert not children["a"].is_running() and r.states()["c"] == "loaded"
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            out = daemon.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGUSR1)  # every thread's stack, for the report
            time.sleep(2)
            daemon.kill()
            out = daemon.communicate()[0]
    assert daemon.returncode == 0, out[-12000:]
    assert "Thread 0x" in out and "gate.py\", line" in out  # the SIGUSR1 dump: the gate's thread among them
    # the gate is gone with the daemon; the runtime keeps what it had loaded
    assert complete(f"http://127.0.0.1:{gate_port}", "c")[0] is None and r.states()["c"] == "loaded"
