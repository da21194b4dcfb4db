"""The systemd unit and default policy templates render to files the tools accept."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd_units import exposed, exposure, need_offline_analyzer
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


def settings(unit: str, key: str) -> list[str]:
    """Every value of ``key=`` in the unit, in order (systemd adds list settings up)."""
    return [ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith(f"{key}=")]


KINDS = ["cpu", "gpu", "jetson", None]


def test_unit_declares_conflicts_notify_and_watchdog():
    unit = render("tierfleet-ops.service.j2")
    assert "Conflicts=tuned.service power-profiles-daemon.service auto-cpufreq.service" in unit
    assert "Type=notify" in unit and "WatchdogSec=30" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert exec_start(unit) == ["/opt/tierfleet-ops/venv/bin/tierfleet-ops", "run", "--policy",
                                "/etc/tierfleet-ops/policy.yaml", "--state", "/var/lib/tierfleet-ops/state.json",
                                "--socket", "/run/tierfleet-ops/ops.sock", "--socket-group", "tierfleet-ops",
                                "--metrics-port", "9464"]


def test_unit_quotes_hostile_values():
    hostile = '/etc/tier fleet/p%h";rm -rf /;".yaml'
    unit = render("tierfleet-ops.service.j2", ops_policy_path=hostile, ops_state_path=hostile + "\nUser=nobody")
    argv = exec_start(unit)
    assert argv[argv.index("--policy") + 1] == hostile
    # a newline reaches systemd as the escape \n inside the quotes, never as a line of its own
    assert len(argv) == 12 and "User=nobody" not in unit.splitlines() and argv[5].endswith("\\nUser=nobody")


@pytest.mark.parametrize("group", ["ops; reboot", "ops\nExecStartPre=/bin/sh -c id", "", "Ops", "0ps", "a" * 33,
                                   "tierfleet-ops\n", None])
def test_unit_refuses_a_group_name_systemd_would_misread(group):
    """The group lands unquoted in Group= and ExecStart: only a plain name renders at all."""
    with pytest.raises(jinja2.UndefinedError, match="ops_socket_group_must_match"):
        render("tierfleet-ops.service.j2", ops_socket_group=group)


def test_control_group_owns_the_runtime_directory_and_socket():
    """Group= gives /run/tierfleet-ops and the socket the control group, not the runtime's group; the
    directory outlives restarts so the runtime's InaccessiblePaths= keeps covering the same one."""
    unit = render("tierfleet-ops.service.j2", ops_socket_group="fleet_ops-2")
    assert settings(unit, "Group") == ["fleet_ops-2"]
    argv = exec_start(unit)
    assert argv[argv.index("--socket-group") + 1] == "fleet_ops-2"
    assert settings(unit, "RuntimeDirectory") == ["tierfleet-ops"]
    assert settings(unit, "RuntimeDirectoryMode") == ["0750"]
    assert settings(unit, "RuntimeDirectoryPreserve") == ["yes"]
    assert settings(render("tierfleet-ops.service.j2"), "Group") == ["tierfleet-ops"]


@pytest.mark.parametrize("kind", KINDS)
def test_unit_keeps_only_what_each_kind_of_host_needs(kind):
    unit = render("tierfleet-ops.service.j2", **({"ops_host_kind": kind} if kind else {}))
    caps = settings(unit, "CapabilityBoundingSet")
    # NVML power limits and locked clocks need CAP_SYS_ADMIN; pinning another user's threads CAP_SYS_NICE
    assert caps == (["CAP_SYS_NICE"] if kind in ("cpu", "jetson") else ["CAP_SYS_NICE CAP_SYS_ADMIN"])
    assert settings(unit, "ProtectSystem") == ["strict"] and settings(unit, "NoNewPrivileges") == ["yes"]
    assert not settings(unit, "ConfigurationDirectory")  # strict would leave it, and so the policy, writable
    writable = " ".join(settings(unit, "ReadWritePaths")).split()
    if kind in ("cpu", "gpu"):
        assert writable == ["/sys/devices/system/cpu"]
        assert settings(unit, "ProtectKernelTunables") == ["yes"]
    else:
        # nvpmodel and jetson_clocks: /sys/devices, their nvpmodel_* caps, EMC in debugfs, nvpmodel's status
        assert "/sys/devices" in writable and "-/sys/kernel/debug" in writable and "-/var/lib/nvpmodel" in writable
        assert settings(unit, "ReadOnlyPaths") == ["/sys /proc/sys"]
        assert not settings(unit, "ProtectKernelTunables")
    devices = settings(unit, "DeviceAllow")
    if kind == "cpu":
        assert settings(unit, "PrivateDevices") == ["yes"] and not devices
    else:
        assert settings(unit, "DevicePolicy") == ["closed"]
        assert devices == ([] if kind == "jetson" else ["char-nvidia* rw"])
    assert settings(unit, "IPAddressDeny") == ["any"] and settings(unit, "IPAddressAllow") == ["localhost"]
    assert settings(unit, "SystemCallErrorNumber") == ["EPERM"]


def test_state_elsewhere_is_writable_and_is_jetson_clocks_home():
    """ProtectSystem=strict leaves only StateDirectory= writable: a state file elsewhere gets its directory
    added, and HOME follows it (jetson_clocks stores its own copy in $HOME/l4t_dfs.conf)."""
    unit = render("tierfleet-ops.service.j2")
    assert settings(unit, "Environment") == ['"HOME=/var/lib/tierfleet-ops"']
    unit = render("tierfleet-ops.service.j2", ops_host_kind="cpu", ops_state_path="/srv/ops 100%/state.json")
    assert settings(unit, "ReadWritePaths") == ['"/srv/ops 100%%"', "/sys/devices/system/cpu"]
    assert settings(unit, "Environment") == ['"HOME=/srv/ops 100%%"']
    with pytest.raises(jinja2.UndefinedError, match="ops_state_path_must_be_absolute"):
        render("tierfleet-ops.service.j2", ops_state_path="state.json")


def test_unit_refuses_an_unknown_host_kind():
    with pytest.raises(jinja2.UndefinedError, match="ops_host_kind_must_be"):
        render("tierfleet-ops.service.j2", ops_host_kind="gpu\nUser=nobody")


@pytest.mark.parametrize("kind", KINDS)
def test_systemd_analyze_security_rates_the_unit_at_most_4(kind, tmp_path):
    """The goal for the daemon's sandbox (it runs as root and writes sysfs): exposure <= 4.0 of 10."""
    need_offline_analyzer()
    unit = render("tierfleet-ops.service.j2", ops_runtime_unit="llama-server.service",
                  **({"ops_host_kind": kind} if kind else {}))
    level, table = exposure(unit, "tierfleet-ops.service", tmp_path)
    assert level <= 4.0, f"{kind}: exposure {level}\n{exposed(table)}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (apt-get install systemd)")
@pytest.mark.parametrize("kind", KINDS)
def test_systemd_analyze_verify_accepts_the_unit(kind, tmp_path):
    unit = render("tierfleet-ops.service.j2", ops_venv=sys.prefix, ops_policy_path=str(tmp_path / "p%.yaml"),
                  **({"ops_host_kind": kind} if kind else {}))
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
