"""pyinfra against the lab over SSH: converge, idempotence (second run changes nothing), verify."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from conftest import REPO, pyinfra
from tierfleet.lab.runner import grand_total

pytestmark = pytest.mark.lab
DEPLOY = Path(__file__).resolve().parent / "deploys" / "trivial.py"


def test_inventory_groups_and_tiers(lab):
    code = (REPO / "inventory" / "lab.py").read_text()
    ns: dict = {"__file__": str(REPO / "inventory" / "lab.py")}
    exec(compile(code, "inventory/lab.py", "exec"), ns)
    groups = {g: {n: d for n, d in ns[g]} for g in ("jetson", "cpu_servers", "gpu_nodes")}
    assert set(groups["jetson"]) == {"jetson-orin-nano", "jetson-nano"}
    assert set(groups["gpu_nodes"]) == {"gpu-node-t4", "gpu-node-a100", "gpu-node-h200"}
    assert groups["cpu_servers"]["cpu-small"]["tier"] == "basic"
    assert groups["gpu_nodes"]["gpu-node-a100"]["tier"] == "enterprise"
    data = groups["jetson"]["jetson-nano"]
    assert ipaddress.IPv4Address(data["ssh_hostname"]) in ipaddress.IPv4Network("127.0.0.0/8")
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["apt_mirror_url"] == "http://mirror.lab/apt"
    assert data["artifacts_url"] == "http://artifacts.lab/artifacts"


def test_deploy_converges_then_changes_nothing(lab, testinfra_host):
    first = pyinfra(lab, str(DEPLOY))
    assert first.returncode == 0, first.stdout[-3000:]
    total = grand_total(first.stdout)
    assert total["error"] == 0 and total["success"] > 0
    second = pyinfra(lab, str(DEPLOY))
    assert second.returncode == 0, second.stdout[-3000:]
    total = grand_total(second.stdout)
    assert total["success"] == 0 and total["error"] == 0 and total["no_change"] == total["hosts"]
    # verify with testinfra over the same ssh_config (ControlPath)
    for name in ("jetson-nano", "cpu-server", "gpu-node-h200"):
        h = testinfra_host(name)
        assert h.package("tierfleet-lab-hello").is_installed
        assert h.package("tierfleet-lab-hello").version == "1.0"
        assert h.service("lab-hello.service").is_running
        assert h.service("lab-hello.service").is_enabled
        tier = {"jetson-nano": "basic", "cpu-server": "advanced", "gpu-node-h200": "enterprise"}[name]
        assert h.file("/etc/tierfleet-lab-marker").content_string.startswith(f"tier={tier}\n")


def test_apt_trusts_only_the_signed_lab_mirror(testinfra_host):
    h = testinfra_host("jetson-orin-nano")
    sources = h.file("/etc/apt/sources.list.d/tierfleet-lab.list").content_string
    assert sources == "deb [signed-by=/usr/share/keyrings/tierfleet-lab.gpg] http://mirror.lab/base lab main\n"
    out = h.run("apt-get update 2>&1")
    assert out.rc == 0 and "NO_PUBKEY" not in out.stdout
    policy = h.check_output("apt-cache policy nvidia-jetpack")
    assert re.search(r"Candidate: 6\.2\+b77", policy)
