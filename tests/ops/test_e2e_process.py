"""The daemon as a real process: sd_notify, control CLI, SIGHUP reload, real thread pinning,
SIGKILL + restart keeps originals, SIGTERM restores and unpins."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tierfleet_ops.control import MAX_CONNECTIONS, REQUEST_TIMEOUT_S, WORKERS, request
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

    def start(*extra, wrapper=None, nofile=None):
        """Start the daemon (``wrapper``: a script that injects a fault, then runs the CLI;
        ``nofile``: its RLIMIT_NOFILE, as systemd's ``LimitNOFILE=`` sets it)."""
        e = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
        cmd = [sys.executable, "-c", wrapper, *argv[3:], *extra] if wrapper else [*argv, *extra]
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        p = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=limit)
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
    assert "absent:   jetson: not a Jetson: " in out  # as dry-run says it

    out = cli("dry-run", "--socket", sock, "--profile", "performance").stdout
    assert "~ cpufreq.policy0.scaling_governor: powersave -> performance" in out
    assert "- cpufreq.policy0.energy_performance_preference: skipped" not in out
    assert "  x jetson: absent: not a Jetson: " in out
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


# --- the control socket under load, and fatal paths ---------------------------------------------

def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return soft, hard


def unit_nofile():
    """``LimitNOFILE=`` of the daemon's systemd unit template."""
    unit = (Path(__file__).resolve().parents[2] / "templates/tierfleet-ops.service.j2").read_text()
    return int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1))


@needs_two_cpus
def test_a_thousand_idle_connections_cost_no_threads_and_status_still_answers(env):
    root, sock = env["root"], env["sock"]
    assert unit_nofile() < 1000  # the flood alone would exhaust the unit's limit if each were held
    daemon = env["start"](nofile=unit_nofile())
    assert env["notify"].recv(4096).startswith(b"READY=1")
    wait_for(lambda: request(sock, {"cmd": "status"})["pinning"]["threads"] == 4, "pinning")
    proc = psutil.Process(daemon.pid)
    threads0, fds0 = proc.num_threads(), proc.num_fds()
    limits = _raise_nofile(1200)
    held, peak_threads, peak_fds, answers = [], 0, 0, []
    try:
        for i in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            for _ in range(200):
                try:
                    s.connect(sock)  # and then say nothing
                    break
                except BlockingIOError:  # the listen queue is full for a moment, as a flooder sees it
                    time.sleep(0.01)
            else:
                raise AssertionError("the daemon stopped accepting")
            held.append(s)
            if i % 100 == 99:
                answers.append(request(sock, {"cmd": "status"})["profile"])
                peak_threads = max(peak_threads, proc.num_threads())
                peak_fds = max(peak_fds, proc.num_fds())
        assert answers == ["eco"] * 10
        # one loop thread and a fixed pool serve every client; held connections are bounded
        assert peak_threads <= threads0 + WORKERS + 1, (threads0, peak_threads)
        assert peak_fds <= fds0 + MAX_CONNECTIONS + 4, (fds0, peak_fds)
        # idle clients are cut: after the deadline they read EOF
        held[-1].settimeout(REQUEST_TIMEOUT_S + 10)
        assert held[-1].recv(100) == b""
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert live(root, "energy_performance_preference") == "balance_performance"


FAULT = textwrap.dedent("""
    import os, sys
    import tierfleet_ops.control as control
    import tierfleet_ops.daemon as daemon

    class Crash(BaseException):
        "a fault no handler is written for"

    real_request, real_tick = control.handle_request, daemon.Daemon.tick

    def handle_request(d, req):
        if isinstance(req, dict) and req.get("cmd") == "crash-control":
            raise Crash("injected fault in the control server")
        return real_request(d, req)

    def tick(self, now=None):
        if os.path.exists(os.environ["CRASH_LOOP_FILE"]):
            raise Crash("injected fault in the control loop")
        return real_tick(self, now)

    control.handle_request, daemon.Daemon.tick = handle_request, tick
    from tierfleet_ops.cli import main
    main(sys.argv[1:])
""")


@needs_two_cpus
@pytest.mark.parametrize("where", ["control", "loop"])
def test_a_fatal_error_still_restores_everything(env, where, monkeypatch):
    root, sock, tmp = env["root"], env["sock"], env["tmp"]
    trigger = tmp / "crash-now"
    monkeypatch.setenv("CRASH_LOOP_FILE", str(trigger))
    before = masks(env["rt"].pid)
    daemon = env["start"](wrapper=FAULT)
    assert env["notify"].recv(4096).startswith(b"READY=1")
    wait_for(lambda: request(sock, {"cmd": "status"})["pinning"]["threads"] == 4, "pinning")
    assert live(root, "energy_performance_preference") == "power"
    assert masks(env["rt"].pid) == {frozenset({1})}
    if where == "control":
        with pytest.raises(ControlError):
            request(sock, {"cmd": "crash-control"}, timeout_s=5)
    else:
        trigger.write_text("")
    assert daemon.wait(timeout=30) == 1
    err = daemon.stderr.read()
    assert f"injected fault in the {'control server' if where == 'control' else 'control loop'}" in err
    assert "originals restored" in err
    assert live(root, "energy_performance_preference") == "balance_performance"
    assert live(root, "scaling_max_freq") == "4800000"
    assert json.loads((tmp / "state.json").read_text())["originals"] == []
    assert masks(env["rt"].pid) == before
    assert not os.path.exists(sock)


