"""The Vagrantfile cannot boot VMs here (no hypervisor): it is validated instead.

``vagrant validate --ignore-provider`` (Debian's ``vagrant`` package, offline) loads the whole file, as
``vagrant up`` does, and checks every machine's settings and triggers except the provider blocks; ``ruby -c`` checks
its syntax. The machines, their pyinfra groups (``@vagrant.json``) and the PCI address check are asserted too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MACHINES = {"cpu-server-1", "cpu-small-1", "gpu-node-1"}
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None and not os.environ.get("CI"),
                                   reason="needs Debian's vagrant package (apt-get install vagrant)")


def vagrant(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["vagrant", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", **env})


@needs_vagrant
@pytest.mark.parametrize("gpu_pci", ["", "0000:41:00.0"])
def test_vagrant_validates_every_machine(gpu_pci):
    done = vagrant("validate", "--ignore-provider", TIERFLEET_GPU_PCI=gpu_pci)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully." in done.stdout
    assert set(re.findall(r"==> ([a-z0-9-]+): Ignoring provider config", done.stdout)) == MACHINES


@needs_vagrant
def test_a_malformed_gpu_pci_address_is_refused_by_name():
    done = vagrant("validate", "--ignore-provider", TIERFLEET_GPU_PCI="41:00.0; rm -rf /")
    assert done.returncode != 0
    assert "TIERFLEET_GPU_PCI=41:00.0; rm -rf /: expected a PCI address DDDD:BB:SS.F" in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("ruby") is None and not os.environ.get("CI"), reason="needs ruby (vagrant's)")
def test_ruby_syntax():
    done = subprocess.run(["ruby", "-c", "Vagrantfile"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "Syntax OK", done.stderr


def test_every_machine_has_its_pyinfra_groups_and_tier():
    text = (REPO / "Vagrantfile").read_text()
    assert set(re.findall(r'^\s*"([a-z0-9-]+)"\s*=>\s*\[', text, re.M)) == MACHINES
    options = json.loads((REPO / "@vagrant.json").read_text())
    assert set(options["groups"]) == set(options["data"]) == MACHINES
    assert options["groups"]["gpu-node-1"] == ["gpu_nodes"]
    from tierfleet.catalog import load_catalog
    from tierfleet.settings import host_settings

    for name, data in options["data"].items():
        host_settings(data, load_catalog(), f"@vagrant.json: {name}")
