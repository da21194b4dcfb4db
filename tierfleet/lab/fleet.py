"""The lab fleet: bring hosts up and down, run commands in them, inject and clear faults.

:class:`Lab` holds the state file's lock while it changes anything and composes the parts, each
in its own module:

- :mod:`tierfleet.lab.spec`      which hosts (names, profiles, addresses);
- :mod:`tierfleet.lab.host`      one host (overlay, disk, namespace, bridges, supervisor);
- :mod:`tierfleet.lab.mirror`    the mirror server process (:class:`~tierfleet.lab.mirror.MirrorProcess`);
- :mod:`tierfleet.lab.ssh`       the SSH key, ``known_hosts`` and ``ssh_config``;
- :mod:`tierfleet.lab.machine`   what the lab changes on the machine and puts back;
- :mod:`tierfleet.lab.faults`    faults and their undoing;
- :mod:`tierfleet.lab.status`    what ``lab status`` shows;
- :mod:`tierfleet.lab.artifacts` publishing the tier deploy's artifacts into the lab's store;
- :mod:`tierfleet.lab.inventory` the state as a pyinfra inventory.
"""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
from pathlib import Path

from tierfleet.exceptions import ConfigError, LabError
from tierfleet.lab import base as lab_base
from tierfleet.lab import machine
from tierfleet.lab.faults import Faults
from tierfleet.lab.host import Host, LabContext
from tierfleet.lab.inventory import inventory_from_state, write_lab_key
from tierfleet.lab.mirror import MirrorProcess
from tierfleet.lab.profiles import get_profile
from tierfleet.lab.spec import addresses, default_spec
from tierfleet.lab.ssh import SshFiles
from tierfleet.lab.state import HostState, LabState, StateStore, cache_dir, lab_dir, lab_id
from tierfleet.lab.status import HostStatus, host_statuses
from tierfleet.lab.system import (cgroup_kill, cgroup_layout_ok, require_root, run, umount_all,
                                  wait_until)

#: systemd states of a host that has finished booting
BOOTED = ("running", "degraded")


