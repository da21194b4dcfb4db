"""The hardened units at work on lab hosts (real systemd): a CPU server, a GPU node and a Jetson.

After ``pyinfra inventory/lab.py deploys/tier_basic.py`` on each: llama-server serves ``/health`` and a
completion inside its sandbox; the ops daemon runs with only the capabilities its kind of host needs,
applies a profile through its own tools (sysfs, jetson_clocks, nvpmodel) and restores on stop;
``systemctl set-property`` still goes through from the daemon's sandbox; the control socket answers a member
of the control group and nobody else, and cannot be seen at all from inside the runtime's sandbox.

Not provable here: the lab's nspawn hosts have no cgroup BPF (``IPAddressDeny=`` and the device list are not
enforced: a connection to 127.0.0.1 under ``IPAddressDeny=any`` succeeds) and no NVML or device nodes.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from conftest import REPO, pyinfra

pytestmark = pytest.mark.lab

#: host -> its kind
HOSTS = {"cpu-server": "cpu", "gpu-node-t4": "gpu", "jetson-orin-nano": "jetson"}
CLI = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
POLICY = "/etc/tierfleet-ops/policy.yaml"
GOVERNOR = "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
#: CapBnd in /proc/PID/status: CAP_SYS_NICE (23), plus CAP_SYS_ADMIN (21) on GPU nodes for NVML
CAPS = {"cpu": 1 << 23, "jetson": 1 << 23, "gpu": (1 << 23) | (1 << 21)}
CONNECT = "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/tierfleet-ops/ops.sock'); print('ok')"


def sh(lab, host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(lab.host(host).exec_argv(["sh", "-c", command]), capture_output=True, text=True,
                          timeout=timeout)


def out(lab, host: str, command: str) -> str:
    run = sh(lab, host, command)
    assert run.returncode == 0, (host, command, run.stdout, run.stderr)
    return run.stdout.strip()


def eventually(lab, host: str, command: str, ok, timeout: float = 20.0) -> str:
    """``command``'s output once ``ok(output)`` holds (the daemon acts on its next tick), else the last one."""
    deadline = time.monotonic() + timeout
    while True:
        got = sh(lab, host, command).stdout.strip()
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def status(lab, host: str) -> dict:
    return json.loads(out(lab, host, f"{CLI} status --json"))


def proc_status(lab, host: str, unit: str) -> dict[str, str]:
    pid = out(lab, host, f"systemctl show -p MainPID --value {unit}")
    assert pid != "0", (host, unit)
    lines = out(lab, host, f"cat /proc/{pid}/status").splitlines()
    return {k: v.strip() for k, v in (ln.split(":", 1) for ln in lines)} | {"pid": pid}


@pytest.fixture(scope="module")
def deployed(lab):
    """The basic tier on the three hosts (the llama-server build must be cached)."""
    from tierfleet.artifacts.llama_build import cached_runtime

    cache = REPO / ".cache" / "runtime"
    if cached_runtime(cache) is None:
        pytest.skip(f"no llama-server build under {cache}: run `tierfleet lab publish` once (builds it)")
    lab.publish(cache)
    limits = [arg for host in HOSTS for arg in ("--limit", host)]
    run = pyinfra(lab, "deploys/tier_basic.py", *limits)
    assert run.returncode == 0, run.stdout[-4000:]
    return run.stdout


