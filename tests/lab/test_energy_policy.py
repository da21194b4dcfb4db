"""The energy policy the tier deploy writes on the lab's hosts. Jetsons: each profile names one of the board's
own nvpmodel modes, a profile switch changes the power mode (the ``nvpmodel`` stand-in's state, CPUs taken
offline included) and stopping the daemon puts the board's original mode back. GPU nodes: eco and balanced
carry power limits inside each GPU's constraints (the ``nvidia-smi`` stand-in, H200 as recorded)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from conftest import REPO, pyinfra
from tierfleet.lab.profiles import PROFILES

pytestmark = pytest.mark.lab

CLI = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
#: host -> profile -> (mode name, mode id, CPUs online in that mode)
EXPECTED = {
    "jetson-orin-nano": {"eco": ("7W", 1, "0-3"), "balanced": ("15W", 0, "0-5"), "performance": ("15W", 0, "0-5")},
    "jetson-nano": {"eco": ("5W", 1, "0-1"), "balanced": ("MAXN", 0, "0-3"), "performance": ("MAXN", 0, "0-3")},
}


def in_host(lab, host: str, *argv: str) -> str:
    run = subprocess.run(lab.host(host).exec_argv(list(argv)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (host, argv, run.stdout, run.stderr)
    return run.stdout.strip()


def mode(lab, host: str) -> tuple[str, int, str]:
    name, ident = in_host(lab, host, "nvpmodel", "-q").splitlines()
    return (name.removeprefix("NV Power Mode: "), int(ident),
            in_host(lab, host, "cat", "/sys/devices/system/cpu/online"))


def wait_for_mode(lab, host: str, want: tuple[str, int, str], timeout: float = 30.0) -> tuple[str, int, str]:
    """The daemon acts on its next tick: poll the stand-in's state until it shows ``want`` (or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        got = mode(lab, host)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.fixture(scope="module")
def published(lab):
    from tierfleet.artifacts.llama_build import cached_runtime

    cache = REPO / ".cache" / "runtime"
    if cached_runtime(cache) is None:
        pytest.skip(f"no llama-server build under {cache}: run `tierfleet lab publish` once (builds it)")
    lab.publish(cache)


@pytest.fixture(scope="module")
def jetsons(lab, published):
    run = pyinfra(lab, "deploys/tier_basic.py", "--limit", "jetson")
    assert run.returncode == 0, run.stdout[-4000:]
    names = [n for n, h in lab.store.load().hosts.items() if PROFILES[h.profile].kind == "jetson"]
    assert sorted(names) == sorted(EXPECTED)
    return names


@pytest.mark.parametrize("host", sorted(EXPECTED))
def test_policy_names_the_boards_own_modes(lab, jetsons, host):
    policy = yaml.safe_load(in_host(lab, host, "cat", "/etc/tierfleet-ops/policy.yaml"))
    got = {name: policy["profiles"][name]["jetson"].get("nvpmodel") for name in EXPECTED[host]}
    assert got == {name: want[0] for name, want in EXPECTED[host].items()}


@pytest.mark.parametrize("host", sorted(EXPECTED))
def test_profile_switch_changes_the_power_mode_and_stop_restores_it(lab, jetsons, host):
    assert in_host(lab, host, "systemctl", "is-active", "tierfleet-ops") == "active"
    try:
        in_host(lab, host, CLI, "profile", "hold", "performance")
        assert wait_for_mode(lab, host, EXPECTED[host]["performance"]) == EXPECTED[host]["performance"]
        in_host(lab, host, CLI, "profile", "hold", "eco")
        assert wait_for_mode(lab, host, EXPECTED[host]["eco"]) == EXPECTED[host]["eco"]
        assert in_host(lab, host, "cat", "/var/lib/nvpmodel/status").startswith(
            f"pmode:{EXPECTED[host]['eco'][1]:04d}")
        # the host's mode before the daemon's first write, recorded in its state file: the board's default
        originals = json.loads(in_host(lab, host, CLI, "status", "--json"))["originals"]
        assert originals["jetson.nvpmodel"] == EXPECTED[host]["balanced"][0]
        in_host(lab, host, "systemctl", "stop", "tierfleet-ops")
        assert mode(lab, host) == EXPECTED[host]["balanced"]
    finally:
        in_host(lab, host, "systemctl", "start", "tierfleet-ops")


#: GPU node -> (eco W, balanced W): 60 % / 80 % of the default limit, clamped to [min, max]
GPU_LIMITS = {"gpu-node-h200": (420, 560), "gpu-node-a100": (240, 320), "gpu-node-t4": (60, 60)}


@pytest.fixture(scope="module")
def gpu_nodes(lab, published):
    run = pyinfra(lab, "deploys/tier_basic.py", "--limit", "gpu_nodes")
    assert run.returncode == 0, run.stdout[-4000:]


@pytest.mark.parametrize("host", sorted(GPU_LIMITS))
def test_gpu_policy_limits_are_inside_the_constraints_nvidia_smi_enforces(lab, gpu_nodes, host):
    policy = yaml.safe_load(in_host(lab, host, "cat", "/etc/tierfleet-ops/policy.yaml"))
    limits = tuple(policy["profiles"][name]["nvml"]["power_limit_w"] for name in ("eco", "balanced"))
    assert limits == GPU_LIMITS[host]
    assert policy["profiles"]["performance"]["nvml"]["power_limit_pct"] == 100
    for watts in limits:  # the stand-in refuses what the driver would: outside [min, max]
        in_host(lab, host, "nvidia-smi", "-pl", str(watts))
    in_host(lab, host, "nvidia-smi", "-pl", str(PROFILES[host].gpus[0].power_default_w))
