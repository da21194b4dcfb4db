"""Platform stack of a tier deploy, chosen from the host's facts: GPU node, Jetson or CPU server.

- GPU node: NVIDIA apt repository (inventory ``nvidia_repo`` / ``nvidia_repo_key``, so a fleet mirror works),
  ``cuda-drivers-<branch>`` held with ``apt-mark hold``, nouveau blacklisted, ``nvidia-persistenced`` enabled,
  CUDA runtime libraries; when the driver changed, a reboot and a check that the loaded module matches.
  ``nvidia-container-toolkit`` only with ``runtime_mode: container``.
- Jetson: the L4T apt source for the host's own L4T major.minor and SoC (t210/t194/t234): a minor-release
  source never crosses a major release, and nothing here reflashes. JetPack components from ``jetpack_packages``.
- CPU server: nothing to install; the runtime variant follows the CPU flags.
"""

from __future__ import annotations

import re
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from tierfleet.operations import failure, nvidia, packages
from tierfleet.profile import HostProfile
from tierfleet.settings import HostSettings, cuda_repo_for

#: where the Jetson image puts NVIDIA's L4T key (trusted for every apt source there)
JETSON_IMAGE_KEY = "/etc/apt/trusted.gpg.d/jetson-ota-public.asc"

NOUVEAU_BLACKLIST = (
    "# Managed by tierfleet: the NVIDIA driver needs nouveau out of the way.\n"
    "blacklist nouveau\noptions nouveau modeset=0\n"
)


def _apt_source(name: str, key_url: str, key_sha256: str, keyring: str, list_file: str, lines: list[str]):
    """Install an apt source and its ASCII-armoured key; return a callable telling whether either changed.

    The key is installed only when its sha256 is ``key_sha256`` (pinned in the inventory), and every line
    names it with ``signed-by`` so apt trusts it for this source alone. ``list_file`` is the file the
    vendor's own installer writes (cuda-keyring, the Jetson image), so the host keeps one entry per
    repository instead of two with conflicting ``Signed-By`` values.
    """
    key = packages.repository_key(name=f"{name} repository key", src=key_url, dest=keyring, sha256=key_sha256)
    source = files.put(
        name=f"{name} apt source",
        src=StringIO("# Managed by tierfleet\n" + "".join(f"{line}\n" for line in lines)),
        dest=f"/etc/apt/sources.list.d/{list_file}",
        mode="644",
    )
    changed = lambda: key.did_change() or source.did_change()  # noqa: E731
    apt.update(name=f"apt update ({name})", _if=changed)
    return changed


