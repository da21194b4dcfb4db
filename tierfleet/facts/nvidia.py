"""NVIDIA GPU facts: ``nvidia-smi`` queries, PCI detection without a driver, loaded driver version."""

from __future__ import annotations

import re
from typing import TypedDict

from pyinfra.api import FactBase

from tierfleet.facts._util import to_float, to_int

#: the ``--query-gpu`` fields, in the order :class:`NvidiaGpus` asks for them
QUERY_FIELDS = (
    "index",
    "name",
    "memory.total",
    "compute_cap",
    "driver_version",
    "persistence_mode",
    "power.limit",
    "power.default_limit",
    "power.min_limit",
    "power.max_limit",
    "clocks.max.sm",
    "mig.mode.current",
)

#: the fields every driver since 2015 answers; asked for when an old driver rejects a field of the full query
MINIMAL_FIELDS = ("index", "name", "memory.total", "driver_version")


class Gpu(TypedDict):
    index: int | None
    name: str
    memory_total_mib: int | None
    compute_cap: str | None
    driver_version: str | None
    persistence_mode: bool | None
    power_limit_w: float | None
    power_default_limit_w: float | None
    power_min_limit_w: float | None
    power_max_limit_w: float | None
    max_sm_clock_mhz: int | None
    mig_mode: str | None


class GpuQuery(TypedDict):
    gpus: list[Gpu]
    #: why the query gave nothing usable: "no nvidia-smi", the tool's own error line, or unparsed output
    error: str | None
    #: the user-space NVML library version nvidia-smi names when it fails on a driver/library mismatch
    library_version: str | None


def _na(value: str) -> str | None:
    value = value.strip()
    return None if not value or value.startswith("[") or value == "N/A" else value


def parse_gpu_line(line: str) -> Gpu | None:
    """Parse one ``nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`` line
    (or a :data:`MINIMAL_FIELDS` line, whose other fields are then unknown).

    >>> gpu = parse_gpu_line("0, NVIDIA H200, 143771, 9.0, 580.159.04, Enabled, 700.00, 700.00, 200.00, 700.00, 1980, Disabled")
    >>> gpu["name"], gpu["memory_total_mib"], gpu["power_min_limit_w"], gpu["mig_mode"]
    ('NVIDIA H200', 143771, 200.0, 'Disabled')
    >>> parse_gpu_line("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") is None
    True
    """
    fields = [f.strip() for f in line.split(",")]
    if len(fields) == len(MINIMAL_FIELDS):
        fields = fields + ["[N/A]"] * (len(QUERY_FIELDS) - len(MINIMAL_FIELDS))
        fields[4], fields[3] = fields[3], "[N/A]"
    if len(fields) != len(QUERY_FIELDS) or to_int(fields[0]) is None:
        return None
    persistence = _na(fields[5])
    return Gpu(
        index=to_int(fields[0]),
        name=fields[1],
        memory_total_mib=to_int(_na(fields[2])),
        compute_cap=_na(fields[3]),
        driver_version=_na(fields[4]),
        persistence_mode=None if persistence is None else persistence.lower() == "enabled",
        power_limit_w=to_float(_na(fields[6])),
        power_default_limit_w=to_float(_na(fields[7])),
        power_min_limit_w=to_float(_na(fields[8])),
        power_max_limit_w=to_float(_na(fields[9])),
        max_sm_clock_mhz=to_int(_na(fields[10])),
        mig_mode=_na(fields[11]),
    )


NO_NVIDIA_SMI = "no nvidia-smi"
_LIBRARY_RE = re.compile(r"^NVML library version:\s*(?P<version>\S+)")


class NvidiaGpus(FactBase[GpuQuery]):
    """GPUs as ``nvidia-smi`` reports them; an ``error`` when the tool is missing or fails.

    Same query as ``nvidia-smi --query-gpu=index,name,memory.total,... --format=csv,noheader,nounits``;
    when an old driver rejects a field, the :data:`MINIMAL_FIELDS` query is asked instead.
    A driver/library mismatch shows up as ``error = "Failed to initialize NVML: Driver/library version
    mismatch"`` with ``library_version`` set from nvidia-smi's next line.
    """

    @staticmethod
    def default() -> GpuQuery:
        return GpuQuery(gpus=[], error="no output", library_version=None)

    def command(self) -> str:
        full = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
        minimal = f"nvidia-smi --query-gpu={','.join(MINIMAL_FIELDS)} --format=csv,noheader,nounits"
        return (
            "if command -v nvidia-smi >/dev/null 2>&1; then "
            f"out=$({full} 2>&1); "
            'case "$out" in *"not a valid field"*) ' + f"out=$({minimal} 2>&1);; esac; "
            'printf "%s\\n" "$out"; '
            f"else echo '##{NO_NVIDIA_SMI}##'; fi; true"
        )

    def process(self, output: list[str]) -> GpuQuery:
        lines = [line for line in output if line.strip()]
        if lines == [f"##{NO_NVIDIA_SMI}##"]:
            return GpuQuery(gpus=[], error=NO_NVIDIA_SMI, library_version=None)
        gpus: list[Gpu] = []
        errors: list[str] = []
        library = None
        for line in lines:
            gpu = parse_gpu_line(line)
            if gpu is not None:
                gpus.append(gpu)
            elif match := _LIBRARY_RE.match(line.strip()):
                library = match["version"]
            else:
                errors.append(line.strip())
        error = None
        if errors:
            error = errors[0] if not gpus else f"unparsed nvidia-smi output: {errors[0]}"
        return GpuQuery(gpus=gpus, error=error, library_version=library)


