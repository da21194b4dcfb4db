"""Recorded-style fact outputs for whole hosts, keyed by a distinctive substring of each fact command.

Used as pyinfra ``@fake`` connector ``fake_responses`` (the connector matches substrings of the command)
and, through :func:`facts_for`, to build profiles without any connector.
"""

from __future__ import annotations

import json
from pathlib import Path

from tierfleet.profile import FACTS

SPECS = Path(__file__).parent / "facts" / "specs"

#: fact key in tierfleet.profile.FACTS -> substring that only that fact's command contains
MATCHERS = {
    "jetson": "nv_tegra_release",
    "gpus": "--query-gpu",
    "pci_gpus": "lspci",
    "driver_loaded": "cat /proc/driver/nvidia/version",
    "driver_installed": "modinfo -F version nvidia",
    "topology": "core_cpus_list",
    "isa": "model name",
    "cpufreq": "scaling_available_governors",
    "meminfo": "cat /proc/meminfo",
    "disk": "df -Pk",
    "os": "os-release",
    "power": "&& echo cpufreq;",
}


def _spec(fact: str, case: str) -> list[str]:
    return json.loads((SPECS / fact / f"{case}.json").read_text())["output"]


def _topology(cores: int, smt: bool = False, nodes: int = 1) -> list[str]:
    threads = cores * (2 if smt else 1)
    lines = [f"/sys/devices/system/cpu/online:0-{threads - 1}"]
    for cpu in range(threads):
        core = cpu % cores
        siblings = f"{core},{core + cores}" if smt else str(core)
        lines.append(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list:{siblings}")
    per_node = threads // nodes
    for node in range(nodes):
        lines.append(f"/sys/devices/system/node/node{node}/cpulist:{node * per_node}-{(node + 1) * per_node - 1}")
    return lines


def _mem(kib: int) -> list[str]:
    return [f"MemTotal:       {kib} kB", f"MemAvailable:   {kib * 9 // 10} kB"]


def _df(free_kib: int, path: str = "/var/lib/tierfleet/models") -> list[str]:
    return [
        f"path={path}",
        "measured=/var/lib",
        "Filesystem     1024-blocks     Used Available Capacity Mounted on",
        f"/dev/nvme0n1p2  {free_kib * 2} {free_kib} {free_kib}      50% /",
    ]


UBUNTU = ['PRETTY_NAME="Ubuntu 22.04.5 LTS"', "ID=ubuntu", 'VERSION_ID="22.04"', "ARCH=x86_64"]
UBUNTU_ARM = ['PRETTY_NAME="Ubuntu 22.04.5 LTS"', "ID=ubuntu", 'VERSION_ID="22.04"', "ARCH=aarch64"]
NO_SMI = ["##no nvidia-smi##"]
T4_LINE = "0, Tesla T4, 15360, 7.5, 570.172.08, Disabled, 70.00, 70.00, 60.00, 70.00, 1590, [N/A]"
A100_LINE = "0, NVIDIA A100-SXM4-40GB, 40960, 8.0, 570.172.08, Enabled, 400.00, 400.00, 100.00, 400.00, 1410, Disabled"

HOSTS: dict[str, dict[str, list[str]]] = {
    # Orin Nano 8GB Super, JetPack 6.2: 6 cores, 7.4 GiB unified -> basic fits, advanced refused (cores)
    "orin-nano": {
        "jetson": _spec("jetson.Jetson", "orin_nano_super_jp62"),
        "gpus": NO_SMI,
        "topology": _topology(6),
        "isa": _spec("cpu.CpuIsa", "orin_cortex_a78ae"),
        "meminfo": _mem(7_802_576),
        "disk": _df(50_000_000),
        "os": UBUNTU_ARM,
        "power": ["cpufreq", "nvpmodel", "jetson_clocks", "devfreq"],
    },
    # Jetson Nano 4GB, JetPack 4.6.6: 4 cores, 3.9 GiB -> basic fits, advanced refused
    "nano": {
        "jetson": _spec("jetson.Jetson", "nano_jp466"),
        "gpus": NO_SMI,
        "topology": _topology(4),
        "isa": _spec("cpu.CpuIsa", "jetson_nano_cortex_a57"),
        "meminfo": _spec("system.MemInfo", "jetson_nano_4gb"),
        "disk": _df(20_000_000),
        "os": ['PRETTY_NAME="Ubuntu 18.04.6 LTS"', "ID=ubuntu", "ARCH=aarch64"],
        "power": ["cpufreq", "nvpmodel", "jetson_clocks", "devfreq"],
    },
    # 8-core/16-thread node with a T4 and 32 GiB (33.6 GB) -> advanced fits, enterprise refused (cores; its RAM,
    # 33.6 GB against 32, passes)
    "gpu-t4": {
        "gpus": [T4_LINE],
        "pci_gpus": ["3b:00.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)"],
        "driver_loaded": ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 17:39:21 UTC 2025"],
        "topology": _topology(8, smt=True),
        "isa": _spec("cpu.CpuIsa", "h200_host_xeon_avx512"),
        "meminfo": _mem(32_827_264),
        "disk": _df(400_000_000),
        "os": UBUNTU,
        "power": ["cpufreq", "rapl", "nvml"],
    },
    # 32-core A100 node, 256 GB -> enterprise fits
    "gpu-a100": {
        "gpus": [A100_LINE],
        "driver_loaded": ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 17:39:21 UTC 2025"],
        "topology": _topology(32, smt=True, nodes=2),
        "isa": _spec("cpu.CpuIsa", "h200_host_xeon_avx512"),
        "meminfo": _mem(263_839_128),
        "disk": _df(1_500_000_000),
        "os": UBUNTU,
        "power": ["cpufreq", "epp", "rapl", "nvml"],
    },
    # A GPU node before the driver is installed: lspci only
    "gpu-nodriver": {
        "gpus": NO_SMI,
        "pci_gpus": ["17:00.0 3D controller: NVIDIA Corporation GA100 [A100 SXM4 40GB] (rev a1)"],
        "topology": _topology(32, smt=True),
        "isa": _spec("cpu.CpuIsa", "h200_host_xeon_avx512"),
        "meminfo": _mem(263_839_128),
        "disk": _df(1_500_000_000),
        "os": UBUNTU,
    },
    # 16-core/32-thread CPU server, 64 GB -> enterprise fits on the CPU
    "cpu-server": {
        "gpus": NO_SMI,
        "topology": _topology(16, smt=True),
        "isa": _spec("cpu.CpuIsa", "h200_host_xeon_avx512"),
        "cpufreq": _spec("cpu.CpuFreq", "intel_pstate_epp"),
        "meminfo": _mem(65_652_224),
        "disk": _df(800_000_000),
        "os": UBUNTU,
        "power": ["cpufreq", "epp", "rapl"],
    },
    # 2 cores, 4 GB: refused everywhere
    "cpu-small": {
        "gpus": NO_SMI,
        "topology": _topology(2),
        "isa": _spec("cpu.CpuIsa", "h200_host_xeon_avx512"),
        "meminfo": _mem(4_000_000),
        "disk": _df(900_000),
        "os": UBUNTU,
    },
}


def fake_responses(kind: str) -> dict[str, list[str]]:
    """``fake_responses`` host data for pyinfra's ``@fake`` connector."""
    return {MATCHERS[key]: lines for key, lines in HOSTS[kind].items()}


def facts_for(kind: str) -> dict[str, object]:
    """Parse a host's outputs with the real facts, as pyinfra would (no output -> the fact's default)."""
    facts: dict[str, object] = {}
    for key, (fact, _) in FACTS.items():
        lines = HOSTS[kind].get(key, [])
        facts[key] = fact().process(lines) if lines else fact().default()
    return facts


def fake_inventory(path: Path, hosts: dict[str, tuple[str, dict]]) -> Path:
    """Write a pyinfra inventory file of ``@fake`` hosts: ``{name: (kind, extra data)}``."""
    entries = [
        (f"@fake/{name}", {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": fake_responses(kind), **data})
        for name, (kind, data) in hosts.items()
    ]
    path.write_text(f"import json\nhosts = [tuple(h) for h in json.loads({json.dumps(json.dumps(entries))})]\n")
    return path
