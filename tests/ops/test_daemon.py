"""The daemon in-process: start, switching on a real HTTP queue signal, control socket, metrics,
driver reload, policy reload, restore on stop."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.control import request
from tierfleet_ops.daemon import Daemon, DaemonConfig
from tierfleet_ops.errors import ConfigError, ControlError
from tierfleet_ops.metrics import start_metrics
from tierfleet_ops.testing.fakenvml import FakeNvml

from . import machines
from .llama_standin import LlamaStandin
from .machines import KernelSysfs

POLICY = """\
version: 1
tick_s: 1
on_stop: restore
default_profile: eco
reapply_s: 10
profiles:
  eco:
    cpufreq: {{governor: "powersave", max_freq_pct: 0, boost: false}}
    nvml: {{power_limit_w: 300, locked_sm_clocks_mhz: [345, 1200]}}
  balanced:
    cpufreq: {{governor: "schedutil", max_freq_pct: 60}}
    nvml: {{power_limit_w: 500, locked_sm_clocks_mhz: [345, 1500]}}
  performance:
    cpufreq: {{governor: "performance", max_freq_pct: 100, boost: true}}
    nvml: {{power_limit_w: 700, locked_sm_clocks_mhz: false}}
switching:
  order: [eco, balanced, performance]
  signals: [queue]
  up: {{balanced: 40, performance: 75}}
  down: {{balanced: 20, performance: 55}}
  dwell_s: 2
  min_hold_s: 0
  idle_profile: eco
runtime:
  metrics_url: {metrics}
  slots_url: {slots}
  queue_full: 4
pinning:
  enabled: false
