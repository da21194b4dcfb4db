"""CPU topology from sysfs and the choice of OS-reserved and inference cores.

The rule (:func:`choose_cores`), in the kubelet static CPU manager's spirit. The control side
(``tierfleet.placement``) applies the same function to its facts, so the llama-server unit's
``CPUAffinity=``/``--threads`` and the daemon's pinning agree:

1. Only CPUs that are online *and* allowed to this process (its affinity / cgroup cpuset) count:
   a recorded 16-CPU topology on a 2-CPU host is first cut down to what the kernel allows.
2. CPUs are grouped into physical cores by ``core_cpus_list`` (``thread_siblings_list`` on
   kernels before 5.x, e.g. the Jetson Nano's 4.9): SMT siblings stay together.
3. Fast cores (:func:`fast_cores`): llama.cpp's threads meet at a barrier every token, so the
   slowest core sets the pace. Intel hybrid E-cores (:func:`efficiency_cpus`: ``cpu_atom/cpus``,
   or not in ``cpu_core/cpus``) are never fast while a P-core is usable; among the rest, the
   ``cpu_capacity`` class is chosen whose cores x capacity (the pace of its slowest member) is
   largest: big cores only on big.LITTLE (4 x 1024 > 8 x 414).
4. The OS gets whole cores, slow ones first (E/LITTLE), then cores in NUMA node 0,
   lowest-numbered first.
5. Inference gets the remaining fast cores, and only those; on multi-NUMA hosts
   (``numa="single"``) only the node with the most of them, so its memory stays local. CPUs
   left over (slow cores, the other node) go to the OS side. ``threads`` is the number of
   physical cores inference gets: one llama.cpp thread per fast physical core.
6. Too few cores: at least half the cores stay with inference, so 4+ cores reserve 2, 2-3 cores
   reserve 1, and a single core with SMT gives the OS one sibling; a single-thread host reserves
   nothing. Every degraded choice adds a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .sysfs import Sysfs, format_cpulist, parse_cpulist

CPU = "devices/system/cpu"
_INT_RE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Cpu:
    """One logical CPU: its SMT siblings, package, NUMA node and relative capacity."""

    id: int
    siblings: tuple[int, ...]
    package: int = 0
    node: int = 0
    capacity: int = 1024
    efficiency: bool = False


@dataclass
class Topology:
    cpus: dict[int, Cpu]
    online: list[int]

    def cores(self, cpus: set[int] | None = None) -> list[tuple[int, ...]]:
        """Physical cores (sibling tuples restricted to ``cpus``), by lowest CPU number."""
        use = set(self.online) if cpus is None else set(cpus) & set(self.online)
        seen: dict[tuple[int, ...], None] = {}
        for c in sorted(use):
            sib = tuple(s for s in self.cpus[c].siblings if s in use) or (c,)
            seen.setdefault(sib, None)
        return sorted(seen, key=min)


def _int(text: str | None, default: int) -> int:
    """A non-negative sysfs integer, or ``default`` when the file is missing, not a number or ``-1``
    (unknown: older arm64 kernels report ``physical_package_id`` -1)."""
    text = (text or "").strip()
    return int(text) if _INT_RE.fullmatch(text) else default


def efficiency_cpus(atom_cpus: Iterable[int], core_cpus: Iterable[int], cpus: Iterable[int]) -> set[int]:
    """Intel hybrid E-cores, from the hybrid PMUs' CPU lists (``/sys/devices/cpu_atom/cpus``,
    ``/sys/devices/cpu_core/cpus``, parsed): every CPU in ``cpu_atom``, and, where ``cpu_core``
    lists CPUs, every one of ``cpus`` it leaves out (low-power E-cores that newer kernels give a
    PMU of their own). Empty on non-hybrid parts, which have neither list.

    >>> sorted(efficiency_cpus(range(12, 20), range(12), range(20)))
    [12, 13, 14, 15, 16, 17, 18, 19]
    >>> sorted(efficiency_cpus(range(4, 8), range(4), range(10)))
    [4, 5, 6, 7, 8, 9]
    >>> efficiency_cpus([], range(12), range(12)), efficiency_cpus([], [], range(4))
    (set(), set())
    """
    slow = set(atom_cpus)
    big = set(core_cpus)
    if big:
        slow |= {c for c in cpus if c not in big}
    return slow


def read_topology(sysfs: Sysfs) -> Topology:
    """Read ``/sys/devices/system/cpu``, ``/sys/devices/system/node`` and the hybrid PMUs' lists.

    Fallbacks, for older kernels and partial trees: ``present`` -> ``possible`` -> CPU 0;
    ``online`` -> every present CPU; ``core_cpus_list`` -> ``thread_siblings_list`` (kernels
    before 5.x, e.g. the Jetson Nano's 4.9) -> the CPU alone; ``physical_package_id`` -> 0;
    ``cpu_capacity`` -> 1024 (every CPU equally fast).
    """
    present = parse_cpulist(sysfs.read(f"{CPU}/present") or sysfs.read(f"{CPU}/possible") or "0")
    online = parse_cpulist(sysfs.read(f"{CPU}/online") or format_cpulist(present))
    node_of: dict[int, int] = {}
    for n in sysfs.listdir("devices/system/node"):
        if n.startswith("node") and n[4:].isdigit():
            for c in parse_cpulist(sysfs.read(f"devices/system/node/{n}/cpulist") or ""):
                node_of[c] = int(n[4:])
    slow = efficiency_cpus(parse_cpulist(sysfs.read("devices/cpu_atom/cpus") or ""),
                           parse_cpulist(sysfs.read("devices/cpu_core/cpus") or ""), present)
    cpus: dict[int, Cpu] = {}
    for c in present:
        t = f"{CPU}/cpu{c}/topology"
        sib = sysfs.read(f"{t}/core_cpus_list") or sysfs.read(f"{t}/thread_siblings_list") or str(c)
        cap = _int(sysfs.read(f"{CPU}/cpu{c}/cpu_capacity"), 1024)
        cpus[c] = Cpu(c, tuple(parse_cpulist(sib)), _int(sysfs.read(f"{t}/physical_package_id"), 0),
                      node_of.get(c, 0), cap if cap > 0 else 1024, c in slow)
    return Topology(cpus, [c for c in online if c in cpus])


def fast_cores(topo: Topology, cores: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The cores inference should get: the fastest class that gives the most speed in step.

    llama.cpp's threads meet at a barrier every token, so a set of cores runs at the pace of its
    slowest member: its worth is ``len(set) * min(capacity)``. Intel E-cores are left out while a
    P-core exists (x86 has no ``cpu_capacity``); among the others the capacity threshold with the
    largest worth wins (ties: the fewer, faster cores).

    >>> t = Topology({c: Cpu(c, (c,), capacity=414 if c >= 4 else 1024) for c in range(8)}, list(range(8)))
    >>> fast_cores(t, t.cores())
    [(0,), (1,), (2,), (3,)]
    """
    candidates = [core for core in cores if not any(topo.cpus[c].efficiency for c in core)] or cores

    def capacity(core: tuple[int, ...]) -> int:
        return min(topo.cpus[c].capacity for c in core)

    levels = sorted({capacity(core) for core in candidates}, reverse=True)
    best = max(levels, key=lambda cap: (cap * sum(1 for core in candidates if capacity(core) >= cap), cap))
    return [core for core in candidates if capacity(core) >= best]


@dataclass
class Placement:
    """Which CPUs the OS keeps and which the inference runtime gets."""

    reserved: list[int]
    inference: list[int]
    os_side: list[int]
    warnings: list[str] = field(default_factory=list)
    #: llama.cpp threads for ``inference``: one per physical core in it
    threads: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"reserved": format_cpulist(self.reserved), "inference": format_cpulist(self.inference),
                "os": format_cpulist(self.os_side), "threads": self.threads, "warnings": self.warnings}


