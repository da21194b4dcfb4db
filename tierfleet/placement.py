"""Where llama-server runs on a host: the inference cores and the thread count, from the host's facts.

The rule is the ops daemon's own (:func:`tierfleet_ops.topology.choose_cores`: two physical cores for the
OS, LITTLE cores and NUMA node 0 first, degrade on small hosts), applied here to the facts so the unit's
``--threads`` and ``CPUAffinity=`` agree with what the daemon will pin.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierfleet.facts.cpu import CpuTopologyInfo


@dataclass(frozen=True)
class Placement:
    """Inference CPUs (logical), llama-server threads (one per physical core) and any warnings."""

    cpus: tuple[int, ...]
    threads: int
    reserved: tuple[int, ...]
    warnings: tuple[str, ...]


def place(topology: CpuTopologyInfo | None, allowed: list[int] | None, reserve: int = 2) -> Placement:
    """Split a host's CPUs between the OS and inference.

    >>> topo = {"online": list(range(16)), "cores": [[c, c + 8] for c in range(8)], "packages": 1,
    ...         "numa_nodes": {0: list(range(16))}, "capacity": {}, "smt": True}
    >>> p = place(topo, None)
    >>> p.threads, p.reserved, p.cpus[:4]
    (6, (0, 1, 8, 9), (2, 3, 4, 5))
    """
    from tierfleet_ops.topology import Cpu, Topology, choose_cores

    if not topology:
        return Placement((), 1, (), ("CPU topology unknown: one thread, no affinity",))
    node_of = {cpu: node for node, cpus in topology["numa_nodes"].items() for cpu in cpus}
    capacity = topology["capacity"]
    cpus = {
        cpu: Cpu(id=cpu, siblings=tuple(core), node=int(node_of.get(cpu, 0)), capacity=capacity.get(cpu, 1024))
        for core in topology["cores"]
        for cpu in core
    }
    topo = Topology(cpus=cpus, online=sorted(cpus))
    choice = choose_cores(topo, reserve=reserve, allowed=set(allowed) if allowed is not None else None)
    inference = tuple(choice.inference)
    threads = max(1, len(topo.cores(set(inference)))) if inference else 1
    return Placement(inference, threads, tuple(choice.reserved), tuple(choice.warnings))