@deploy("NVIDIA GPU node stack")
def gpu_stack(settings: HostSettings, profile: HostProfile) -> None:
    branch = settings.nvidia_driver_branch
    repo = settings.nvidia_repo or cuda_repo_for(profile.os_id, profile.os_version_id, profile.arch)
    if repo is None:
        failure.fail(
            name="NVIDIA repository for this OS",
            message=f"no NVIDIA repository known for {profile.os or 'this OS'} on {profile.arch}; "
            "set nvidia_repo (and nvidia_repo_key) in the inventory",
        )
        return
    if settings.nvidia_repo_key_sha256 is None:
        failure.fail(name="NVIDIA repository key is pinned", message=_unpinned("nvidia_repo_key", (
            settings.nvidia_repo_key or f"{repo.rstrip('/')}/3bf863cc.pub")))
        return
    repo = repo.rstrip("/")
    keyring = "/usr/share/keyrings/cuda-archive-keyring.asc"
    # cuda-keyring's own file name for NVIDIA's repository (cuda-ubuntu2204-x86_64.list); apt ignores
    # list files with other characters than [A-Za-z0-9_.-]
    list_file = re.sub(r"[^A-Za-z0-9_.-]+", "-", "cuda-" + "-".join(repo.split("://", 1)[-1].rsplit("/", 2)[-2:])) + ".list"
    _apt_source("nvidia", settings.nvidia_repo_key or f"{repo}/3bf863cc.pub", settings.nvidia_repo_key_sha256,
                keyring, list_file, [f"deb [signed-by={keyring}] {repo} {settings.nvidia_repo_suite}"])
    blacklist = files.put(
        name="Blacklist nouveau",
        src=StringIO(NOUVEAU_BLACKLIST),
        dest="/etc/modprobe.d/tierfleet-blacklist-nouveau.conf",
        mode="644",
    )
    # nouveau loads from the initramfs on most images: rebuild it so the blacklist holds at the next boot
    server.shell(
        name="Rebuild the initramfs",
        commands=["if command -v update-initramfs >/dev/null 2>&1; then update-initramfs -u; fi"],
        _if=blacklist.did_change,
    )
    files.put(
        name="Load nvidia-uvm at boot",
        src=StringIO("# Managed by tierfleet: CUDA needs nvidia-uvm; the hardened model server cannot load it.\nnvidia-uvm\n"),
        dest="/etc/modules-load.d/tierfleet-nvidia.conf",
        mode="644",
    )
    driver = apt.packages(name="NVIDIA driver (pinned branch)", packages=[f"cuda-drivers-{branch}"],
                          no_recommends=True)
    number = re.escape(branch.split("-")[0])
    packages.held_matching(
        name="Hold the whole driver branch",
        pattern=rf"^cuda-drivers-{number}$|^(lib)?nvidia-[a-z0-9-]*-{number}(-open)?(-server)?$",
    )
    if settings.nvidia_cuda_packages:
        apt.packages(name="CUDA runtime libraries", packages=list(settings.nvidia_cuda_packages), no_recommends=True)
    if settings.runtime_mode == "container":
        apt.packages(name="NVIDIA container toolkit", packages=["nvidia-container-toolkit"], no_recommends=True)
    # enabled before the reboot, started after it: on a fresh install no module is loaded until then
    systemd.service(name="Enable nvidia-persistenced", service="nvidia-persistenced", running=None, enabled=True)
    # also when an earlier run installed the driver but never rebooted (loaded module != installed one)
    server.reboot(name="Reboot into the new driver", reboot_timeout=900,
                  _if=lambda: driver.did_change() or profile.driver_mismatch)
    systemd.service(name="Start nvidia-persistenced", service="nvidia-persistenced", running=True)
    nvidia.driver_consistent(name="Loaded driver matches the installed one", branch=branch)


def _unpinned(key: str, url: str) -> str:
    return (f"{key}_sha256 is not set: the repository key {url} is installed only with its sha256 "
            f"pinned in the inventory (64 lowercase hex digits; check the key's fingerprint, then "
            f"`curl -fsSL {url} | sha256sum`)")


def l4t_apt_release(l4t: str) -> str:
    """The L4T apt suite for an L4T version: major.minor only, so upgrades stay within the release.

    >>> l4t_apt_release("36.4.3"), l4t_apt_release("32.7.6")
    ('r36.4', 'r32.7')
    """
    major, minor, *_ = l4t.split(".")
    return f"r{major}.{minor}"


@deploy("Jetson L4T stack")
def jetson_stack(settings: HostSettings, profile: HostProfile) -> None:
    info = profile.jetson or {}
    if not info.get("l4t") or not info.get("apt_soc"):
        host.noop("L4T release or SoC unknown: leaving the Jetson's apt sources alone")
        return
    if settings.l4t_repo_key_sha256 is None:
        failure.fail(name="L4T repository key is pinned", message=_unpinned("l4t_repo_key", settings.l4t_repo_key))
        return
    suite = l4t_apt_release(info["l4t"])
    repo = settings.l4t_repo.rstrip("/")
    # the Jetson image's own list file (replaced, so entries never conflict), but the key in its own keyring
    # named by signed-by: the image's copy in trusted.gpg.d would make apt trust it for every source
    keyring = "/usr/share/keyrings/nvidia-l4t-archive-keyring.asc"
    _apt_source(
        "l4t", settings.l4t_repo_key, settings.l4t_repo_key_sha256, keyring, "nvidia-l4t-apt-source.list",
        [f"deb [signed-by={keyring}] {repo}/common {suite} main",
         f"deb [signed-by={keyring}] {repo}/{info['apt_soc']} {suite} main"],
    )
    files.file(name="L4T key no longer trusted for every source", path=JETSON_IMAGE_KEY, present=False)
    if settings.jetpack_packages:
        apt.packages(name="JetPack components", packages=list(settings.jetpack_packages), no_recommends=True)