def choose_cores(topo: Topology, reserve: int = 2, allowed: set[int] | None = None,
                 numa: str = "single") -> Placement:
    """Split the usable CPUs into OS-reserved and inference cores (rule in the module docstring)."""
    warnings: list[str] = []
    usable = set(topo.online)
    if allowed is not None:
        outside = usable - set(allowed)
        if outside:
            warnings.append(f"CPUs {format_cpulist(outside)} are in the topology but not allowed here; "
                            f"choosing within {format_cpulist(usable & set(allowed))}")
        usable &= set(allowed)
    if not usable:
        return Placement([], [], [], warnings + ["no usable CPUs"], threads=0)
    cores = topo.cores(usable)
    n = len(cores)
    want = min(reserve, n // 2)
    if want < reserve:
        warnings.append(f"only {n} physical core(s): reserving {want} for the OS instead of {reserve}")

    fast = {c for core in fast_cores(topo, cores) for c in core}

    def os_rank(core: tuple[int, ...]) -> tuple[int, int, int]:
        return (1 if core[0] in fast else 0, topo.cpus[core[0]].node, core[0])

    by_pref = sorted(cores, key=os_rank)
    reserved_cores = by_pref[:want]
    reserved = sorted(c for core in reserved_cores for c in core)
    if want == 0 and reserve > 0:
        if len(cores) == 1 and len(cores[0]) >= 2:
            reserved = [cores[0][0]]
            warnings.append("single core: the OS gets one SMT sibling, inference the other(s)")
        else:
            warnings.append("a single CPU: nothing reserved, the OS and inference share it")
    rest = sorted(usable - set(reserved))  # never empty: at most half the cores, or one SMT sibling, are reserved
    inference = [c for c in rest if c in fast] or rest
    nodes = sorted({topo.cpus[c].node for c in inference})
    if numa == "single" and len(nodes) > 1:
        counts = {nd: sum(1 for c in inference if topo.cpus[c].node == nd) for nd in nodes}
        best = max(nodes, key=lambda nd: (counts[nd], -nd))
        inference = [c for c in inference if topo.cpus[c].node == best]
        warnings.append(f"{len(nodes)} NUMA nodes: inference kept inside node {best}")
    os_side = sorted(usable - set(inference)) or sorted(usable)
    return Placement(reserved, inference, os_side, warnings, threads=len(topo.cores(set(inference))))