@pytest.mark.parametrize("bad, message", [
    (lambda t: t.replace("tick_s: 0.2", "tick_s: null"), "tick_s: null is not a value"),
    (lambda t: t.replace("version: 1", "version: 1\non_stop:"), "on_stop: null is not a value"),
    (lambda t: "x: " + "[" * 20000 + "]" * 20000, "<document>: nested too deeply"),
    (lambda t: t.replace("eco:", "\u00e9co:").encode("latin-1"), "<file>: not UTF-8 text"),
    (lambda t: t.replace("epp: power", "epp: [power]"), "profiles.eco.cpufreq.epp: ['power'] is not one of"),
])
def test_a_bad_reload_is_shown_kept_out_and_retried(env, bad, message):
    root, sock, pol = env["root"], env["sock"], env["pol"]
    daemon = env["start"]()
    assert env["notify"].recv(4096).startswith(b"READY=1")
    good = pol.read_text()
    h0 = request(sock, {"cmd": "status"})["policy"]["hash"]
    broken = bad(good)
    pol.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    daemon.send_signal(signal.SIGHUP)
    err = wait_for(lambda: request(sock, {"cmd": "status"})["policy"]["error"], "reload error")
    assert message in err and err.startswith(str(pol))
    time.sleep(0.5)  # a few ticks on the kept policy
    assert daemon.poll() is None and request(sock, {"cmd": "status"})["policy"]["hash"] == h0
    # the same file, mended, is read again on the next reload
    pol.write_text(good.replace("epp: power", "epp: balance_power"))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: live(root, "energy_performance_preference") == "balance_power", "mended policy")
    assert request(sock, {"cmd": "status"})["policy"]["error"] is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert live(root, "energy_performance_preference") == "balance_performance"


# --- energy records ---------------------------------------------------------------------------

def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _remount(mnt, opts):
    """``mount -o remount,OPTS``; a file the daemon holds open for writing makes ``ro`` busy for a moment."""
    for _ in range(100):
        if subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"remount,{opts} of {mnt} kept failing")


@needs_two_cpus
def test_records_survive_a_full_and_a_read_only_disk(env):
    """The daemon as deployed writes its records next to its state file; here that directory is a real 64 KiB
    tmpfs that is filled up and then made read-only under the running daemon."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    tmp, sock, pol = env["tmp"], env["sock"], env["pol"]
    state = tmp / "statefs"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(state)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        pol.write_text(pol.read_text() + "records:\n  interval_s: 1\n")
        daemon = env["start"]("--state", str(state / "state.json"))
        assert env["notify"].recv(4096).startswith(b"READY=1")
        path = state / "energy.jsonl"
        wait_for(lambda: len([r for r in _records(path) if "profile" in r]) >= 2, "two samples")
        cli("profile", "hold", "performance", "--socket", sock)
        wait_for(lambda: any(r.get("to") == "performance" for r in _records(path)), "the switch record")
        recs = _records(path)
        assert recs[0] == {"t": recs[0]["t"], "event": "switch", "from": None, "to": "eco", "reason": "start"}
        assert {"t": recs[0]["t"], "event": "switch", "from": "eco", "to": "performance", "reason": "held"} \
            in [r | {"t": recs[0]["t"]} for r in recs]
        sample = next(r for r in recs if "profile" in r)
        assert set(sample) == {"t", "profile", "power_w", "energy_j", "load_pct"}
        assert sample["power_w"]["gpu"] > 0 and sample["energy_j"]["gpu"] > 0  # the replayed H200's readings

        # the disk fills up: records are dropped, the daemon goes on ticking and answering
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"x" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        for i in range(200):  # switches (two records each) use up what is left of the file's last page
            if request(sock, {"cmd": "status"})["records"]["error"]:
                break
            request(sock, {"cmd": "hold", "profile": ("eco", "performance")[i % 2]})
        err = request(sock, {"cmd": "status"})["records"]["error"]
        request(sock, {"cmd": "hold", "profile": "performance"})
        assert "No space left on device" in err or "short write" in err
        ticks = request(sock, {"cmd": "status"})["ticks"]
        # and then it is read-only
        (state / "filler").unlink()
        _remount(state, "ro")
        wait_for(lambda: "Read-only file system" in (request(sock, {"cmd": "status"})["records"]["error"] or ""),
                 "a refused record")
        out = cli("status", "--socket", sock).stdout
        assert f"warning:  energy records are dropped: {path}: Read-only file system" in out, out
        st = request(sock, {"cmd": "status"})
        assert daemon.poll() is None and st["ticks"] > ticks and st["records"]["dropped"] >= 2
        _remount(state, "rw")
        wait_for(lambda: request(sock, {"cmd": "status"})["records"]["error"] is None, "records again")
        written = len(_records(path))
        wait_for(lambda: len(_records(path)) > written, "a new record")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        log = daemon.stderr.read()
        assert log.count("energy records: ") - log.count("energy records: writing again") == 1, log
        assert "records are dropped until writing works again" in log and "energy records: writing again" in log
        # every line the daemon left is whole, the last one a sample taken on the way out
        recs = _records(path)
        assert recs[-1]["profile"] == "performance"
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)