@pytest.mark.parametrize("host", HOSTS)
def test_runtime_serves_inside_its_sandbox(lab, deployed, host):
    health = out(lab, host, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health")
    assert health == "200"
    request = shlex.quote(json.dumps({"prompt": "The lab", "n_predict": 4}))
    body = json.loads(out(lab, host, f"curl -sf -H 'Content-Type: application/json' -d {request} "
                                     "http://127.0.0.1:8080/completion"))
    assert isinstance(body["content"], str) and body["tokens_predicted"] > 0
    st = proc_status(lab, host, "llama-server")
    assert int(st["CapBnd"], 16) == 0 and st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    # its mount namespace: the system read-only, even for root
    touch = sh(lab, host, f"nsenter -t {st['pid']} -m touch /opt/tierfleet/probe")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_daemon_runs_with_only_what_its_host_needs(lab, deployed, host):
    st = proc_status(lab, host, "tierfleet-ops")
    assert int(st["CapBnd"], 16) == CAPS[HOSTS[host]], st["CapBnd"]
    assert int(st["CapEff"], 16) == CAPS[HOSTS[host]]
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2" and st["Uid"].split()[0] == "0"
    gid = out(lab, host, "getent group tierfleet-ops | cut -d: -f3")
    assert st["Gid"].split()[0] == gid
    # pinning another user's threads needs CAP_SYS_NICE, which it kept
    pin = status(lab, host)["pinning"]
    assert pin["pids"] and pin["threads"] > 0
    touch = sh(lab, host, f"nsenter -t {st['pid']} -m touch /etc/tierfleet-ops/probe")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr


@pytest.mark.parametrize("host", ["cpu-server", "gpu-node-t4"])
def test_daemon_applies_a_profile_and_restores_on_stop(lab, deployed, host):
    try:
        out(lab, host, f"{CLI} profile hold performance")
        assert eventually(lab, host, f"cat {GOVERNOR}", lambda g: g == "performance") == "performance"
        recorded = status(lab, host)["originals"]["cpufreq.policy0.scaling_governor"]
        if recorded == "performance":  # make the restore visible
            out(lab, host, f"{CLI} profile hold eco")
            assert eventually(lab, host, f"cat {GOVERNOR}", lambda g: g != "performance") != "performance"
        out(lab, host, "systemctl stop tierfleet-ops")
        assert out(lab, host, f"cat {GOVERNOR}") == recorded
    finally:
        out(lab, host, "systemctl start tierfleet-ops")
        sh(lab, host, f"{CLI} profile release")


def test_jetson_daemon_runs_nvpmodel_and_jetson_clocks_and_restores_on_stop(lab, deployed):
    """On the Jetson the daemon's own tools run inside its sandbox: nvpmodel (eco is 7W on an Orin Nano),
    jetson_clocks (--store into the state directory, then clocks pinned) and GPU devfreq, all restored."""
    host = "jetson-orin-nano"
    devfreq = "/sys/class/devfreq/17000000.ga10b"
    clocks = (f"for f in {devfreq}/min_freq {devfreq}/max_freq {GOVERNOR} /sys/devices/system/cpu/online; "
              "do printf '%s ' \"$(cat $f)\"; done")
    mode = "nvpmodel -q | head -1"
    # the host's own values: the daemon stopped has put back everything it changed. The lab dresses the GPU
    # at its hardware maximum, above the 15W mode's cap; a board in 15W mode has nvpmodel's own values
    out(lab, host, "systemctl stop tierfleet-ops && nvpmodel -m 0 >/dev/null")
    before_clocks, before_mode = out(lab, host, clocks), out(lab, host, mode)
    assert before_mode == "NV Power Mode: 15W"
    assert 'nvpmodel: "7W"' in out(lab, host, f"cat {POLICY}")  # the deploy's eco mode for this board
    out(lab, host, "systemctl start tierfleet-ops")
    try:
        out(lab, host, f"{CLI} profile hold eco")
        assert eventually(lab, host, mode, lambda m: m == "NV Power Mode: 7W") == "NV Power Mode: 7W"
        assert out(lab, host, "cat /sys/devices/system/cpu/online") == "0-3"  # 7W takes CPUs 4-5 offline
        out(lab, host, f"{CLI} profile hold performance")
        pinned = eventually(lab, host, clocks, lambda c: len(set(c.split()[:2])) == 1)
        assert len(set(pinned.split()[:2])) == 1, pinned  # jetson_clocks: GPU min = max
        assert out(lab, host, "test -s /var/lib/tierfleet-ops/l4t_dfs.conf && echo stored") == "stored"
        out(lab, host, "systemctl stop tierfleet-ops")
        assert out(lab, host, mode) == before_mode
        assert out(lab, host, clocks) == before_clocks
    finally:
        out(lab, host, "systemctl start tierfleet-ops")
        sh(lab, host, f"{CLI} profile release")


@pytest.mark.parametrize("host", HOSTS)
def test_systemctl_set_property_goes_through_the_daemon_sandbox(lab, deployed, host):
    """move_os_slices runs ``systemctl set-property``; the lab has no cpuset controller for the daemon to
    use it, so a copy of the deployed unit, sandbox unchanged, runs the command itself."""
    unit = out(lab, host, "cat /etc/systemd/system/tierfleet-ops.service")
    keep = [ln for ln in unit.splitlines()
            if not ln.startswith(("Type=", "ExecStart=", "ExecReload=", "WatchdogSec=", "NotifyAccess=",
                                  "Restart", "RuntimeDirectory", "StateDirectory", "ConfigurationDirectory"))]
    probe = "\n".join(keep).replace("[Service]", "[Service]\nType=oneshot\nExecStart=/usr/bin/systemctl "
                                    "set-property --runtime system.slice AllowedCPUs=0")
    out(lab, host, f"cat > /run/systemd/system/tf-probe.service <<'EOF'\n{probe}\nEOF\nsystemctl daemon-reload")
    try:
        out(lab, host, "systemctl start tf-probe.service")
        assert out(lab, host, "systemctl show -p AllowedCPUs --value system.slice") == "0"
    finally:
        sh(lab, host, "systemctl set-property --runtime system.slice AllowedCPUs=; "
                      "rm -f /run/systemd/system/tf-probe.service; systemctl daemon-reload")


@pytest.mark.parametrize("host", HOSTS)
def test_control_socket_is_for_the_control_group_only(lab, deployed, host):
    assert out(lab, host, "stat -c '%U:%G %a' /run/tierfleet-ops") == "root:tierfleet-ops 750"
    assert out(lab, host, "stat -c '%U:%G %a' /run/tierfleet-ops/ops.sock") == "root:tierfleet-ops 660"
    assert "tierfleet-ops" not in out(lab, host, "id -nG tierfleet").split()
    as_runtime = sh(lab, host, "setpriv --reuid=tierfleet --regid=tierfleet --init-groups "
                               f"python3 -c {shlex.quote(CONNECT)}")
    assert as_runtime.returncode != 0 and "PermissionError" in as_runtime.stderr, as_runtime
    # an operator joins the control group and may use it
    out(lab, host, "id tf-operator >/dev/null 2>&1 || useradd --system --no-create-home -G tierfleet-ops tf-operator")
    member = sh(lab, host, f"setpriv --reuid=tf-operator --regid=tf-operator --init-groups {CLI} status --json")
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout)["profile"]


@pytest.mark.parametrize("host", HOSTS)
def test_runtime_sandbox_hides_the_control_directory_across_daemon_restarts(lab, deployed, host):
    runtime = proc_status(lab, host, "llama-server")["pid"]
    inside = f"nsenter -t {runtime} -m"
    assert out(lab, host, "test -S /run/tierfleet-ops/ops.sock && echo there") == "there"
    for _ in range(2):  # as deployed, then after the daemon's restart (a new socket, the same directory)
        seen = sh(lab, host, f"{inside} test -e /run/tierfleet-ops/ops.sock")
        assert seen.returncode == 1, f"{host}: the runtime's namespace sees the control socket"
        uid, gid = out(lab, host, "id -u tierfleet"), out(lab, host, "id -g tierfleet")
        connect = sh(lab, host, f"{inside} -S {uid} -G {gid} python3 -c {shlex.quote(CONNECT)}")
        assert connect.returncode != 0 and ("PermissionError" in connect.stderr
                                            or "FileNotFoundError" in connect.stderr), connect
        out(lab, host, "systemctl restart tierfleet-ops")
        assert proc_status(lab, host, "llama-server")["pid"] == runtime
