"""The lab's SSH files: the client key, ``known_hosts`` and ``ssh_config`` (with connection sharing).

All under the state dir: ``id_ed25519`` (made once), ``known_hosts`` (each host's ed25519 key,
under its address and its name) and ``ssh_config`` (one block per host: root, that key only,
strict host key checking, ``ControlPath <state>/cm-%C``), so ``ssh -F <state>/ssh_config NAME``,
testinfra and the lab inventory reach every host with no other setup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tierfleet.lab.system import run


class SshHost(Protocol):
    name: str
    address: str

    def known_hosts_lines(self) -> list[str]: ...


class SshFiles:
    """Writes and reads one lab's SSH files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.key = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.config = self.root / "ssh_config"

    def public_key(self) -> str:
        """The lab's public key (the key pair is made on first use)."""
        if not self.key.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tierfleet-lab", "-f", self.key])
        return self.key.with_name(self.key.name + ".pub").read_text()

    def config_block(self, name: str, address: str) -> str:
        return (f"Host {name} {address}\n  HostName {address}\n  User root\n"
                f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
                f"  ControlMaster auto\n  ControlPath {self.root / 'cm-%C'}\n  ControlPersist 60\n"
                f"  ConnectTimeout 10\n  ServerAliveInterval 5\n  ServerAliveCountMax 3\n")

    def write(self, hosts: list[SshHost]) -> None:
        """``known_hosts`` and ``ssh_config`` for exactly these hosts."""
        lines = [line for h in hosts for line in h.known_hosts_lines()]
        self.known_hosts.write_text("\n".join(lines) + ("\n" if lines else ""))
        self.config.write_text("\n".join(self.config_block(h.name, h.address) for h in hosts))

    def close_masters(self) -> None:
        """End the shared connections of every host in ``ssh_config`` (``ssh -O exit``)."""
        if not self.config.exists():
            return
        for line in self.config.read_text().splitlines():
            if line.startswith("Host "):
                run(["ssh", "-F", self.config, "-O", "exit", line.split()[1]], check=False, timeout=5)
