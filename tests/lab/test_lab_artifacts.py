"""The lab's tierfleet inventory data, its apt repositories and the artifacts it publishes (no lab needed)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from tierfleet.catalog import load_catalog
from tierfleet.exceptions import InventoryError
from tierfleet.deploys.stack import l4t_apt_release
from tierfleet.lab import artifacts, base
from tierfleet.lab.inventory import inventory_from_state
from tierfleet.lab.profiles import PROFILES
from tierfleet.lab.state import HostState, LabState
from tierfleet.settings import host_settings

from tests.gpgkeys import make_key


def _inventory(tmp_path) -> dict:
    state = LabState(hosts={n: HostState(n, n, f"127.0.0.{11 + i}", i) for i, n in enumerate(PROFILES)})
    return {name: data for group in inventory_from_state(tmp_path, state).values() for name, data in group}


def _lab_key(tmp_path) -> str:
    """A lab key in the state dir, as ``lab up`` leaves it."""
    _, armored, _ = make_key(tmp_path / "gnupg")
    (tmp_path / "lab-key.asc").write_text(armored)
    return armored


def test_without_the_lab_key_the_http_store_is_refused(tmp_path):
    name, data = next(iter(_inventory(tmp_path).items()))
    with pytest.raises(InventoryError, match="artifact_store: 'http://artifacts.lab/artifacts': an http:// store "
                                             "is allowed only with signed manifests; set artifact_key"):
        host_settings(data, load_catalog(), f"inventory/lab.py: host {name}")


def test_inventory_carries_valid_tierfleet_settings(tmp_path):
    catalog = load_catalog()
    armored = _lab_key(tmp_path)
    digest = hashlib.sha256(armored.encode()).hexdigest()
    for name, data in _inventory(tmp_path).items():
        settings = host_settings(data, catalog, f"inventory/lab.py: host {name}")
        assert settings.artifact_store == "http://artifacts.lab/artifacts"
        assert settings.artifact_key == armored  # read from the file the inventory names
        assert settings.nvidia_repo_key_sha256 == (digest if PROFILES[name].kind == "gpu_nodes" else None)
        assert settings.l4t_repo_key_sha256 == (digest if PROFILES[name].kind == "jetson" else None)
        assert settings.model.name == "tiny-llama" and settings.model.file == "tiny-q8_0.gguf"
        assert settings.model_version == "1" and settings.health_timeout == 60
        profile = PROFILES[name]
        if profile.kind == "gpu_nodes":
            assert settings.nvidia_repo == "http://mirror.lab/apt" and settings.nvidia_repo_suite == "lab main"
            assert settings.nvidia_repo_key == "http://mirror.lab/apt/tierfleet-lab.asc"
            assert settings.nvidia_driver_branch == profile.gpus[0].driver.split(".")[0]
        else:
            assert settings.nvidia_repo is None
        if profile.kind == "jetson":
            assert settings.l4t_repo == "http://mirror.lab/jetson"
            assert settings.l4t_repo_key == "http://mirror.lab/jetson/jetson-ota-public.asc"
    data = _inventory(tmp_path)
    assert data["gpu-node-h200"]["nvidia_driver_branch"] == "580"
    assert data["gpu-node-t4"]["nvidia_driver_branch"] == "550"


def test_tiny_model_size_matches_the_generated_file(tmp_path):
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf

    [path] = write_tiny_gguf(tmp_path / artifacts.TINY_MODEL_FILE, qtype="q8_0", seed=artifacts.TINY_MODEL_SEED)
    assert path.stat().st_size == artifacts.TINY_MODEL_BYTES
    assert artifacts.tiny_model()["size_gb"] * 1e9 == pytest.approx(path.stat().st_size)


def test_apt_repo_has_every_gpu_branch_and_the_cuda_runtime():
    names = {(p.name, p.version) for p in base.STANDIN_PACKAGES}
    for profile in PROFILES.values():
        for gpu in profile.gpus:
            branch = gpu.driver.split(".")[0]
            assert (f"cuda-drivers-{branch}", f"{gpu.driver}-1") in names
    for pkg in ("cuda-cudart-12-8", "libcublas-12-8", "nvidia-persistenced", "nvidia-container-toolkit"):
        assert pkg in {n for n, _ in names}


def test_jetson_layout_covers_every_jetson_release():
    for profile in PROFILES.values():
        if profile.jetson is None:
            continue
        spec = profile.jetson
        suite = l4t_apt_release(spec.l4t_deb_version.split("-")[0])
        soc = "t" + spec.soc.removeprefix("tegra")
        common = {p.name: p.version for p in base.JETSON_REPOS["common"][suite]}
        assert common["nvidia-cuda"].startswith(spec.jetpack) and common["nvidia-jetpack"].startswith(spec.jetpack)
        assert [p.version for p in base.JETSON_REPOS[soc][suite]] == [spec.l4t_deb_version]
    assert set(base.JETSON_REPOS) == {"common", "t234", "t210"}


@pytest.mark.skipif(not shutil.which("gpg") or not shutil.which("dpkg-deb"), reason="needs gpg and dpkg-deb")
def test_repositories_are_signed_and_carry_the_armoured_key(tmp_path):
    apt_repo = base.ensure_apt_repo(tmp_path, log=lambda m: None)
    jetson = base.ensure_jetson_repo(tmp_path, log=lambda m: None)
    keyring = tmp_path / "tierfleet-lab.gpg"
    for release in (apt_repo / "dists/lab", jetson / "common/dists/r36.4", jetson / "t210/dists/r32.7"):
        ok = subprocess.run(["gpgv", "--keyring", keyring, release / "InRelease"], capture_output=True)
        assert ok.returncode == 0, ok.stderr
    # the armoured key is the same key (dearmoured it verifies the same signature)
    armoured = (apt_repo / base.KEY_ASC).read_text()
    assert armoured.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (jetson / base.JETSON_KEY_ASC).read_text() == armoured
    dearmoured = tmp_path / "k.gpg"
    subprocess.run(["gpg", "--batch", "--yes", "--dearmor", "-o", dearmoured, apt_repo / base.KEY_ASC], check=True)
    ok = subprocess.run(["gpgv", "--keyring", dearmoured, jetson / "t234/dists/r36.4/InRelease"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    packages = (jetson / "common/dists/r32.7/main/binary-amd64/Packages").read_text()
    assert "Package: nvidia-cuda\nVersion: 4.6.6-b24" in packages
    # nvidia-persistenced ships a unit and an executable program
    deb = next((apt_repo / "pool/main").glob("nvidia-persistenced_*.deb"))
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    assert "./lib/systemd/system/nvidia-persistenced.service" in listing
    assert any(l.startswith("-rwxr-xr-x") and l.endswith("./usr/bin/nvidia-persistenced") for l in listing.splitlines())
    # a second call reuses the built repositories
    assert base.ensure_jetson_repo(tmp_path, log=lambda m: 1 / 0) == jetson


def test_publish_tiny_model_is_idempotent(tmp_path):
    first = artifacts.publish_tiny_model(tmp_path)
    assert not first.reused
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["name"] == "tiny-llama-Q8_0" and manifest["version"] == "1"
    assert manifest["files"][0]["size"] == artifacts.TINY_MODEL_BYTES and "zst" in manifest["files"][0]
    second = artifacts.publish_tiny_model(tmp_path)
    assert second.reused and second.path == first.path
    # a damaged store entry is published again, whole
    (first.path / "tiny-q8_0.gguf.zst").write_bytes(b"short")
    assert not artifacts._present(first.path)
    logged = []
    third = artifacts.publish_tiny_model(tmp_path, log=logged.append)
    assert not third.reused and artifacts._present(third.path) and "publishing again" in logged[0]
    assert json.loads((third.path / "manifest.json").read_text()) == manifest
