"""The llama-server unit renders to what systemd and llama-server expect."""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import pytest

from tests.systemd_units import exposed, exposure, need_offline_analyzer

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def render(**overrides) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    values = dict(runtime_root="/opt/tierfleet/runtime", model_root="/var/lib/tierfleet/models", groups="",
                  port=8080, threads=14, cpus="2 3 4 5", context_size=4096, gpu_layers=99, parallel=1,
                  tier="basic", service_user="tierfleet", mlock=False)
    values.update(overrides)
    return env.get_template("llama-server.service.j2").render(**values)


def settings(unit: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in unit.splitlines() if ln.startswith(f"{key}=")]


PLATFORMS = ["cpu", "gpu", "jetson", None]


def for_platform(platform: str | None) -> dict:
    """What the tier deploy renders for each platform (no platform: the template's default)."""
    values = {"platform": platform} if platform else {}
    if platform == "cpu":
        values["gpu_layers"] = 0
    if platform == "jetson":
        values["groups"] = "video"
    return values


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return [a.replace("%%", "%") for a in shlex.split(line[len("ExecStart="):])]


def test_exec_start_and_hardening():
    unit = render()
    assert exec_start(unit) == [
        "/opt/tierfleet/runtime/current/bin/llama-server", "--host", "127.0.0.1", "--port", "8080", "--threads", "14", "--ctx-size", "4096",
        "--n-gpu-layers", "99", "--parallel", "1", "--metrics",
    ]
    for line in ("User=tierfleet", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "LimitMEMLOCK=infinity", "CPUAffinity=2 3 4 5", "CapabilityBoundingSet=",
                 "EnvironmentFile=/var/lib/tierfleet/models/current/release.env"):
        assert line in unit.splitlines()


def test_no_affinity_line_without_cpus_and_mlock_flag():
    unit = render(cpus="", mlock=True)
    assert not any(line.startswith(("CPUAffinity", "SupplementaryGroups")) for line in unit.splitlines())
    assert "SupplementaryGroups=video" in render(groups="video").splitlines()
    assert exec_start(unit)[-1] == "--mlock"


def test_paths_are_quoted_for_systemd():
    unit = render(runtime_root="/srv/my runtime/100%")
    assert exec_start(unit)[0] == "/srv/my runtime/100%/current/bin/llama-server"
    assert '"/srv/my runtime/100%%/current/bin/llama-server"' in unit


@pytest.mark.parametrize("platform", PLATFORMS)
def test_runtime_cannot_reach_the_control_socket_or_the_network(platform):
    unit = render(**for_platform(platform))
    assert settings(unit, "InaccessiblePaths") == ["/run/tierfleet-ops"]
    assert settings(unit, "IPAddressDeny") == ["any"] and settings(unit, "IPAddressAllow") == ["localhost"]
    assert settings(unit, "CapabilityBoundingSet") == [""] and settings(unit, "ProtectProc") == ["invisible"]
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "RestrictNamespaces", "LockPersonality", "RestrictSUIDSGID"):
        assert settings(unit, key) == ["yes"], key
    assert settings(unit, "SystemCallFilter")[0] == "@system-service"
    assert settings(unit, "SystemCallErrorNumber") == ["EPERM"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_devices_per_platform(platform):
    """CPU: a private /dev; GPU: the NVIDIA nodes only; Jetson: no list (Tegra's CUDA nodes vary by release),
    and so no ProtectClock=, whose char-rtc entry would turn the policy into a list."""
    unit = render(**for_platform(platform))
    devices = settings(unit, "DeviceAllow")
    if platform == "cpu":
        assert settings(unit, "PrivateDevices") == ["yes"] and not devices
        assert settings(unit, "MemoryDenyWriteExecute") == ["yes"]
    elif platform == "jetson":
        assert not devices and not settings(unit, "DevicePolicy") and not settings(unit, "ProtectClock")
        assert not settings(unit, "PrivateDevices") and settings(unit, "SupplementaryGroups") == ["video"]
    else:
        assert settings(unit, "DevicePolicy") == ["closed"] and devices == ["char-nvidia* rw"]
        assert not settings(unit, "PrivateDevices")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_systemd_analyze_security_rates_the_unit_at_most_2_5(platform, tmp_path):
    need_offline_analyzer()
    level, table = exposure(render(**for_platform(platform)), "llama-server.service", tmp_path)
    assert level <= 2.5, f"{platform}: exposure {level}\n{exposed(table)}"


def test_unknown_platform_is_refused():
    with pytest.raises(jinja2.UndefinedError, match="platform_must_be"):
        render(platform="cpu\nUser=root")
