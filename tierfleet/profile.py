"""One normalised view of a host, built from the raw facts by a pure function.

:func:`build_profile` turns the facts of :mod:`tierfleet.facts` into a :class:`HostProfile`; it does no I/O,
so it is tested on recorded fact output. :data:`FACTS` lists the facts to gather for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tierfleet.facts import cpu, jetson, nvidia, power, system

Platform = Literal["jetson", "gpu", "cpu"]

#: the facts a profile is built from: key -> (fact class, takes the model directory as argument)
FACTS: dict[str, tuple[type, bool]] = {
    "jetson": (jetson.Jetson, False),
    "gpus": (nvidia.NvidiaGpus, False),
    "pci_gpus": (nvidia.NvidiaPciDevices, False),
    "driver_loaded": (nvidia.NvidiaDriverLoaded, False),
    "driver_installed": (nvidia.NvidiaDriverInstalled, False),
    "topology": (cpu.CpuTopology, False),
    "isa": (cpu.CpuIsa, False),
    "cpufreq": (cpu.CpuFreq, False),
    "meminfo": (system.MemInfo, False),
    "disk": (system.DiskFree, True),
    "os": (system.OsRelease, False),
    "power": (power.PowerControls, False),
}

MIB = 1024 * 1024


@dataclass(frozen=True)
class HostProfile:
    """What preflight, deploys and fleet status need to know about one host.

    ``None`` in a size or count means "unknown": the fact could not be read or parsed.
    """

    name: str
    platform: Platform
    platform_detail: str
    arch: str | None
    os: str | None
    #: ``ID`` and ``VERSION_ID`` from /etc/os-release, e.g. ``ubuntu`` and ``22.04``
    os_id: str | None
    os_version_id: str | None
    physical_cores: int | None
    logical_cpus: int | None
    ram_bytes: int | None
    unified_memory: bool
    #: memory of the largest GPU; ``None`` on Jetsons (unified) and CPU hosts, or when unknown
    gpu_memory_bytes: int | None
    gpu_names: tuple[str, ...]
    #: why nvidia-smi gave no GPU although the tool exists (a broken or mismatched driver), else None
    gpu_error: str | None
    #: the installed driver (on-disk module, or the library nvidia-smi names) and the loaded kernel module
    driver_version: str | None
    driver_loaded: str | None
    disk_path: str
    disk_free_bytes: int | None
    cpu_variant: str
    power_controls: tuple[str, ...]
    jetson: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def driver_mismatch(self) -> bool:
        """True when the loaded kernel module differs from the installed user-space driver."""
        return bool(self.driver_version and self.driver_loaded and self.driver_version != self.driver_loaded)


def _platform(facts: dict[str, Any]) -> tuple[Platform, str, list[str]]:
    notes: list[str] = []
    info = facts.get("jetson")
    if info:
        parts = [info.get("soc") or "unknown SoC"]
        parts.append(f"L4T {info['l4t']}" if info.get("l4t") else "L4T unknown")
        parts.append(f"JetPack {info['jetpack']}" if info.get("jetpack") else "JetPack unknown")
        if info.get("l4t") and info["l4t"].startswith("32."):
            notes.append("JetPack 4 (Ubuntu 18.04, CUDA 10.2): llama.cpp needs a patched build here")
        return "jetson", f"{info.get('model') or 'Jetson'} ({', '.join(parts)})", notes

    query = facts.get("gpus") or {}
    gpus = query.get("gpus") or []
    pci = facts.get("pci_gpus") or []
    if gpus:
        names = sorted({g["name"] for g in gpus})
        return "gpu", f"{len(gpus)}x {', '.join(names)} (driver {gpus[0].get('driver_version') or '?'})", notes
    if pci:
        error = query.get("error") or "no nvidia-smi"
        notes.append(f"NVIDIA GPU on the PCI bus but nvidia-smi gives nothing ({error})")
        return "gpu", f"{len(pci)}x {pci[0]['description']} (no working driver)", notes
    return "cpu", "CPU only", notes


def build_profile(name: str, facts: dict[str, Any]) -> HostProfile:
    """Build a :class:`HostProfile` from fact results keyed as in :data:`FACTS`. Pure.

    >>> p = build_profile("h", {"meminfo": {"MemTotal": 8 * 10**9}, "topology": None})
    >>> p.platform, p.ram_bytes, p.physical_cores
    ('cpu', 8000000000, None)
    """
    platform, detail, notes = _platform(facts)

    topology = facts.get("topology")
    meminfo = facts.get("meminfo") or {}
    disk = facts.get("disk")
    isa = facts.get("isa") or {}
    os_release = facts.get("os") or {}
    query = facts.get("gpus") or {}
    gpus = query.get("gpus") or []

    gpu_mem = None
    if platform == "gpu":
        sizes = [g["memory_total_mib"] for g in gpus if g.get("memory_total_mib")]
        gpu_mem = max(sizes) * MIB if sizes else None

    driver_version = (
        facts.get("driver_installed")
        or query.get("library_version")
        or next((g["driver_version"] for g in gpus if g.get("driver_version")), None)
    )
    driver_loaded = facts.get("driver_loaded")
    gpu_error = None
    if platform == "gpu" and not gpus and query.get("error") not in (None, nvidia.NO_NVIDIA_SMI):
        gpu_error = query["error"]
    if driver_version and driver_loaded and driver_version != driver_loaded:
        notes.append(f"driver/library mismatch: loaded {driver_loaded}, installed {driver_version} (reboot needed)")
    if topology is None:
        notes.append("CPU topology unknown (could not read /sys/devices/system/cpu)")
    if topology and topology.get("offline_cores"):
        notes.append(f"{topology['offline_cores']} physical core(s) offline (power mode or hotplug), counted as the "
                     f"host's: {len(topology['online'])} of {len(topology.get('present') or [])} CPUs online")
    if "MemTotal" not in meminfo:
        notes.append("memory unknown (could not read /proc/meminfo)")
    if disk is None:
        notes.append("free disk unknown (df failed)")

    return HostProfile(
        name=name,
        platform=platform,
        platform_detail=detail,
        arch=os_release.get("ARCH") or None,
        os=os_release.get("PRETTY_NAME") or None,
        os_id=os_release.get("ID") or None,
        os_version_id=os_release.get("VERSION_ID") or None,
        physical_cores=len(topology["cores"]) + topology.get("offline_cores", 0) if topology else None,
        logical_cpus=len(topology.get("present") or topology["online"]) if topology else None,
        ram_bytes=meminfo.get("MemTotal"),
        unified_memory=platform == "jetson",
        gpu_memory_bytes=gpu_mem,
        gpu_names=tuple(g["name"] for g in gpus),
        gpu_error=gpu_error,
        driver_version=driver_version,
        driver_loaded=driver_loaded,
        disk_path=(disk or {}).get("path") or "",
        disk_free_bytes=disk["free"] if disk else None,
        cpu_variant=isa.get("variant", "generic"),
        power_controls=tuple(facts.get("power") or ()),
        jetson=facts.get("jetson"),
        notes=tuple(notes),
    )


def gather_facts(host: Any, model_dir: str) -> dict[str, Any]:
    """Read every fact in :data:`FACTS` from a connected pyinfra ``host`` (one round trip each)."""
    results: dict[str, Any] = {}
    for key, (fact, takes_dir) in FACTS.items():
        results[key] = host.get_fact(fact, model_dir) if takes_dir else host.get_fact(fact)
    return results
