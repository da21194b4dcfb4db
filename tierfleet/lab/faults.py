"""The lab's faults: inject one into a host or the mirror, and undo what was recorded.

Each injected fault returns a record (kept in the state file by :class:`tierfleet.lab.fleet.Lab`)
that says how to undo it:

- ``stop`` / ``kill``: the host is halted in an orderly way / SIGKILLed (undone by starting it again);
- ``cut-ssh``: TCP resets for the host's SSH; ``blackhole``: its SSH packets dropped both ways
  (iptables rules in ``INPUT``, each tagged ``<lab id>:<host>:<kind>`` so a crashed run's rules are found too);
- ``fill-disk``: the host's model disk filled but for ``leave`` bytes (one file, removed on undo);
- ``mirror``: the mirror serves corrupted bytes, stops mid-file or crawls (:func:`tierfleet.lab.mirror.set_fault`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tierfleet.exceptions import ConfigError
from tierfleet.lab import mirror as lab_mirror
from tierfleet.lab.host import Host
from tierfleet.lab.system import run, which

FAULT_KINDS = ("stop", "kill", "cut-ssh", "blackhole", "fill-disk", "mirror")
SOURCE = "tierfleet lab fault"
FILL_FILE = ".tierfleet-lab-fill"


class Faults:
    """Faults of one lab (its state dir and id)."""

    def __init__(self, root: Path, lab_id: str) -> None:
        self.root = Path(root)
        self.lab_id = lab_id

    @staticmethod
    def check(kind: str, host: str | None) -> None:
        """Refuse an unknown kind, or a host fault without a host, before anything changes."""
        if kind not in FAULT_KINDS:
            raise ConfigError(SOURCE, "kind", f"{kind!r}; allowed: {', '.join(FAULT_KINDS)}")
        if kind != "mirror" and not host:
            raise ConfigError(SOURCE, "host", f"the {kind} fault needs a host name")

    def inject_mirror(self, mode: str = "corrupt", after: int = 1024, rate: int = 65536,
                      prefix: str = "/artifacts/") -> dict:
        return {"kind": "mirror", "host": None,
                "mirror": lab_mirror.set_fault(self.root, mode, after=after, rate=rate, prefix=prefix)}

    def inject(self, kind: str, host: Host, *, leave: int = 0) -> dict:
        """Inject a host fault; returns its record."""
        record: dict = {"kind": kind, "host": host.name}
        if kind == "stop":
            host.stop()
        elif kind == "kill":
            host.kill()
        elif kind in ("cut-ssh", "blackhole"):
            record["rules"] = self.rules(kind, host)
            for rule in record["rules"]:
                run(["iptables", "-w", "-I", *rule])
        elif kind == "fill-disk":
            record["file"] = self.fill(host, int(leave))
        return record

    def tag(self, host: str, kind: str) -> str:
        return f"{self.lab_id}:{host}:{kind}"

    def rules(self, kind: str, h: Host) -> list[list[str]]:
        """The iptables rules (``INPUT``) of a ``cut-ssh`` or ``blackhole`` fault."""
        tag = ["-m", "comment", "--comment", self.tag(h.name, kind)]
        if kind == "cut-ssh":
            return [["INPUT", "-d", f"{h.address}/32", "-p", "tcp", "--dport", "22", *tag, "-j", "REJECT",
                     "--reject-with", "tcp-reset"]]
        return [["INPUT", "-d", f"{h.address}/32", "-p", "tcp", "--dport", "22", *tag, "-j", "DROP"],
                ["INPUT", "-s", f"{h.address}/32", "-p", "tcp", "--sport", "22", *tag, "-j", "DROP"]]

    @staticmethod
    def fill(h: Host, leave: int) -> str:
        """Fill the host's model disk but for ``leave`` bytes (and 64 KiB of slack); returns the file."""
        st = os.statvfs(h.disk)
        free = st.f_bavail * st.f_frsize
        target = h.disk / FILL_FILE
        run(["fallocate", "-l", str(max(0, free - leave - 64 * 1024)), target])
        return str(target)

    def undo(self, records: list[dict]) -> list[str]:
        """Undo the records, newest first, and every rule or mirror fault of this lab left behind;
        returns the hosts that were stopped or killed (in the order faulted, once each)."""
        restart: list[str] = []
        for f in reversed(records):
            kind = f["kind"]
            if kind == "mirror":
                lab_mirror.clear_fault(self.root)
            elif kind in ("cut-ssh", "blackhole"):
                for rule in f.get("rules", []):
                    run(["iptables", "-w", "-D", *rule], check=False)
            elif kind == "fill-disk":
                Path(f["file"]).unlink(missing_ok=True)
            elif kind in ("stop", "kill") and f.get("host"):
                restart.append(f["host"])
        lab_mirror.clear_fault(self.root)
        self.delete_rules()
        return list(dict.fromkeys(restart))

    def delete_rules(self) -> None:
        """Remove every firewall rule this lab tagged (also ones a crashed run left behind)."""
        if not which("iptables"):
            return
        out = run(["iptables", "-w", "-S", "INPUT"], check=False).stdout.decode()
        for line in out.splitlines():
            if f"{self.lab_id}:" in line and line.startswith("-A "):
                run(["iptables", "-w", "-D", *shlex.split(line)[1:]], check=False)
