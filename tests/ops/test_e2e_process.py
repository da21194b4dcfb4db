"""The daemon as a real process: sd_notify, control CLI, SIGHUP reload, real thread pinning,
SIGKILL + restart keeps originals, SIGTERM restores and unpins."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tierfleet_ops.control import request
from tierfleet_ops.errors import ControlError

from . import machines

POLICY = textwrap.dedent("""\
    version: 1
    tick_s: 0.2
    reapply_s: 3600          # no drift correction during the test: it changes files by hand
    default_profile: eco
    profiles:
      eco:
        cpufreq: {{governor: powersave, epp: power, max_freq_pct: 50}}
        nvml: {{power_limit_w: 250}}
      performance:
        cpufreq: {{governor: performance}}
        nvml: {{power_limit_w: 700}}
    runtime:
      pidfile: {pidfile}
    pinning:
      enabled: true
      reserve_cores: 2
      interval_s: 1
    """)

RUNTIME = textwrap.dedent("""
    import sys, threading, time
    ev = threading.Event()
    ts = [threading.Thread(target=ev.wait) for _ in range(3)]
    [t.start() for t in ts]
    print("ready", flush=True)
    sys.stdin.read()
    ev.set()
""")

needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


def wait_for(pred, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
        except ControlError:  # the daemon is not answering yet
            v = None
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cli(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "tierfleet_ops", *args], capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise AssertionError(p.stderr)
    return p


@pytest.fixture
def env(tmp_path, data_dir):
    root = machines.intel_pstate(tmp_path / "sys", 2)
    rt = subprocess.Popen([sys.executable, "-c", RUNTIME], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert rt.stdout.readline().strip() == "ready"
    pidfile = tmp_path / "runtime.pid"
    pidfile.write_text(f"{rt.pid}\n")
    pol = tmp_path / "policy.yaml"
    pol.write_text(POLICY.format(pidfile=pidfile))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    sock = str(tmp_path / "ops.sock")
    argv = [sys.executable, "-m", "tierfleet_ops", "run", "--policy", str(pol), "--state",
            str(tmp_path / "state.json"), "--socket", sock, "--metrics-port", "0", "--sysfs-root", str(root),
            "--fake-nvml", str(data_dir / "h200_nvml_probe.json"), "--log-level", "debug"]
    procs = []

    def start():
        e = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
        p = subprocess.Popen(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    yield {"root": root, "rt": rt, "pol": pol, "sock": sock, "start": start, "notify": notify, "tmp": tmp_path}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    rt.stdin.close()
    rt.wait(timeout=10)
    notify.close()


def live(root, leaf, policy=0):
    return (root / f"devices/system/cpu/cpufreq/policy{policy}" / leaf).read_text().strip()


def masks(pid):
    return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}


@needs_two_cpus
def test_daemon_process_lifecycle(env):
    root, sock = env["root"], env["sock"]
    daemon = env["start"]()
    assert env["notify"].recv(4096).startswith(b"READY=1")
    assert live(root, "energy_performance_preference") == "power"
    assert live(root, "scaling_max_freq") == "2800000"

    # 2 CPUs: 1 reserved for the OS, the runtime's 4 threads pinned to the other
    st = wait_for(lambda: (s := request(sock, {"cmd": "status"}))["pinning"]["threads"] == 4 and s, "pinning")
    assert st["placement"]["inference"] == "1"
    assert masks(env["rt"].pid) == {frozenset({1})}

    out = cli("status", "--socket", sock).stdout
    assert "profile:  eco" in out and "pinning:  1 process(es), 4 thread(s)" in out

    out = cli("dry-run", "--socket", sock, "--profile", "performance").stdout
    assert "~ cpufreq.policy0.scaling_governor: powersave -> performance" in out
    assert "- cpufreq.policy0.energy_performance_preference: skipped" not in out
    assert live(root, "scaling_governor") == "powersave"

    assert "holding performance" in cli("profile", "hold", "performance", "--socket", sock).stdout
    assert live(root, "scaling_governor") == "performance"
    cli("profile", "release", "--socket", sock)
    bad = cli("profile", "hold", "warp", "--socket", sock, check=False)
    assert bad.returncode == 4 and "'warp' is not a profile" in bad.stderr

    # SIGHUP with a bad file keeps the running policy; a good one is applied
    h0 = request(sock, {"cmd": "status"})["policy"]["hash"]
    text = env["pol"].read_text()
    env["pol"].write_text(text.replace("epp: power", "epp: sleepy"))
    daemon.send_signal(signal.SIGHUP)
    err = wait_for(lambda: request(sock, {"cmd": "status"})["policy"]["error"], "reload error")
    assert "profiles.eco.cpufreq.epp: 'sleepy' is not one of" in err
    assert request(sock, {"cmd": "status"})["policy"]["hash"] == h0
    env["pol"].write_text(text.replace("epp: power", "epp: balance_power"))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: live(root, "energy_performance_preference") == "balance_power", "reloaded policy")
    assert request(sock, {"cmd": "status"})["policy"]["hash"] != h0

    # SIGKILL: nothing restored, originals stay on disk; a new daemon restores them on SIGTERM
    daemon.kill()
    daemon.wait()
    assert live(root, "energy_performance_preference") == "balance_power"
    saved = json.loads((env["tmp"] / "state.json").read_text())["originals"]
    assert ["cpufreq.policy0.energy_performance_preference", "balance_performance"] in saved
    assert os.path.exists(sock)  # a killed daemon leaves its socket file; the next one replaces it
    daemon2 = env["start"]()
    wait_for(lambda: request(sock, {"cmd": "status"})["pinning"]["threads"] == 4, "pinning again")
    daemon2.send_signal(signal.SIGTERM)
    assert daemon2.wait(timeout=30) == 0
    assert live(root, "energy_performance_preference") == "balance_performance"
    assert live(root, "scaling_governor") == "powersave"
    assert live(root, "scaling_max_freq") == "4800000"
    assert json.loads((env["tmp"] / "state.json").read_text())["originals"] == []
    assert not os.path.exists(sock)
    # threads get the masks they had before the first daemon pinned them (persisted pins)
    assert masks(env["rt"].pid) == {frozenset(os.sched_getaffinity(0))}
    log = daemon2.stderr.read()
    assert "original value(s) recorded by an earlier run" in log


def test_second_daemon_refuses_and_changes_nothing(env):
    root, sock = env["root"], env["sock"]
    first = env["start"]()
    assert env["notify"].recv(4096).startswith(b"READY=1")
    (env["root"] / "devices/system/cpu/cpufreq/policy1/scaling_max_freq").write_text("4000000\n")
    second = env["start"]()
    assert second.wait(timeout=60) == 4
    err = second.stderr.read()
    assert "another daemon is answering on this socket" in err
    # the second one neither applied nor restored anything
    assert live(root, "scaling_max_freq", policy=1) == "4000000", err
    assert request(sock, {"cmd": "status"})["profile"] == "eco"
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert live(root, "scaling_max_freq", policy=1) == "4800000"
