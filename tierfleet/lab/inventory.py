"""The lab as a pyinfra inventory: each host's SSH data, tier, mirror URLs and tierfleet keys.

``inventory/lab.py`` reads the state file and calls :func:`inventory_from_state`; every key the
tier deploys need comes from here (:func:`tierfleet_data`), so they run against the lab with no
extra flags.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tierfleet.lab import base as lab_base
from tierfleet.lab.profiles import Profile, get_profile
from tierfleet.lab.ssh import SshFiles
from tierfleet.lab.state import APT_KEYRING_IN_HOST, APT_SUITE, APT_URL, ARTIFACTS_URL, MIRROR_NAME, LabState

#: the lab's mirrors as the hosts see them
NVIDIA_REPO_KEY = f"{APT_URL}/{lab_base.KEY_ASC}"
L4T_REPO = f"http://{MIRROR_NAME}/jetson"
L4T_REPO_KEY = f"{L4T_REPO}/{lab_base.JETSON_KEY_ASC}"


#: the lab key's public part in the state dir: the inventory pins it as ``artifact_key`` (the lab store's
#: manifests are signed with it) and pins its sha256 for the repository keys the mirrors serve
LAB_KEY = "lab-key.asc"


def write_lab_key(root: Path, apt_repo: Path) -> Path:
    """Copy the lab key's armoured public part (as the mirrors serve it) into the state dir."""
    path = Path(root) / LAB_KEY
    data = (apt_repo / lab_base.KEY_ASC).read_bytes()
    if not path.exists() or path.read_bytes() != data:
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{LAB_KEY}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def tierfleet_data(profile: Profile, root: Path | None = None) -> dict:
    """The tierfleet inventory keys (:class:`tierfleet.settings.HostSettings`) a lab host needs so that
    the tier deploys run with no extra flags: the lab's store, its tiny model, the lab mirrors standing in
    for NVIDIA's CUDA and L4T repositories, and the profile's driver branch; with the lab's state dir
    ``root`` also the pinned keys: ``artifact_key`` and the repository keys' sha256."""
    from tierfleet.artifacts.llama_build import variant_name
    from tierfleet.lab.artifacts import TINY_MODEL_VERSION, tiny_model

    data = {
        "artifact_store": ARTIFACTS_URL,
        # lab hosts are x86_64 containers without a GPU, whatever they are dressed as: all run the CPU build
        "runtime_variant": variant_name("x86_64"),
        "model": tiny_model(),
        "model_version": TINY_MODEL_VERSION,
        "health_timeout": 60,
    }
    if profile.kind == "gpu_nodes":
        data.update({
            "nvidia_repo": APT_URL,
            "nvidia_repo_suite": f"{APT_SUITE} main",
            "nvidia_repo_key": NVIDIA_REPO_KEY,
            "nvidia_driver_branch": profile.gpus[0].driver.split(".")[0],
        })
    elif profile.kind == "jetson":
        data.update({"l4t_repo": L4T_REPO, "l4t_repo_key": L4T_REPO_KEY})
    key = Path(root) / LAB_KEY if root is not None else None
    if key is not None and key.is_file():
        digest = hashlib.sha256(key.read_bytes()).hexdigest()
        data["artifact_key"] = str(key)
        data.update({"gpu_nodes": {"nvidia_repo_key_sha256": digest},
                     "jetson": {"l4t_repo_key_sha256": digest}}.get(profile.kind, {}))
    return data


def inventory_from_state(root: Path, state: LabState) -> dict:
    """group -> [(host, data)] for pyinfra, with each host's tier, the mirror URLs and the tierfleet keys."""
    groups: dict[str, list] = {"jetson": [], "cpu_servers": [], "gpu_nodes": []}
    ssh = SshFiles(root)
    for name, h in state.hosts.items():
        profile = get_profile(h.profile, str(root / "state.json"))
        groups[profile.kind].append((name, {
            "ssh_hostname": h.address,
            "ssh_user": "root",
            "ssh_key": str(ssh.key),
            "ssh_known_hosts_file": str(ssh.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "tier": profile.tier,
            "lab_profile": profile.name,
            "lab_kind": profile.kind,
            "apt_mirror_url": APT_URL,
            "apt_mirror_suite": APT_SUITE,
            "apt_mirror_keyring": APT_KEYRING_IN_HOST,
            "artifacts_url": ARTIFACTS_URL,
            **tierfleet_data(profile, root),
        }))
    return groups
