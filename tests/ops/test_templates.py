"""The systemd unit and default policy templates render to files the tools accept."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tierfleet_ops.policy import parse_policy

jinja2 = pytest.importorskip("jinja2")

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def render(name: str, **vars):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template(name).render(**vars)


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return [a.replace("%%", "%") for a in shlex.split(line[len("ExecStart="):])]


def test_unit_declares_conflicts_notify_and_watchdog():
    unit = render("tierfleet-ops.service.j2")
    assert "Conflicts=tuned.service power-profiles-daemon.service auto-cpufreq.service" in unit
    assert "Type=notify" in unit and "WatchdogSec=30" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert exec_start(unit) == ["/opt/tierfleet-ops/venv/bin/tierfleet-ops", "run", "--policy",
                                "/etc/tierfleet-ops/policy.yaml", "--state", "/var/lib/tierfleet-ops/state.json",
                                "--socket", "/run/tierfleet-ops/ops.sock", "--socket-group", "tierfleet",
                                "--metrics-port", "9464"]


def test_unit_quotes_hostile_values():
    hostile = '/etc/tier fleet/p%h";rm -rf /;".yaml'
    unit = render("tierfleet-ops.service.j2", ops_policy_path=hostile, ops_socket_group="ops; reboot")
    argv = exec_start(unit)
    assert argv[argv.index("--policy") + 1] == hostile
    assert argv[argv.index("--socket-group") + 1] == "ops; reboot"
    assert len(argv) == 12


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    unit = render("tierfleet-ops.service.j2", ops_venv=sys.prefix, ops_policy_path=str(tmp_path / "p%.yaml"))
    path = tmp_path / "tierfleet-ops.service"
    path.write_text(unit)
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True)
    errors = [ln for ln in p.stderr.splitlines()
              if "tierfleet-ops.service" in ln and "Unit tuned.service" not in ln]
    assert p.returncode == 0 or not errors, p.stderr


@pytest.mark.parametrize("vars", [
    {},
    {"ops_host_kind": "jetson", "ops_jetson_modes": {"eco": "15W", "balanced": "30W", "performance": "MAXN"}},
    {"ops_host_kind": "gpu", "ops_gpu_power_w": {"eco": 350, "balanced": 500}, "ops_runtime_port": 8181,
     "ops_on_stop": "keep", "ops_reserve_cores": 4},
])
def test_default_policy_renders_valid(vars):
    p = parse_policy(render("ops-policy.yaml.j2", **vars), "ops-policy.yaml")
    assert p.switching["order"] == ["eco", "balanced", "performance"]
    if vars.get("ops_host_kind") == "jetson":
        assert p.profiles["performance"]["jetson"]["nvpmodel"] == "MAXN"
        assert p.profiles["eco"]["nvml"]["power_limit_w"] is None
    if vars.get("ops_host_kind") == "gpu":
        assert p.profiles["eco"]["nvml"]["power_limit_w"] == 350
        assert p.runtime["metrics_url"] == "http://127.0.0.1:8181/metrics"
        assert p.top["on_stop"] == "keep" and p.pinning["reserve_cores"] == 4


def test_default_policy_rejects_an_injected_mode_name():
    text = render("ops-policy.yaml.j2", ops_host_kind="jetson",
                  ops_jetson_modes={"eco": '15W"\nprofiles: {}\n#'})
    with pytest.raises(Exception, match=r"profiles.eco.jetson.nvpmodel: .* is not a name"):
        parse_policy(text, "ops-policy.yaml")