"""


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def host(tmp_path, data_dir):
    with LlamaStandin() as llama:
        root = machines.acpi_cpufreq(tmp_path / "sys", 2)
        pol = tmp_path / "policy.yaml"
        pol.write_text(POLICY.format(metrics=llama.url("/metrics"), slots=llama.url("/slots")))
        fake = FakeNvml(data_dir / "h200_nvml_probe.json", clock=Clock())
        ctx = HostContext(sysfs=KernelSysfs(root), nvml_loader=lambda: fake, state_dir=str(tmp_path / "state"))
        cfg = DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "state/state.json"),
                           socket_path=str(tmp_path / "run/ops.sock"), metrics_port=None, ctx=ctx)
        d = Daemon(cfg)
        d.start()
        try:
            yield d, llama, fake, root, pol
        finally:
            d.stop()


def pol0(root, leaf):
    return (root / "devices/system/cpu/cpufreq/policy0" / leaf).read_text().strip()


def test_start_applies_default_profile_and_stop_restores(host):
    d, llama, fake, root, _ = host
    assert [b.name for b in d.backends] == ["cpufreq", "rapl", "nvml"]
    assert pol0(root, "scaling_governor") == "powersave"
    assert pol0(root, "scaling_max_freq") == "1500000"
    assert fake.power_limit_mW == 300000 and fake.locked == (345, 1200)
    assert d.state.originals["nvml.gpu0.power_limit_mw"] == "700000"
    out = d.stop()
    assert {o.status for o in out} == {"changed"}
    assert pol0(root, "scaling_governor") == "schedutil"
    assert pol0(root, "scaling_max_freq") == "3100000"
    assert (root / "devices/system/cpu/cpufreq/boost").read_text().strip() == "1"
    assert fake.power_limit_mW == 700000 and fake.locked is None
    assert d.state.originals == {}


def test_queue_load_switches_with_dwell_and_comes_back(host):
    d, llama, fake, root, _ = host
    llama.processing, llama.deferred = 4, 1          # 125 % of queue_full
    d.tick(100.0)
    assert d.selector.current == "eco"               # dwell not yet passed
    d.tick(101.0)
    d.tick(102.0)
    assert d.selector.current == "performance"
    assert pol0(root, "scaling_governor") == "performance"
    assert fake.power_limit_mW == 700000 and fake.locked is None
    llama.processing, llama.deferred = 2, 0          # 50 %: inside performance's band? no: < 55
    for t in (103.0, 104.0, 105.0):
        d.tick(t)
    assert d.selector.current == "balanced"
    assert fake.locked == (345, 1500)
    st = d.status()
    assert st["switches"] == 2 and st["signals"]["queue"] == 50.0 and st["signals"]["model_loaded"] is True


def test_driver_reload_is_detected_and_settings_reapplied(host):
    d, llama, fake, root, _ = host
    d.tick(1.0)  # schedules the first re-verify pass at 11.0
    fake.clock.t += 5.0
    fake.driver_reload()
    assert fake.power_limit_mW == 700000 and fake.locked is None
    d.tick(12.0)
    assert fake.power_limit_mW == 300000 and fake.locked == (345, 1200)
    assert d.reapplied_total == 2
    assert d.backends[-1].reloads == 1


def test_control_socket_commands(host):
    d, llama, fake, root, pol = host
    sock = d.cfg.socket_path
    import os
    import stat

    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    st = request(sock, {"cmd": "status"})
    assert st["profile"] == "eco" and st["policy"]["hash"] == d.policy.hash
    assert st["knobs"]["nvml.gpu0.power_limit_mw"] is True
    assert request(sock, {"cmd": "hold", "profile": "performance"})["held"] == "performance"
    assert pol0(root, "scaling_governor") == "performance"
    d.tick(50.0)
    d.tick(60.0)
    assert d.selector.current == "performance"       # held despite an idle queue
    dr = request(sock, {"cmd": "dry-run", "profile": "eco"})
    assert {c["knob"]: c["status"] for c in dr["changes"]}["cpufreq.policy0.scaling_governor"] == "would-change"
    assert pol0(root, "scaling_governor") == "performance"  # dry run changed nothing
    request(sock, {"cmd": "release"})
    with pytest.raises(ControlError, match="'turbo' is not a profile; allowed: balanced, eco, performance"):
        request(sock, {"cmd": "hold", "profile": "turbo"})
    with pytest.raises(ControlError, match="unknown request; commands: status, hold"):
        request(sock, {"cmd": "rm -rf /"})
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(sock)
    raw.sendall(b"not json\n")
    assert b"request is not JSON" in raw.recv(1000)
    raw.close()


def test_bad_reload_keeps_the_last_good_policy(host):
    d, llama, fake, root, pol = host
    good = d.policy.hash
    text = pol.read_text()
    pol.write_text(text.replace("max_freq_pct: 0,", "max_freq_pct: 400,"))
    with pytest.raises(ControlError, match=r"kept policy .*profiles.eco.cpufreq.max_freq_pct: 400 is not"):
        request(d.cfg.socket_path, {"cmd": "reload"})
    assert d.policy.hash == good and pol0(root, "scaling_max_freq") == "1500000"
    assert d.status()["policy"]["error"]
    pol.write_text(text.replace("max_freq_pct: 0,", "max_freq_pct: 100,"))
    import os
    os.utime(pol, (1, 1))  # a file change is noticed by mtime on the next tick
    d.tick(1.0)
    assert d.policy.hash != good and d.status()["policy"]["error"] is None
    assert pol0(root, "scaling_max_freq") == "3100000"


def test_metrics_on_loopback(host):
    d, llama, fake, root, pol = host
    d.tick(1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = start_metrics(d, "127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        srv.shutdown()
        srv.server_close()
    assert 'tierfleet_ops_profile{profile="eco"} 1.0' in text
    assert 'tierfleet_ops_governor{governor="powersave",policy="policy0"} 1.0' in text
    assert 'tierfleet_ops_power_watts{source="gpu"} 123.799' in text  # first sample of the H200 trace
    assert 'tierfleet_ops_energy_joules_total{source="gpu"}' in text
    assert 'tierfleet_ops_knob_available{knob="nvml.gpu0.locked_sm_clocks"} 1.0' in text
    assert f'tierfleet_ops_policy_info{{hash="{d.policy.hash}",reload_error="0"}} 1.0' in text
    assert "tierfleet_ops_profile_switches_total 0.0" in text
    with pytest.raises(ValueError, match="not loopback"):
        start_metrics(d, "0.0.0.0", port)


def test_bad_policy_at_start_is_fatal_with_file_and_key(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("profiles: {eco: {cpufreq: {governor: warp}}}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: profiles.eco.cpufreq.governor: 'warp'"):
        Daemon(DaemonConfig(policy_path=str(p), state_path=None, socket_path=None, metrics_port=None))


def test_runtime_gone_means_idle_profile(host):
    d, llama, fake, root, _ = host
    llama.processing = 4
    for t in (0.0, 1.0, 2.0):
        d.tick(t)
    assert d.selector.current == "performance"
    llama.server.shutdown()
    llama.server.server_close()
    for t in (3.0, 4.0, 5.0):
        d.tick(t)
    assert d.status()["signals"]["model_loaded"] is False
    assert d.selector.current == "eco" and d.selector.reason == "no model loaded"


def test_run_dry_run_changes_nothing_and_restores_nothing(tmp_path, data_dir):
    with LlamaStandin() as llama:
        root = machines.acpi_cpufreq(tmp_path / "sys", 2)
        before = sorted((p, p.read_text()) for p in root.rglob("*") if p.is_file())
        pol = tmp_path / "policy.yaml"
        pol.write_text(POLICY.format(metrics=llama.url("/metrics"), slots=llama.url("/slots")))
        fake = FakeNvml(data_dir / "h200_nvml_probe.json", clock=Clock())
        ctx = HostContext(sysfs=KernelSysfs(root), nvml_loader=lambda: fake, state_dir=str(tmp_path / "state"))
        d = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "state/state.json"),
                                socket_path=None, metrics_port=None, ctx=ctx, dry_run=True))
        d.start()
        assert {o.status for o in d.last_outcomes} == {"would-change"}
        llama.processing = 4
        for t in (0.0, 1.0, 2.0, 20.0):
            d.tick(t)
        assert d.selector.current == "performance"
        assert d.stop() == []
    assert sorted((p, p.read_text()) for p in root.rglob("*") if p.is_file()) == before
    assert fake.power_limit_mW == 700000 and fake.locked is None
    assert not (tmp_path / "state/state.json").exists()


def test_a_signal_arriving_inside_the_stop_events_wait_still_stops_the_daemon():
    """Python runs a signal handler in the main thread, possibly while it holds the lock of the event the control
    loop waits on (inside ``Event.wait``). The handler must neither block on that lock nor lose the signal: here
    the handler runs with the lock held, as it did when a SIGTERM hung the daemon. In a fresh interpreter, as the
    daemon runs (this test process may have threading patched by gevent, which pyinfra's CLI installs)."""
    script = textwrap.dedent("""
        import sys, threading
        from tierfleet_ops.daemon import from_signal

        ev = threading.Event()
        handler = from_signal(ev.set)
        returned = threading.Event()

        def main_thread_in_wait():
            with ev._cond:  # what Event.wait holds while it waits
                handler(15, None)
                returned.set()
                assert not ev.is_set()  # not yet: the lock is still held here
            ev.wait(10)

        threading.Thread(target=main_thread_in_wait, daemon=True).start()
        if not returned.wait(5):
            sys.exit("the handler blocked on the lock its own thread holds")
        if not ev.wait(5):
            sys.exit("the event was never set")
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
