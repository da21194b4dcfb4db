"""CPU facts: topology (physical cores, SMT siblings, NUMA, big.LITTLE), ISA flags, cpufreq."""

from __future__ import annotations

import re
from typing import NotRequired, TypedDict

from pyinfra.api import FactBase
from tierfleet_ops.topology import efficiency_cpus

from tierfleet.facts._util import parse_cpu_list, parse_grep_h, to_int

SYS_CPU = "/sys/devices/system/cpu"
SYS_DEVICES = "/sys/devices"
# ASCII digits only (``\d`` also matches other scripts' digits, and int() reads them), bounded like CPU numbers
_CPU_FILE_RE = re.compile(r"^/sys/devices/system/cpu/cpu(?P<cpu>[0-9]{1,5})/(?:topology/)?(?P<file>[a-z_]+)$")
_NODE_RE = re.compile(r"^/sys/devices/system/node/node(?P<node>[0-9]{1,5})/cpulist$")


class CpuTopologyInfo(TypedDict):
    online: list[int]
    #: physical cores, each the sorted list of its online logical CPUs (SMT siblings)
    cores: list[list[int]]
    packages: int
    numa_nodes: dict[int, list[int]]
    #: ``cpu_capacity`` per CPU on big.LITTLE parts (1024 = biggest), empty elsewhere
    capacity: dict[int, int]
    smt: bool
    #: Intel hybrid E-cores (``/sys/devices/cpu_atom/cpus``, or left out of ``cpu_core/cpus``); only on hybrid parts
    efficiency: NotRequired[list[int]]
    #: CPUs the hardware has (``present``), online or not; absent when ``present`` is unreadable
    present: NotRequired[list[int]]
    #: physical cores whose CPUs are all offline (a Jetson power mode, hotplug): hardware the host has
    offline_cores: NotRequired[int]


def parse_topology(lines: list[str]) -> CpuTopologyInfo | None:
    """Parse ``grep -s -H .`` over the CPU topology files; ``None`` if ``online`` is unreadable.

    >>> topo = parse_topology([
    ...     "/sys/devices/system/cpu/online:0-3",
    ...     "/sys/devices/system/cpu/cpu0/topology/core_cpus_list:0,2",
    ...     "/sys/devices/system/cpu/cpu1/topology/core_cpus_list:1,3",
    ...     "/sys/devices/system/cpu/cpu2/topology/core_cpus_list:0,2",
    ...     "/sys/devices/system/cpu/cpu3/topology/core_cpus_list:1,3",
    ... ])
    >>> topo["cores"], topo["smt"]
    ([[0, 2], [1, 3]], True)
    """
    values = parse_grep_h(lines)
    online = parse_cpu_list(values.get(f"{SYS_CPU}/online"))
    if not online:
        return None

    per_cpu: dict[int, dict[str, str]] = {}
    numa: dict[int, list[int]] = {}
    for path, value in values.items():
        if match := _CPU_FILE_RE.match(path):
            per_cpu.setdefault(int(match["cpu"]), {})[match["file"]] = value
        elif match := _NODE_RE.match(path):
            numa[int(match["node"])] = parse_cpu_list(value) or []

    online_set = set(online)
    cores: set[tuple[int, ...]] = set()
    packages: set[str] = set()
    capacity: dict[int, int] = {}
    for cpu in online:
        files = per_cpu.get(cpu, {})
        siblings = parse_cpu_list(files.get("core_cpus_list") or files.get("thread_siblings_list"))
        siblings = [s for s in (siblings or [cpu]) if s in online_set] or [cpu]
        cores.add(tuple(siblings))
        packages.add(files.get("physical_package_id", "0"))
        cap = to_int(files.get("cpu_capacity"))
        if cap is not None:
            capacity[cpu] = cap

    core_lists = sorted(list(core) for core in cores)
    info = CpuTopologyInfo(
        online=online,
        cores=core_lists,
        packages=len(packages),
        numa_nodes=dict(sorted(numa.items())),
        capacity=capacity if len(set(capacity.values())) > 1 else {},
        smt=any(len(core) > 1 for core in core_lists),
    )
    present = parse_cpu_list(values.get(f"{SYS_CPU}/present"))
    if present:
        info["present"] = sorted(set(present) | online_set)
        info["offline_cores"] = _offline_cores(sorted(set(present) - online_set), per_cpu, core_lists)
    slow = efficiency_cpus(parse_cpu_list(values.get(f"{SYS_DEVICES}/cpu_atom/cpus")) or [],
                           parse_cpu_list(values.get(f"{SYS_DEVICES}/cpu_core/cpus")) or [], online)
    if slow:
        info["efficiency"] = sorted(slow)
    return info


