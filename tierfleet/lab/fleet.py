"""The lab fleet: bring hosts up and down, run commands in them, inject and clear faults.

>>> parse_hosts("a:jetson-nano,b:cpu-server")
[('a', 'jetson-nano'), ('b', 'cpu-server')]
>>> [p for _, p in cycle_spec(3)]
['jetson-orin-nano', 'jetson-nano', 'cpu-server']
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tierfleet.exceptions import ConfigError, LabError
from tierfleet.lab import base as lab_base
from tierfleet.lab import mirror as lab_mirror
from tierfleet.lab.host import Host, LabContext
from tierfleet.lab.profiles import PROFILES, get_profile
from tierfleet.lab.state import (APT_KEYRING_IN_HOST, APT_SUITE, APT_URL, ARTIFACTS_URL, MIRROR_NAME, HostState,
                                 LabState, StateStore, cache_dir, lab_dir, lab_id)
from tierfleet.lab.system import (CLEAN_ENV, cgroup_create, cgroup_join, cgroup_kill, cgroup_layout_ok,
                                  mounts_under, pid_alive, require_root, run, umount_all, which)

HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
FAULT_KINDS = ("stop", "kill", "cut-ssh", "blackhole", "fill-disk", "mirror")
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
NSPAWN_RUN = Path("/run/systemd/nspawn")


def parse_hosts(text: str, source: str = "--hosts") -> list[tuple[str, str]]:
    """Parse ``name:profile,...`` into pairs, checking names and profiles."""
    out: list[tuple[str, str]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, profile = item.partition(":")
        if not sep:
            raise ConfigError(source, item, "expected name:profile")
        if not HOSTNAME_RE.fullmatch(name):
            raise ConfigError(source, name, "host names are 1-32 of a-z, 0-9 and '-' (not at the ends)")
        get_profile(profile, source)
        if name in {n for n, _ in out}:
            raise ConfigError(source, name, "host name given twice")
        out.append((name, profile))
    if not out:
        raise ConfigError(source, "(empty)", "no hosts given")
    return out


def default_spec() -> list[tuple[str, str]]:
    """One host per profile, named after it."""
    return [(name, name) for name in PROFILES]


def cycle_spec(n: int) -> list[tuple[str, str]]:
    """``n`` hosts ``lab-01`` ... cycling through the profiles."""
    if n < 1 or n > 200:
        raise ConfigError("-n", str(n), "between 1 and 200 hosts")
    names = list(PROFILES)
    return [(f"lab-{i + 1:02d}", names[i % len(names)]) for i in range(n)]


def addresses(count: int) -> list[str]:
    """SSH addresses ``127.0.0.11`` onwards (``$TIERFLEET_LAB_ADDR_BASE`` sets the one before the first)."""
    source = "TIERFLEET_LAB_ADDR_BASE"
    text = os.environ.get(source, "127.0.0.10")
    try:
        first = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(source, text, "an IPv4 address in 127.0.0.0/8") from None
    if first not in ipaddress.IPv4Network("127.0.0.0/8") or int(first) + count > int(
            ipaddress.IPv4Address("127.255.255.254")):
        raise ConfigError(source, text, "the lab's addresses must stay inside 127.0.0.0/8")
    return [str(first + i + 1) for i in range(count)]


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


class Lab:
    """One lab: a state dir, its hosts and its mirror."""

    def __init__(self, root: Path | None = None, cache: Path | None = None, log=None) -> None:
        self.store = StateStore(root or lab_dir())
        self.root = self.store.root
        self.cache = Path(cache) if cache else cache_dir()
        self.id = lab_id(self.root)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    # --- shared pieces ----------------------------------------------------------------------------

    def _ssh_key(self) -> str:
        key = self.root / "id_ed25519"
        if not key.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tierfleet-lab", "-f", key])
        return (self.root / "id_ed25519.pub").read_text()

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
                          ssh_pubkey=self._ssh_key(), mirror_port=state.mirror_port)

    def _host(self, ctx: LabContext, h: HostState) -> Host:
        return Host(ctx, h.name, get_profile(h.profile, str(self.store.path)), h.address)

    def _mirror_alive(self) -> bool:
        try:
            pid = int((self.root / "mirror.pid").read_text())
        except (OSError, ValueError):
            return False
        return pid_alive(pid)

    def _start_mirror(self, state: LabState, repo: Path) -> None:
        if self._mirror_alive() and state.mirror_port:
            return
        # keep the old port when it is free: running hosts' bridges still point at it
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", state.mirror_port))
            except OSError:
                s.bind(("127.0.0.1", 0))
            state.mirror_port = s.getsockname()[1]
        cg = f"{self.id}/_mirror"
        cgroup_create(cg)
        log = open(self.root / "mirror.log", "ab")
        env = dict(CLEAN_ENV, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierfleet.lab.mirror", "--lab-dir", str(self.root), "--apt-repo", str(repo),
             "--jetson-repo", str(lab_base.ensure_jetson_repo(self.cache, self.log)),
             "--port", str(state.mirror_port)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            preexec_fn=lambda: (os.setsid(), cgroup_join(cg)))
        log.close()
        (self.root / "mirror.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", state.mirror_port), timeout=0.5).close()
                return
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise LabError(f"the lab mirror did not start; see {self.root / 'mirror.log'}")

    def _machine_setup(self, state: LabState, nhosts: int) -> None:
        if not (NSPAWN_RUN in mounts_under(NSPAWN_RUN)):
            NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
            run(["mount", "-t", "tmpfs", "-o", "mode=755,size=16m", "tierfleet-lab-nspawn", NSPAWN_RUN])
            state.restore["nspawn_tmpfs"] = True
        if nhosts > 8 and INOTIFY.exists():
            current = int(INOTIFY.read_text())
            if current < 1024:
                state.restore.setdefault("inotify_max_user_instances", current)
                INOTIFY.write_text("1024\n")

    def _machine_restore(self, state: LabState) -> None:
        old = state.restore.pop("inotify_max_user_instances", None)
        if old is not None and INOTIFY.exists():
            INOTIFY.write_text(f"{old}\n")
        if state.restore.pop("nspawn_tmpfs", False):
            busy = any(Path(f"/proc/{p}/comm").read_text().strip() == "systemd-nspawn"
                       for p in os.listdir("/proc") if p.isdigit() and Path(f"/proc/{p}/comm").exists())
            if not busy:
                run(["umount", NSPAWN_RUN], check=False)

    def _write_ssh_files(self, hosts: list[Host]) -> None:
        lines = []
        for h in hosts:
            lines += h.known_hosts_lines()
        (self.root / "known_hosts").write_text("\n".join(lines) + ("\n" if lines else ""))
        blocks = []
        for h in hosts:
            blocks.append(
                f"Host {h.name} {h.address}\n  HostName {h.address}\n  User root\n"
                f"  IdentityFile {self.root / 'id_ed25519'}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.root / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
                f"  ControlMaster auto\n  ControlPath {self.root / 'cm-%C'}\n  ControlPersist 60\n"
                f"  ConnectTimeout 10\n  ServerAliveInterval 5\n  ServerAliveCountMax 3\n")
        (self.root / "ssh_config").write_text("\n".join(blocks))

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
            self._machine_setup(state, len(spec))
            self._start_mirror(state, ctx.apt_repo)
            ctx.mirror_port = state.mirror_port
            self.store.save(state)
            hosts = [self._host(ctx, state.hosts[n]) for n, _ in spec]
            for h in hosts:
                if not h.running():
                    self._check_address_free(h.address)
            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda h: h.start(), hosts))
            # a stopped or killed host that up started again is no longer a fault
            state.faults = [f for f in state.faults if not (f["kind"] in ("stop", "kill") and f["host"] in wanted)]
            self.store.save(state)
            self._write_ssh_files(hosts)
            if wait:
                self._wait_ssh(hosts, timeout or 60 + 6 * len(hosts))
            return state

    @staticmethod
    def _check_address_free(address: str) -> None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, 22))
            except OSError:
                raise LabError(f"{address}:22 is already in use on this machine; pick other lab addresses "
                               "with TIERFLEET_LAB_ADDR_BASE") from None

    def _wait_ssh(self, hosts: list[Host], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if not h.ssh_ready()]
            if pending:
                dead = [h.name for h in pending if not h.running()]
                if dead:
                    raise LabError(f"lab host(s) {', '.join(dead)} exited while booting; see "
                                   f"{self.root}/hosts/<name>/console.log")
                time.sleep(0.2)
        if pending:
            raise LabError(f"lab host(s) {', '.join(h.name for h in pending)} did not answer on SSH within "
                           f"{timeout:.0f} s; see {self.root}/hosts/<name>/console.log")

    def wait_running(self, names: list[str] | None = None, timeout: float = 60) -> dict[str, str]:
        """Wait until systemd in each host reports ``running`` (or ``degraded``); returns the states."""
        deadline = time.monotonic() + timeout
        result: dict[str, str] = {}
        for h in self.hosts(names):
            while True:
                out = run(h.exec_argv(["systemctl", "is-system-running"]), check=False).stdout.decode().strip()
                result[h.name] = out
                if out in ("running", "degraded") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
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
            self._close_masters()
            known = [self._host(ctx, h) for h in state.hosts.values()]
            # host dirs the state no longer lists (a crash between steps): the profile does not matter
            on_disk = {p.name for p in (self.root / "hosts").glob("*")} - {h.name for h in known}
            for name in sorted(on_disk):
                known.append(Host(ctx, name, get_profile("cpu-small"), "127.0.0.1"))
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda h: h.teardown(purge=purge), known))
            cgroup_kill(self.id)
            umount_all(self.root)
            for ns in self._netns_list():
                run(["ip", "netns", "delete", ns], check=False)
            self._delete_rules()
            (self.root / "mirror.pid").unlink(missing_ok=True)
            self._machine_restore(state)
            if purge:
                state.hosts = {}
            state.mirror_port = 0
            self.store.save(state)

    def _close_masters(self) -> None:
        cfg = self.root / "ssh_config"
        if not cfg.exists():
            return
        for line in cfg.read_text().splitlines():
            if line.startswith("Host "):
                name = line.split()[1]
                run(["ssh", "-F", cfg, "-O", "exit", name], check=False, timeout=5)

    def _netns_list(self) -> list[str]:
        d = Path("/run/netns")
        return sorted(p.name for p in d.glob(f"{self.id}-*")) if d.is_dir() else []

    # --- status / exec ----------------------------------------------------------------------------

    def status(self) -> list[HostStatus]:
        state = self.store.load()
        faults: dict[str, list[str]] = {}
        for f in state.faults:
            faults.setdefault(f.get("host") or "(mirror)", []).append(f["kind"])
        out = []
        for h in self.hosts():
            running = h.running()
            out.append(HostStatus(h.name, h.profile.name, h.profile.kind, h.profile.tier, h.address, running,
                                  running and h.ssh_ready(), faults.get(h.name, [])))
        return out

    def exec(self, name: str, command: list[str], capture: bool = False) -> subprocess.CompletedProcess:
        """Run a command in a host without SSH (``nsenter`` into all its namespaces, clean env)."""
        require_root()
        argv = self.host(name).exec_argv(command)
        if capture:
            return subprocess.run(argv, capture_output=True)
        return subprocess.run(argv)

    # --- faults -----------------------------------------------------------------------------------

    def _rule_tag(self, host: str, kind: str) -> str:
        return f"{self.id}:{host}:{kind}"

    def fault(self, kind: str, host: str | None = None, **options) -> dict:
        """Inject a fault; it is recorded in the state so ``clear`` and ``down`` undo it."""
        require_root()
        if kind not in FAULT_KINDS:
            raise ConfigError("tierfleet lab fault", "kind", f"{kind!r}; allowed: {', '.join(FAULT_KINDS)}")
        with self.store.locked():
            state = self.store.load()
            record: dict = {"kind": kind, "host": host}
            if kind == "mirror":
                record["mirror"] = lab_mirror.set_fault(self.root, options.get("mode", "corrupt"),
                                                        after=options.get("after", 1024),
                                                        rate=options.get("rate", 65536))
                record["host"] = None
            else:
                if not host:
                    raise ConfigError("tierfleet lab fault", "host", f"the {kind} fault needs a host name")
                h = self.host(host)
                if kind == "stop":
                    h.stop()
                elif kind == "kill":
                    h.kill()
                elif kind in ("cut-ssh", "blackhole"):
                    record["rules"] = self._rules(kind, h)
                    for rule in record["rules"]:
                        run(["iptables", "-w", "-I", *rule])
                elif kind == "fill-disk":
                    record["file"] = self._fill(h, int(options.get("leave", 0)))
            state.faults.append(record)
            self.store.save(state)
            return record

    def _rules(self, kind: str, h: Host) -> list[list[str]]:
        tag = ["-m", "comment", "--comment", self._rule_tag(h.name, kind)]
        if kind == "cut-ssh":
            return [["INPUT", "-d", f"{h.address}/32", "-p", "tcp", "--dport", "22", *tag, "-j", "REJECT",
                     "--reject-with", "tcp-reset"]]
        return [["INPUT", "-d", f"{h.address}/32", "-p", "tcp", "--dport", "22", *tag, "-j", "DROP"],
                ["INPUT", "-s", f"{h.address}/32", "-p", "tcp", "--sport", "22", *tag, "-j", "DROP"]]

    def _fill(self, h: Host, leave: int) -> str:
        st = os.statvfs(h.disk)
        free = st.f_bavail * st.f_frsize
        target = h.disk / ".tierfleet-lab-fill"
        size = max(0, free - leave - 64 * 1024)
        run(["fallocate", "-l", str(size), target])
        return str(target)

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
        restart_hosts = []
        for f in reversed(state.faults):
            kind = f["kind"]
            if kind == "mirror":
                lab_mirror.clear_fault(self.root)
            elif kind in ("cut-ssh", "blackhole"):
                for rule in f.get("rules", []):
                    run(["iptables", "-w", "-D", *rule], check=False)
            elif kind == "fill-disk":
                Path(f["file"]).unlink(missing_ok=True)
            elif kind in ("stop", "kill") and f.get("host") in state.hosts:
                restart_hosts.append(f["host"])
        state.faults = []
        lab_mirror.clear_fault(self.root)
        self._delete_rules()
        if restart and restart_hosts:
            ctx = self._context(state)
            hosts = [self._host(ctx, state.hosts[n]) for n in dict.fromkeys(restart_hosts)]
            for h in hosts:
                h.start()
            self._write_ssh_files([self._host(ctx, h) for h in state.hosts.values()])
            self._wait_ssh(hosts, 60)

    def _delete_rules(self) -> None:
        """Remove every firewall rule this lab tagged (also ones a crashed run left behind)."""
        if not which("iptables"):
            return
        out = run(["iptables", "-w", "-S", "INPUT"], check=False).stdout.decode()
        for line in out.splitlines():
            if f"{self.id}:" in line and line.startswith("-A "):
                run(["iptables", "-w", "-D", *shlex.split(line)[1:]], check=False)

    # --- data for inventories and tests ------------------------------------------------------------

    def publish(self, cache: Path | None = None) -> list:
        """Publish the tier deploy's artifacts (runtime, tiny model) into this lab's store."""
        from tierfleet.lab.artifacts import publish_lab_artifacts

        return publish_lab_artifacts(self.root, cache, self.log, lab_cache=self.cache)

    def inventory_data(self) -> dict:
        state = self.store.load()
        return inventory_from_state(self.root, state)


#: the lab's mirrors as the hosts see them
NVIDIA_REPO_KEY = f"{APT_URL}/{lab_base.KEY_ASC}"
L4T_REPO = f"http://{MIRROR_NAME}/jetson"
L4T_REPO_KEY = f"{L4T_REPO}/{lab_base.JETSON_KEY_ASC}"


#: the lab key's public part in the state dir: the inventory pins it as ``artifact_key`` (the lab store's
#: manifests are signed with it) and pins its sha256 for the repository keys the mirrors serve
LAB_KEY = "lab-key.asc"


def write_lab_key(root: Path, apt_repo: Path) -> Path:
    """Copy the lab key's armoured public part (as the mirrors serve it) into the state dir."""
    path = Path(root) / LAB_KEY
    data = (apt_repo / lab_base.KEY_ASC).read_bytes()
    if not path.exists() or path.read_bytes() != data:
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{LAB_KEY}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def tierfleet_data(profile, root: Path | None = None) -> dict:
    """The tierfleet inventory keys (:class:`tierfleet.settings.HostSettings`) a lab host needs so that
    the tier deploys run with no extra flags: the lab's store, its tiny model, the lab mirrors standing in
    for NVIDIA's CUDA and L4T repositories, and the profile's driver branch; with the lab's state dir
    ``root`` also the pinned keys: ``artifact_key`` and the repository keys' sha256."""
    from tierfleet.lab.artifacts import TINY_MODEL_VERSION, tiny_model

    from tierfleet.artifacts.llama_build import variant_name

    data = {
        "artifact_store": ARTIFACTS_URL,
        # lab hosts are x86_64 containers without a GPU, whatever they are dressed as: all run the CPU build
        "runtime_variant": variant_name("x86_64"),
        "model": tiny_model(),
        "model_version": TINY_MODEL_VERSION,
        "health_timeout": 60,
    }
    if profile.kind == "gpu_nodes":
        data.update({
            "nvidia_repo": APT_URL,
            "nvidia_repo_suite": f"{APT_SUITE} main",
            "nvidia_repo_key": NVIDIA_REPO_KEY,
            "nvidia_driver_branch": profile.gpus[0].driver.split(".")[0],
        })
    elif profile.kind == "jetson":
        data.update({"l4t_repo": L4T_REPO, "l4t_repo_key": L4T_REPO_KEY})
    key = Path(root) / LAB_KEY if root is not None else None
    if key is not None and key.is_file():
        digest = hashlib.sha256(key.read_bytes()).hexdigest()
        data["artifact_key"] = str(key)
        data.update({"gpu_nodes": {"nvidia_repo_key_sha256": digest},
                     "jetson": {"l4t_repo_key_sha256": digest}}.get(profile.kind, {}))
    return data


def inventory_from_state(root: Path, state: LabState) -> dict:
    """group -> [(host, data)] for pyinfra, with each host's tier, the mirror URLs and the tierfleet keys."""
    groups: dict[str, list] = {"jetson": [], "cpu_servers": [], "gpu_nodes": []}
    for name, h in state.hosts.items():
        profile = get_profile(h.profile, str(root / "state.json"))
        groups[profile.kind].append((name, {
            "ssh_hostname": h.address,
            "ssh_user": "root",
            "ssh_key": str(root / "id_ed25519"),
            "ssh_known_hosts_file": str(root / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
            "tier": profile.tier,
            "lab_profile": profile.name,
            "lab_kind": profile.kind,
            "apt_mirror_url": APT_URL,
            "apt_mirror_suite": APT_SUITE,
            "apt_mirror_keyring": APT_KEYRING_IN_HOST,
            "artifacts_url": ARTIFACTS_URL,
            **tierfleet_data(profile, root),
        }))
    return groups


def status_json(statuses: list[HostStatus]) -> str:
    return json.dumps([s.__dict__ for s in statuses], indent=1)
