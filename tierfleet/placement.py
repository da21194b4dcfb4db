"""Where llama-server runs on a host: the inference cores and the thread count, from the host's facts.

The rule is the ops daemon's own, :func:`tierfleet_ops.topology.choose_cores` (two physical cores for the
OS, slow cores first; inference on the fast cores only, one thread per fast physical core; NUMA node 0 for
the OS; degrade on small hosts), applied here to the facts so the unit's ``--threads`` and
``CPUAffinity=`` are exactly what the daemon will pin. ``tierfleet-ops`` is a dependency of this package
for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierfleet_ops.topology import Cpu, Topology, choose_cores

from tierfleet.facts.cpu import CpuTopologyInfo


@dataclass(frozen=True)
class Placement:
    """Inference CPUs (logical), llama-server threads (one per physical core) and any warnings."""

    cpus: tuple[int, ...]
    threads: int
    reserved: tuple[int, ...]
    warnings: tuple[str, ...]


def topology_of(info: CpuTopologyInfo) -> Topology:
    """The ops daemon's :class:`~tierfleet_ops.topology.Topology` of a :class:`~tierfleet.facts.cpu.CpuTopology`
    fact: SMT siblings, NUMA nodes, ``cpu_capacity`` and Intel E-cores."""
    node_of = {cpu: node for node, cpus in info["numa_nodes"].items() for cpu in cpus}
    capacity = info["capacity"]
    slow = set(info.get("efficiency", ()))
    cpus = {
        cpu: Cpu(id=cpu, siblings=tuple(core), node=int(node_of.get(cpu, 0)), capacity=capacity.get(cpu, 1024),
                 efficiency=cpu in slow)
        for core in info["cores"]
        for cpu in core
    }
    return Topology(cpus=cpus, online=sorted(cpus))


def place(topology: CpuTopologyInfo | None, allowed: list[int] | None, reserve: int = 2) -> Placement:
    """Split a host's CPUs between the OS and inference.

    >>> topo = {"online": list(range(16)), "cores": [[c, c + 8] for c in range(8)], "packages": 1,
    ...         "numa_nodes": {0: list(range(16))}, "capacity": {}, "smt": True}
    >>> p = place(topo, None)
    >>> p.threads, p.reserved, p.cpus[:4]
    (6, (0, 1, 8, 9), (2, 3, 4, 5))
    >>> hybrid = {"online": list(range(20)), "packages": 1, "numa_nodes": {0: list(range(20))}, "capacity": {},
    ...           "cores": [[2 * k, 2 * k + 1] for k in range(6)] + [[c] for c in range(12, 20)], "smt": True,
    ...           "efficiency": list(range(12, 20))}
    >>> p = place(hybrid, None)
    >>> p.threads, p.reserved, p.cpus
    (6, (12, 13), (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11))
    """
    if not topology:
        return Placement((), 1, (), ("CPU topology unknown: one thread, no affinity",))
    choice = choose_cores(topology_of(topology), reserve=reserve,
                          allowed=set(allowed) if allowed is not None else None)
    return Placement(tuple(choice.inference), max(1, choice.threads), tuple(choice.reserved), tuple(choice.warnings))