class PciGpu(TypedDict):
    slot: str
    kind: str
    description: str


_LSPCI_RE = re.compile(r"^(?P<slot>[0-9a-fA-F:.]+)\s+(?P<kind>3D controller|VGA compatible controller|Display controller):\s+(?P<desc>NVIDIA.*)$")


def parse_lspci_line(line: str) -> PciGpu | None:
    """Parse an ``lspci`` line naming an NVIDIA display/3D controller.

    >>> parse_lspci_line("17:00.0 3D controller: NVIDIA Corporation GH100 [H200 SXM 141GB] (rev a1)")["description"]
    'NVIDIA Corporation GH100 [H200 SXM 141GB] (rev a1)'
    >>> parse_lspci_line("00:1f.6 Ethernet controller: Intel Corporation Ethernet Connection") is None
    True
    """
    match = _LSPCI_RE.match(line.strip())
    if not match:
        return None
    return PciGpu(slot=match["slot"], kind=match["kind"], description=match["desc"])


_SYSFS_PCI_RE = re.compile(r"^pci=(?P<slot>\S+) vendor=0x10de class=0x03(?P<sub>[0-9a-f]{2})[0-9a-f]{2} device=0x(?P<device>[0-9a-f]{4})$")


def parse_sysfs_pci_line(line: str) -> PciGpu | None:
    """Parse a ``pci=<slot> vendor=0x.... class=0x...... device=0x....`` line built from ``/sys/bus/pci``.

    >>> parse_sysfs_pci_line("pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x2335")
    {'slot': '0000:17:00.0', 'kind': '3D controller', 'description': 'NVIDIA Corporation Device 2335'}
    >>> parse_sysfs_pci_line("pci=0000:00:1f.6 vendor=0x8086 class=0x020000 device=0x15fa") is None
    True
    """
    match = _SYSFS_PCI_RE.match(line.strip())
    if not match:
        return None
    kind = {"00": "VGA compatible controller", "02": "3D controller"}.get(match["sub"], "Display controller")
    return PciGpu(slot=match["slot"], kind=kind, description=f"NVIDIA Corporation Device {match['device']}")


class NvidiaPciDevices(FactBase[list[PciGpu]]):
    """NVIDIA GPUs on the PCI bus (works before any driver is installed).

    From plain ``lspci`` (pciutils), or, where that is missing or prints nothing NVIDIA (busybox),
    from ``/sys/bus/pci/devices/*/{vendor,class,device}``.
    """

    @staticmethod
    def default() -> list[PciGpu]:
        return []

    def command(self) -> str:
        return (
            "lspci 2>/dev/null; "
            "for d in /sys/bus/pci/devices/*; do [ -r \"$d/vendor\" ] || continue; "
            'echo "pci=${d##*/} vendor=$(cat "$d/vendor") class=$(cat "$d/class") device=$(cat "$d/device")"; '
            "done 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> list[PciGpu]:
        from_lspci = [gpu for gpu in map(parse_lspci_line, output) if gpu]
        if from_lspci:
            return from_lspci
        return [gpu for gpu in map(parse_sysfs_pci_line, output) if gpu]


_NVRM_RE = re.compile(r"NVRM version:.*?\s(?P<version>[0-9]{1,4}\.[0-9]{1,4}(?:\.[0-9]{1,4})?)\s")


def parse_driver_version(text: str) -> str | None:
    """Parse ``/proc/driver/nvidia/version`` into the loaded kernel module's version.

    >>> parse_driver_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Tue Oct 21 2026\\n")
    '580.159.04'
    """
    match = _NVRM_RE.search(text + " ")
    return match["version"] if match else None


class NvidiaDriverInstalled(FactBase[str | None]):
    """Version of the NVIDIA kernel module installed on disk (``modinfo -F version nvidia``), ``None`` if none.

    After a driver package upgrade without a reboot this differs from :class:`NvidiaDriverLoaded`.
    """

    def command(self) -> str:
        return "modinfo -F version nvidia 2>/dev/null; true"

    def process(self, output: list[str]) -> str | None:
        version = output[0].strip() if output else ""
        return version if re.fullmatch(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?", version) else None


class NvidiaDriverLoaded(FactBase[str | None]):
    """Version of the loaded NVIDIA kernel module (``/proc/driver/nvidia/version``), ``None`` if none.

    Compare with :class:`NvidiaDriverInstalled` to catch a driver/library mismatch after a package upgrade
    without a reboot (nvidia-smi then fails, so its own ``driver_version`` cannot tell).
    """

    def command(self) -> str:
        return "cat /proc/driver/nvidia/version 2>/dev/null; true"

    def process(self, output: list[str]) -> str | None:
        return parse_driver_version("\n".join(output))
