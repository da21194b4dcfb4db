"""NVIDIA driver checks as pyinfra operations."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from tierfleet.operations.failure import fail_host
from tierfleet.facts.nvidia import NvidiaDriverInstalled, NvidiaDriverLoaded, NvidiaGpus


@operation(is_idempotent=True)
def driver_consistent(branch: str | None = None):
    """Fail the host unless the loaded kernel module matches the installed driver (and ``branch``).

    + branch: expected driver branch, e.g. ``570`` (the major version), or None for any

    Catches the classic "Driver/library version mismatch" after a driver upgrade without a reboot.
    """
    query = host.get_fact(NvidiaGpus)
    loaded = host.get_fact(NvidiaDriverLoaded)
    installed = host.get_fact(NvidiaDriverInstalled) or query["library_version"]
    problem = None
    if loaded is None:
        problem = "no NVIDIA kernel module loaded (/proc/driver/nvidia/version missing)"
    elif installed and installed != loaded:
        problem = f"driver/library mismatch: loaded {loaded}, installed {installed} (reboot needed)"
    elif not query["gpus"]:
        problem = f"nvidia-smi sees no GPU ({query['error']})"
    elif branch and not loaded.startswith(f"{branch.split('-')[0]}."):
        problem = f"driver {loaded} is not on branch {branch}"
    if problem is None:
        host.noop(f"NVIDIA driver {loaded} loaded and consistent")
        return
    yield fail_host(f"NVIDIA driver check failed: {problem}")