def _offline_cores(offline: list[int], per_cpu: dict[int, dict[str, str]], online_cores: list[list[int]]) -> int:
    """Physical cores among present-but-offline CPUs that no online core holds.

    An offline CPU's sibling list groups it where the kernel still shows one; the kernel removes an offline CPU's
    ``topology`` directory, so the rest count as cores of the online cores' width (one thread without SMT).

    >>> _offline_cores([2, 3], {}, [[0], [1]]), _offline_cores([2, 3, 6, 7], {}, [[0, 4], [1, 5]])
    (2, 2)
    >>> _offline_cores([2, 3], {0: {"core_cpus_list": "0,2"}, 1: {"core_cpus_list": "1,3"}}, [[0], [1]])
    0
    """
    held = {cpu for core in online_cores for cpu in core}
    for cpu in held.copy():  # an offline SMT thread of an online core is no core of its own
        files = per_cpu.get(cpu, {})
        held.update(parse_cpu_list(files.get("core_cpus_list") or files.get("thread_siblings_list")) or [])
    left = set(offline) - held
    cores: set[tuple[int, ...]] = set()
    loose: set[int] = set()
    for cpu in sorted(left):
        files = per_cpu.get(cpu, {})
        siblings = [s for s in parse_cpu_list(files.get("core_cpus_list") or files.get("thread_siblings_list")) or []
                    if s in left]
        if cpu in siblings:
            cores.add(tuple(siblings))
        else:
            loose.add(cpu)
    loose -= {cpu for core in cores for cpu in core}
    width = max((len(core) for core in online_cores), default=1)
    return len(cores) + -(-len(loose) // width)


class CpuTopology(FactBase[CpuTopologyInfo | None]):
    """Online CPUs grouped into physical cores, packages, NUMA nodes and (big.LITTLE) capacities, and the cores
    a power mode has taken offline.

    Reads ``/sys/devices/system/cpu/{online,present}``, ``cpuN/topology/{core_cpus_list,thread_siblings_list,
    physical_package_id}``, ``cpuN/cpu_capacity``, ``/sys/devices/system/node/nodeN/cpulist`` and, on Intel
    hybrid parts, ``/sys/devices/{cpu_atom,cpu_core}/cpus`` (E-cores as the ops daemon's
    :func:`tierfleet_ops.topology.efficiency_cpus` reads them).
    """

    def command(self) -> str:
        return (
            f"grep -s -H . {SYS_CPU}/online {SYS_CPU}/present "
            f"{SYS_CPU}/cpu[0-9]*/topology/core_cpus_list {SYS_CPU}/cpu[0-9]*/topology/thread_siblings_list "
            f"{SYS_CPU}/cpu[0-9]*/topology/physical_package_id {SYS_CPU}/cpu[0-9]*/cpu_capacity "
            f"/sys/devices/system/node/node[0-9]*/cpulist {SYS_DEVICES}/cpu_atom/cpus {SYS_DEVICES}/cpu_core/cpus; true"
        )

    def process(self, output: list[str]) -> CpuTopologyInfo | None:
        return parse_topology(output)


class CpuIsaInfo(TypedDict):
    model: str | None
    flags: list[str]
    #: runtime build variant this CPU can run: ``avx512``, ``avx2``, ``neon`` or ``generic``
    variant: str


#: what the x86-64 AVX2 build uses (x86-64-v3: :data:`tierfleet.artifacts.llama_build.X86_64_FEATURES`); a CPU
#: (or a hypervisor's CPU model) lacking any of them gets the generic build instead of dying with SIGILL
X86_64_V3 = frozenset({"sse4_2", "avx", "avx2", "bmi2", "fma", "f16c"})


def isa_variant(flags: set[str]) -> str:
    """Pick the llama.cpp CPU build variant for a set of ``/proc/cpuinfo`` flags.

    ``avx512`` and ``avx2`` (both run the x86-64-v3 build) need every flag of :data:`X86_64_V3`.

    >>> v3 = {"sse4_2", "avx", "avx2", "bmi2", "fma", "f16c"}
    >>> isa_variant(v3 | {"avx512f"}), isa_variant(v3), isa_variant({"asimd"}), isa_variant(set())
    ('avx512', 'avx2', 'neon', 'generic')
    >>> isa_variant(v3 - {"fma"}), isa_variant({"avx512f"})
    ('generic', 'generic')
    """
    if X86_64_V3 <= flags:
        return "avx512" if "avx512f" in flags else "avx2"
    if "asimd" in flags or "neon" in flags:
        return "neon"
    return "generic"


def parse_cpuinfo(lines: list[str]) -> CpuIsaInfo:
    """Parse the ``flags``/``Features`` and ``model name`` lines of ``/proc/cpuinfo``.

    >>> info = parse_cpuinfo(["Features\\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics", "CPU part\\t: 0xd42"])
    >>> info["variant"], info["model"]
    ('neon', None)
    """
    flags: list[str] = []
    model = None
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = value.split()
        elif key == "model name" and model is None:
            model = value.strip() or None
    return CpuIsaInfo(model=model, flags=flags, variant=isa_variant(set(flags)))


class CpuIsa(FactBase[CpuIsaInfo]):
    """CPU model and ISA flags from ``/proc/cpuinfo``, and the runtime variant they allow."""

    @staticmethod
    def default() -> CpuIsaInfo:
        return CpuIsaInfo(model=None, flags=[], variant="generic")

    def command(self) -> str:
        return "grep -m 1 -E '^(flags|Features)' /proc/cpuinfo; grep -m 1 '^model name' /proc/cpuinfo; true"

    def process(self, output: list[str]) -> CpuIsaInfo:
        return parse_cpuinfo(output)


class CpuFreqInfo(TypedDict):
    driver: str | None
    governors: list[str]
    #: per policy: ``{"governor": ..., "epp": ..., "cpus": [...]}``
    policies: dict[int, dict[str, str]]
    epp_available: list[str]
    intel_pstate: str | None


_POLICY_RE = re.compile(r"^/sys/devices/system/cpu/cpufreq/policy(?P<n>[0-9]{1,5})/(?P<file>[a-z_]+)$")
CPUFREQ_FILES = (
    "scaling_driver",
    "scaling_governor",
    "scaling_available_governors",
    "energy_performance_preference",
    "energy_performance_available_preferences",
    "affected_cpus",
)


def parse_cpufreq(lines: list[str]) -> CpuFreqInfo | None:
    """Parse ``grep -s -H .`` over the cpufreq policy files; ``None`` when there is no cpufreq.

    >>> info = parse_cpufreq([
    ...     "/sys/devices/system/cpu/cpufreq/policy0/scaling_driver:intel_pstate",
    ...     "/sys/devices/system/cpu/cpufreq/policy0/scaling_available_governors:performance powersave",
    ...     "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor:powersave",
    ... ])
    >>> info["driver"], info["governors"], info["policies"][0]["governor"]
    ('intel_pstate', ['performance', 'powersave'], 'powersave')
    """
    values = parse_grep_h(lines)
    policies: dict[int, dict[str, str]] = {}
    for path, value in values.items():
        if match := _POLICY_RE.match(path):
            policies.setdefault(int(match["n"]), {})[match["file"]] = value
    if not policies:
        return None
    first = policies[min(policies)]
    return CpuFreqInfo(
        driver=first.get("scaling_driver"),
        governors=first.get("scaling_available_governors", "").split(),
        policies={
            n: {
                "governor": p.get("scaling_governor", ""),
                "epp": p.get("energy_performance_preference", ""),
                "cpus": p.get("affected_cpus", ""),
            }
            for n, p in sorted(policies.items())
        },
        epp_available=first.get("energy_performance_available_preferences", "").split(),
        intel_pstate=values.get(f"{SYS_CPU}/intel_pstate/status"),
    )


class CpuFreq(FactBase[CpuFreqInfo | None]):
    """cpufreq driver, available governors and per-policy governor/EPP; ``None`` without cpufreq."""

    def command(self) -> str:
        files = " ".join(f"{SYS_CPU}/cpufreq/policy[0-9]*/{name}" for name in CPUFREQ_FILES)
        return f"grep -s -H . {files} {SYS_CPU}/intel_pstate/status; true"

    def process(self, output: list[str]) -> CpuFreqInfo | None:
        return parse_cpufreq(output)


def parse_allowed(lines: list[str]) -> list[int] | None:
    """Parse the ``Cpus_allowed_list`` line of ``/proc/self/status``.

    >>> parse_allowed(["Cpus_allowed_list:\t0-1"])
    [0, 1]
    """
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Cpus_allowed_list":
            return parse_cpu_list(value)
    return None


class AllowedCpus(FactBase[list[int] | None]):
    """CPUs the kernel lets a process of this host run on (``Cpus_allowed_list``), the ground truth for
    affinity masks: inside a container it can be narrower than the topology under ``/sys``."""

    def command(self) -> str:
        return "grep '^Cpus_allowed_list' /proc/self/status; true"

    def process(self, output: list[str]) -> list[int] | None:
        return parse_allowed(output)
