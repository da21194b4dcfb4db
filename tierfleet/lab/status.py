"""What ``tierfleet lab status`` shows: each host's profile, address, whether it runs, answers on
SSH, and the faults recorded against it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tierfleet.lab.host import Host

#: the row the mirror's faults are listed under (they have no host)
MIRROR_ROW = "(mirror)"


@dataclass
class HostStatus:
    name: str
    profile: str
    kind: str
    tier: str
    address: str
    running: bool
    ssh: bool
    faults: list[str]


def faults_by_host(records: list[dict]) -> dict[str, list[str]]:
    """Fault kinds per host name, in the order they were injected.

    >>> faults_by_host([{"kind": "stop", "host": "a"}, {"kind": "mirror", "host": None}])
    {'a': ['stop'], '(mirror)': ['mirror']}
    """
    out: dict[str, list[str]] = {}
    for f in records:
        out.setdefault(f.get("host") or MIRROR_ROW, []).append(f["kind"])
    return out


def host_statuses(hosts: list[Host], fault_records: list[dict]) -> list[HostStatus]:
    """Look at every host (its processes, then sshd's banner when it runs)."""
    faults = faults_by_host(fault_records)
    out = []
    for h in hosts:
        running = h.running()
        out.append(HostStatus(h.name, h.profile.name, h.profile.kind, h.profile.tier, h.address, running,
                              running and h.ssh_ready(), faults.get(h.name, [])))
    return out


def status_json(statuses: list[HostStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=1)
