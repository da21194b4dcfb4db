"""tierfleet's placement rule for the Ansible side of the benchmark: the same parser and rule as the deploy.

``topology.stdout_lines | tierfleet_placement(reserve)`` reads the lines of the CPU topology files and
``Cpus_allowed_list`` (the commands of :class:`tierfleet.facts.cpu.CpuTopology` and ``AllowedCpus``) and
returns ``{"threads": int, "cpus": [int, ...]}`` as :func:`tierfleet.placement.place` decides.
"""

from tierfleet.facts.cpu import parse_allowed, parse_topology
from tierfleet.placement import place


def tierfleet_placement(lines, reserve=2):
    allowed = [line for line in lines if line.startswith("Cpus_allowed_list")]
    topology = parse_topology([line for line in lines if not line.startswith("Cpus_allowed_list")])
    chosen = place(topology, parse_allowed(allowed), int(reserve))
    return {"threads": chosen.threads, "cpus": list(chosen.cpus)}


class FilterModule:
    def filters(self):
        return {"tierfleet_placement": tierfleet_placement}
