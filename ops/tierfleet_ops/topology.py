"""CPU topology from sysfs and the choice of OS-reserved and inference cores.

The rule (:func:`choose_cores`), in the kubelet static CPU manager's spirit:

1. Only CPUs that are online *and* allowed to this process (its affinity / cgroup cpuset) count:
   a recorded 16-CPU topology on a 2-CPU host is first cut down to what the kernel allows.
2. CPUs are grouped into physical cores by ``core_cpus_list`` (SMT siblings stay together).
3. The OS gets whole cores, lowest-numbered first: on hybrid parts the E/LITTLE cores (Intel
   ``cpu_atom``, or ``cpu_capacity`` below the maximum) first, otherwise cores in NUMA node 0.
4. Inference gets the rest; on multi-NUMA hosts (``numa="single"``) only the node with the most
   remaining CPUs, so its memory stays local. CPUs left over go to the OS side.
5. Too few cores: at least half the cores stay with inference, so 4+ cores reserve 2, 2-3 cores
   reserve 1, and a single core with SMT gives the OS one sibling; a single-thread host reserves
   nothing. Every degraded choice adds a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sysfs import Sysfs, format_cpulist, parse_cpulist

CPU = "devices/system/cpu"


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


def read_topology(sysfs: Sysfs) -> Topology:
    """Read ``/sys/devices/system/cpu`` and ``/sys/devices/system/node``."""
    present = parse_cpulist(sysfs.read(f"{CPU}/present") or sysfs.read(f"{CPU}/possible") or "0")
    online = parse_cpulist(sysfs.read(f"{CPU}/online") or format_cpulist(present))
    node_of: dict[int, int] = {}
    for n in sysfs.listdir("devices/system/node"):
        if n.startswith("node") and n[4:].isdigit():
            for c in parse_cpulist(sysfs.read(f"devices/system/node/{n}/cpulist") or ""):
                node_of[c] = int(n[4:])
    atoms = set(parse_cpulist(sysfs.read("devices/cpu_atom/cpus") or ""))
    cpus: dict[int, Cpu] = {}
    for c in present:
        t = f"{CPU}/cpu{c}/topology"
        sib = sysfs.read(f"{t}/core_cpus_list") or sysfs.read(f"{t}/thread_siblings_list") or str(c)
        pkg = sysfs.read(f"{t}/physical_package_id")
        cap = sysfs.read(f"{CPU}/cpu{c}/cpu_capacity")
        cpus[c] = Cpu(c, tuple(parse_cpulist(sib)), int(pkg) if pkg and pkg.lstrip("-").isdigit() else 0,
                      node_of.get(c, 0), int(cap) if cap and cap.isdigit() else 1024, c in atoms)
    return Topology(cpus, [c for c in online if c in cpus])


@dataclass
class Placement:
    """Which CPUs the OS keeps and which the inference runtime gets."""

    reserved: list[int]
    inference: list[int]
    os_side: list[int]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"reserved": format_cpulist(self.reserved), "inference": format_cpulist(self.inference),
                "os": format_cpulist(self.os_side), "warnings": self.warnings}


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
        return Placement([], [], [], warnings + ["no usable CPUs"])
    cores = topo.cores(usable)
    n = len(cores)
    want = min(reserve, n // 2)
    if want < reserve:
        warnings.append(f"only {n} physical core(s): reserving {want} for the OS instead of {reserve}")

    max_cap = max(topo.cpus[c].capacity for c in usable)

    def os_rank(core: tuple[int, ...]) -> tuple[int, int, int]:
        cpu = topo.cpus[core[0]]
        little = cpu.efficiency or cpu.capacity < max_cap
        return (0 if little else 1, cpu.node, core[0])

    by_pref = sorted(cores, key=os_rank)
    reserved_cores = by_pref[:want]
    reserved = sorted(c for core in reserved_cores for c in core)
    if want == 0 and reserve > 0:
        if len(cores) == 1 and len(cores[0]) >= 2:
            reserved = [cores[0][0]]
            warnings.append("single core: the OS gets one SMT sibling, inference the other(s)")
        else:
            warnings.append("a single CPU: nothing reserved, the OS and inference share it")
    rest = sorted(usable - set(reserved))
    if not rest:
        rest = sorted(usable)
    nodes = sorted({topo.cpus[c].node for c in rest})
    inference = rest
    if numa == "single" and len(nodes) > 1:
        counts = {nd: sum(1 for c in rest if topo.cpus[c].node == nd) for nd in nodes}
        best = max(nodes, key=lambda nd: (counts[nd], -nd))
        inference = [c for c in rest if topo.cpus[c].node == best]
        warnings.append(f"{len(nodes)} NUMA nodes: inference kept inside node {best}")
    os_side = sorted(usable - set(inference)) or sorted(usable)
    return Placement(reserved, inference, os_side, warnings)