def check_address_free(address: str) -> None:
    """Refuse an SSH address something else on the machine listens on already."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, 22))
        except OSError:
            raise LabError(f"{address}:22 is already in use on this machine; pick other lab addresses "
                           "with TIERFLEET_LAB_ADDR_BASE") from None


def netns_names(lab: str) -> list[str]:
    """The network namespaces of a lab id (also ones a crashed run left behind)."""
    d = Path("/run/netns")
    return sorted(p.name for p in d.glob(f"{lab}-*")) if d.is_dir() else []


class Lab:
    """One lab: a state dir, its hosts and its mirror."""

    def __init__(self, root: Path | None = None, cache: Path | None = None, log=None) -> None:
        self.store = StateStore(root or lab_dir())
        self.root = self.store.root
        self.cache = Path(cache) if cache else cache_dir()
        self.id = lab_id(self.root)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.ssh = SshFiles(self.root)
        self.mirror = MirrorProcess(self.root, self.id)
        self.faults = Faults(self.root, self.id)

    def _context(self, state: LabState, need_build: bool = True) -> LabContext:
        """What the hosts share. ``need_build=False`` (status, stop, down) builds and writes nothing:
        only starting a host needs the base, the apt repository, the key and the SSH key."""
        if not need_build:
            none = Path("/nonexistent")
            return LabContext(lab_dir=self.root, lab_id=self.id, base=none, apt_repo=none, keyring=none,
                              ssh_pubkey="", mirror_port=state.mirror_port)
        base = lab_base.ensure_base(self.cache, self.log)
        repo = lab_base.ensure_apt_repo(self.cache, self.log)
        _gnupg, keyring = lab_base.ensure_key(self.cache)
        write_lab_key(self.root, repo)
        return LabContext(lab_dir=self.root, lab_id=self.id, base=base, apt_repo=repo, keyring=keyring,
                          ssh_pubkey=self.ssh.public_key(), mirror_port=state.mirror_port)

    def _host(self, ctx: LabContext, h: HostState) -> Host:
        return Host(ctx, h.name, get_profile(h.profile, str(self.store.path)), h.address)

    # --- up / down --------------------------------------------------------------------------------

    def up(self, spec: list[tuple[str, str]] | None = None, *, wait: bool = True, timeout: float | None = None
           ) -> LabState:
        """Bring the fleet ``spec`` up (default: one host per profile); hosts not in it go down."""
        require_root()
        if not cgroup_layout_ok():
            raise LabError("the lab needs cgroup2 (at /sys/fs/cgroup/unified or /sys/fs/cgroup)")
        lab_base.ensure_prerequisites(self.log)
        with self.store.locked():
            state = self.store.load()
            if spec is None:
                # in the order they were brought up: each keeps its address (the state file is sorted by name)
                spec = [(h.name, h.profile) for h in sorted(state.hosts.values(), key=lambda h: h.index)
                        ] or default_spec()
            ctx = self._context(state)
            # hosts leaving the fleet, or changing profile, are torn down first
            wanted = dict(spec)
            for name, h in list(state.hosts.items()):
                if wanted.get(name) != h.profile:
                    self._host(ctx, h).teardown(purge=True)
                    del state.hosts[name]
            addrs = addresses(len(spec))
            for i, (name, profile) in enumerate(spec):
                old = state.hosts.get(name)
                if old and old.address != addrs[i]:
                    self._host(ctx, old).teardown(purge=False)
                state.hosts[name] = HostState(name=name, profile=profile, address=addrs[i], index=i)
            machine.setup(state.restore, len(spec))
            state.mirror_port = self.mirror.start(state.mirror_port, ctx.apt_repo,
                                                  lab_base.ensure_jetson_repo(self.cache, self.log))
            ctx.mirror_port = state.mirror_port
            self.store.save(state)
            hosts = [self._host(ctx, state.hosts[n]) for n, _ in spec]
            for h in hosts:
                if not h.running():
                    check_address_free(h.address)
            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda h: h.start(), hosts))
            # a stopped or killed host that up started again is no longer a fault
            state.faults = [f for f in state.faults if not (f["kind"] in ("stop", "kill") and f["host"] in wanted)]
            self.store.save(state)
            self.ssh.write(hosts)
            if wait:
                self._wait_ssh(hosts, timeout or 60 + 6 * len(hosts))
            return state

    def _wait_ssh(self, hosts: list[Host], timeout: float) -> None:
        pending = list(hosts)

        def answered() -> bool:
            nonlocal pending
            pending = [h for h in pending if not h.ssh_ready()]
            dead = [h.name for h in pending if not h.running()]
            if dead:
                raise LabError(f"lab host(s) {', '.join(dead)} exited while booting; see "
                               f"{self.root}/hosts/<name>/console.log")
            return not pending

        if not wait_until(answered, timeout=timeout, interval=0.2):
            raise LabError(f"lab host(s) {', '.join(h.name for h in pending)} did not answer on SSH within "
                           f"{timeout:.0f} s; see {self.root}/hosts/<name>/console.log")

    def wait_running(self, names: list[str] | None = None, timeout: float = 60) -> dict[str, str]:
        """Wait until systemd in each host reports ``running`` (or ``degraded``); returns the states."""
        result: dict[str, str] = {}
        pending = self.hosts(names)

        def booted() -> bool:
            nonlocal pending
            for h in pending:
                out = run(h.exec_argv(["systemctl", "is-system-running"]), check=False).stdout
                result[h.name] = out.decode().strip()
            pending = [h for h in pending if result[h.name] not in BOOTED]
            return not pending

        wait_until(booted, timeout=timeout, interval=0.2)
        return result

    def hosts(self, names: list[str] | None = None) -> list[Host]:
        state = self.store.load()
        ctx = self._context(state, need_build=False)
        unknown = set(names or ()) - set(state.hosts)
        if unknown:
            raise ConfigError(str(self.store.path), "hosts",
                              f"unknown host(s) {', '.join(sorted(unknown))}; lab hosts: "
                              f"{', '.join(state.hosts) or '(none: run tierfleet lab up)'}")
        return [self._host(ctx, h) for n, h in state.hosts.items() if not names or n in names]

    def host(self, name: str) -> Host:
        return self.hosts([name])[0]

    def down(self, purge: bool = True) -> None:
        """Stop everything of this lab and put the machine back (works after crashes too).

        With ``purge=False`` the hosts' files and the fleet stay in the state, so a plain ``up``
        brings the same hosts back with what was on them.
        """
        require_root()
        with self.store.locked():
            state = self.store.load()
            self._clear_faults(state, restart=False)
            ctx = self._context(state, need_build=False)
            self.ssh.close_masters()
            known = [self._host(ctx, h) for h in state.hosts.values()]
            # host dirs the state no longer lists (a crash between steps): the profile does not matter
            on_disk = {p.name for p in (self.root / "hosts").glob("*")} - {h.name for h in known}
            for name in sorted(on_disk):
                known.append(Host(ctx, name, get_profile("cpu-small"), "127.0.0.1"))
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda h: h.teardown(purge=purge), known))
            cgroup_kill(self.id)
            umount_all(self.root)
            for ns in netns_names(self.id):
                run(["ip", "netns", "delete", ns], check=False)
            self.faults.delete_rules()
            self.mirror.forget()
            machine.restore(state.restore)
            if purge:
                state.hosts = {}
            state.mirror_port = 0
            self.store.save(state)

    # --- status / exec ----------------------------------------------------------------------------

    def status(self) -> list[HostStatus]:
        return host_statuses(self.hosts(), self.store.load().faults)

    def exec(self, name: str, command: list[str], capture: bool = False) -> subprocess.CompletedProcess:
        """Run a command in a host without SSH (``nsenter`` into all its namespaces, clean env)."""
        require_root()
        argv = self.host(name).exec_argv(command)
        if capture:
            return subprocess.run(argv, capture_output=True)
        return subprocess.run(argv)

    # --- faults -----------------------------------------------------------------------------------

    def fault(self, kind: str, host: str | None = None, **options) -> dict:
        """Inject a fault (:mod:`tierfleet.lab.faults`); it is recorded in the state so ``clear`` and
        ``down`` undo it."""
        require_root()
        Faults.check(kind, host)
        with self.store.locked():
            state = self.store.load()
            if kind == "mirror":
                record = self.faults.inject_mirror(options.get("mode", "corrupt"), after=options.get("after", 1024),
                                                   rate=options.get("rate", 65536),
                                                   prefix=options.get("prefix", "/artifacts/"))
            else:
                record = self.faults.inject(kind, self.host(host), leave=int(options.get("leave", 0)))
            state.faults.append(record)
            self.store.save(state)
            return record

    def clear(self) -> list[dict]:
        """Undo every recorded fault (stopped or killed hosts are started again)."""
        require_root()
        with self.store.locked():
            state = self.store.load()
            cleared = list(state.faults)
            self._clear_faults(state, restart=True)
            self.store.save(state)
            return cleared

    def _clear_faults(self, state: LabState, restart: bool) -> None:
        stopped = [n for n in self.faults.undo(state.faults) if n in state.hosts]
        state.faults = []
        if restart and stopped:
            ctx = self._context(state)
            hosts = [self._host(ctx, state.hosts[n]) for n in stopped]
            for h in hosts:
                h.start()
            self.ssh.write([self._host(ctx, h) for h in state.hosts.values()])
            self._wait_ssh(hosts, 60)

    # --- data for inventories and tests ------------------------------------------------------------

    def publish(self, cache: Path | None = None) -> list:
        """Publish the tier deploy's artifacts (runtime, tiny model) into this lab's store."""
        from tierfleet.lab.artifacts import publish_lab_artifacts

        return publish_lab_artifacts(self.root, cache, self.log, lab_cache=self.cache)

    def inventory_data(self) -> dict:
        return inventory_from_state(self.root, self.store.load())
