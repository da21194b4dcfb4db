"""One lab host: overlay root, dressing, model disk, network namespace, bridges, supervisor.

Layout under ``<lab dir>/hosts/<name>/``::

    upper/ work/ root/     overlayfs over the shared base (root/ is the host's /)
    disk.img disk/         ext4 image of the profile's disk size, loop-mounted, bound at /var/lib/tierfleet
    mirror.sock            unix socket: the mirror bridge out of the host's network namespace
    console.log            systemd-nspawn's console
    stop                   present while the host is meant to stay down

Everything a host runs (supervisor, systemd-nspawn, the container, its socat bridges) lives in
the cgroup ``<lab id>/<name>`` (cgroup2 and name=systemd), so teardown is ``cgroup.kill``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from tierfleet.exceptions import LabError
from tierfleet.lab import base as lab_base
from tierfleet.lab import dress as lab_dress
from tierfleet.lab import jetson
from tierfleet.lab.profiles import Profile
from tierfleet.lab.state import (APT_KEYRING_IN_HOST, APT_SUITE, APT_URL, ARTIFACTS_NAME, ARTIFACTS_URL, BASE_APT_URL,
                                 MIRROR_NAME, MIRROR_PORT_IN_HOST)
from tierfleet.lab.system import (CLEAN_ENV, cgroup_create, cgroup_join, cgroup_kill, cgroup_pids, mounts_under,
                                  pid_alive, run, umount_all, wait_until)

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "stand-ins"
RECORDINGS = HERE / "recordings"
DRESS_IN_HOST = "usr/lib/tierfleet-lab/dress"
SOCAT_UNSAFE = set(":,!\"'() \t\n\\")


@dataclass
class LabContext:
    """What every host of one lab shares."""

    lab_dir: Path
    lab_id: str
    base: Path
    apt_repo: Path
    keyring: Path
    ssh_pubkey: str
    mirror_port: int

    def netns(self, host: str) -> str:
        return f"{self.lab_id}-{host}"

    def cgroup(self, host: str) -> str:
        return f"{self.lab_id}/{host}"


def _safe_for_socat(path: Path) -> str:
    text = str(path)
    bad = SOCAT_UNSAFE & set(text)
    if bad:
        raise LabError(f"lab dir path {text!r} contains {''.join(sorted(bad))!r}, which socat addresses "
                       "cannot carry; set TIERFLEET_LAB_DIR to a plain path")
    return text


class Host:
    def __init__(self, ctx: LabContext, name: str, profile: Profile, address: str) -> None:
        self.ctx = ctx
        self.name = name
        self.profile = profile
        self.address = address
        self.dir = ctx.lab_dir / "hosts" / name
        self.root = self.dir / "root"
        self.disk = self.dir / "disk"

    # --- files ------------------------------------------------------------------------------------

    def _mount_root(self) -> None:
        for d in ("upper", "work", "root", "disk"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        if self.root.resolve() not in mounts_under(self.root):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.ctx.base},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", self.root])

    def _mount_disk(self) -> None:
        img = self.dir / "disk.img"
        if not img.exists():
            with open(img, "wb") as fh:
                fh.truncate(self.profile.disk_gib * 1024 ** 3)
            run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", f"tf-{self.name}"[:16], "-E",
                 "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-J", "size=16", img])
        if self.disk.resolve() not in mounts_under(self.disk):
            run(["mount", "-o", "loop,noinit_itable", img, self.disk])

    def _first_boot_files(self) -> None:
        r = self.root
        (r / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        key = r / "etc/ssh/ssh_host_ed25519_key"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", key])
        ssh = r / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text(self.ctx.ssh_pubkey)
        os.chmod(ssh / "authorized_keys", 0o600)
        shutil.copyfile(self.ctx.keyring, r / APT_KEYRING_IN_HOST.lstrip("/"))
        (r / "etc/apt/sources.list.d/tierfleet-lab.list").write_text(
            f"deb [signed-by={APT_KEYRING_IN_HOST}] {BASE_APT_URL} {APT_SUITE} main\n")
        if self.profile.jetson:
            spec = self.profile.jetson
            deb = lab_base.l4t_deb(self.ctx.apt_repo, spec)
            shutil.copyfile(deb, r / "tmp" / deb.name)
            run(["chroot", r, "dpkg", "-i", f"/tmp/{deb.name}"], env=CLEAN_ENV)
            (r / "tmp" / deb.name).unlink()
            (r / "etc/nvpmodel").mkdir(exist_ok=True)
            for conf in jetson.MODES:
                if conf.startswith(spec.nvpmodel_conf):
                    (r / f"etc/nvpmodel/nvpmodel_{conf}.conf").write_text(jetson.nvpmodel_conf(spec, conf))
            link = r / "etc/nvpmodel.conf"
            if not link.is_symlink():
                link.symlink_to(f"/etc/nvpmodel/nvpmodel_{spec.nvpmodel_conf}.conf")
        (r / "etc/tierfleet-lab-host").write_text(json.dumps({"name": self.name, "profile": self.profile.name}))

    def _every_boot_files(self) -> None:
        r = self.root
        (r / "etc/hostname").write_text(f"{self.name}\n")
        (r / "etc/hosts").write_text(
            f"127.0.0.1 localhost {MIRROR_NAME} {ARTIFACTS_NAME}\n127.0.1.1 {self.name}\n"
            "::1 localhost ip6-localhost ip6-loopback\n")
        (r / "etc/ssh/sshd_config.d/10-listen.conf").write_text(f"ListenAddress {self.address}\n")
        share = r / "usr/share/tierfleet-lab"
        share.mkdir(parents=True, exist_ok=True)
        (share / "profile.json").write_text(json.dumps(self.profile.to_json(), indent=1) + "\n")
        (share / "mirrors.env").write_text(
            f"TIERFLEET_APT_URL={APT_URL}\n"
            f"TIERFLEET_ARTIFACTS_URL={ARTIFACTS_URL}\n")
        installs = {"lspci": "usr/bin/lspci"}
        if self.profile.gpus:
            installs["nvidia-smi"] = "usr/bin/nvidia-smi"
            nvml = share / "nvml"
            nvml.mkdir(exist_ok=True)
            for rec in RECORDINGS.iterdir():
                shutil.copyfile(rec, nvml / rec.name)
        if self.profile.jetson:
            installs["nvpmodel"] = "usr/sbin/nvpmodel"
            installs["jetson_clocks"] = "usr/bin/jetson_clocks"
        for src, dest in installs.items():
            shutil.copyfile(STANDINS / src, r / dest)
            os.chmod(r / dest, 0o755)
        # the dressed /sys files are plain files on the host's overlayfs, not sysfs: the ops daemon writes
        # only on sysfs unless told this filesystem stands in for it
        dropin = r / "etc/systemd/system/tierfleet-ops.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "10-lab-sysfs.conf").write_text(
            "# tierfleet lab: the dressed /sys is on overlayfs\n[Service]\nEnvironment=TIERFLEET_OPS_SYSFS_ALSO_ON=overlay\n")
        # the dressing: regenerated on every start, like the kernel's files after a power cycle
        dress_root = r / DRESS_IN_HOST
        if dress_root.exists():
            shutil.rmtree(dress_root)
        lab_dress.write_tree(dress_root, lab_dress.dress_tree(self.profile))
        for stale in ("var/lib/nvpmodel/status", "var/lib/nvpmodel/conf_file_path",
                      "var/lib/tierfleet-lab/nvidia-smi.json"):
            (r / stale).unlink(missing_ok=True)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._mount_root()
        self._mount_disk()
        if not (self.root / "etc/tierfleet-lab-host").exists():
            self._first_boot_files()
        self._every_boot_files()
        (self.dir / "stop").unlink(missing_ok=True)

    # --- processes --------------------------------------------------------------------------------

    def nspawn_argv(self) -> list[str]:
        argv = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", f"--machine={self.name}",
                f"--directory={self.root}", "--console=read-only", "--resolv-conf=off", "--timezone=off",
                f"--network-namespace-path=/run/netns/{self.ctx.netns(self.name)}",
                f"--bind={self.disk}:/var/lib/tierfleet"]
        for b in lab_dress.binds(self.profile):
            if b.dest.startswith("/proc/"):
                # nspawn resolves sources of /proc binds inside the container: use the in-host copy
                src = f"/{DRESS_IN_HOST}/{b.source}"
            else:
                src = str(self.root / DRESS_IN_HOST / b.source)
            argv.append(f"--bind{'-ro' if b.read_only else ''}={src}:{b.dest}")
        return argv

    def _netns_up(self) -> None:
        ns = self.ctx.netns(self.name)
        if not Path(f"/run/netns/{ns}").exists():
            run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _spawn(self, argv: list[str], cgroup: str, log: Path) -> subprocess.Popen:
        def enter() -> None:
            os.setsid()
            cgroup_join(cgroup)

        with open(log, "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=enter, env=dict(CLEAN_ENV, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"),
                                    close_fds=True)

    def start(self) -> None:
        """Prepare files, then start bridges and the container (returns before it has booted)."""
        if self.running():
            return
        self.prepare()
        self._netns_up()
        cg = self.ctx.cgroup(self.name)
        cgroup_create(cg)
        ns = self.ctx.netns(self.name)
        sock = _safe_for_socat(self.dir / "mirror.sock")
        sock_path = Path(sock)
        sock_path.unlink(missing_ok=True)
        # socat reads ':' and ',' in an address as syntax: escape them in the EXEC command line
        inner = " ".join(shlex.quote(a) for a in
                         ["ip", "netns", "exec", ns, "socat", "STDIO", f"TCP:{self.address}:22"])
        inner = inner.replace(":", "\\:").replace(",", "\\,")
        bridges = [
            ["socat", f"TCP-LISTEN:22,bind={self.address},reuseaddr,fork", f"EXEC:{inner},nofork"],
            ["socat", f"UNIX-LISTEN:{sock},fork,unlink-early,mode=600",
             f"TCP:127.0.0.1:{self.ctx.mirror_port}"],
            ["ip", "netns", "exec", ns, "socat",
             f"TCP-LISTEN:{MIRROR_PORT_IN_HOST},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{sock}"],
        ]
        log = self.dir / "bridges.log"
        for argv in bridges:
            self._spawn(argv, f"{cg}/bridge", log)
        sup = [sys.executable, "-I", "-S", str(HERE / "supervisor.py"), str(self.dir), "--", *self.nspawn_argv()]
        proc = self._spawn(sup, cg, self.dir / "console.log")
        (self.dir / "supervisor.pid").write_text(f"{proc.pid}\n")

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.dir / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return pid_alive(self.supervisor_pid()) and bool(cgroup_pids(self.ctx.cgroup(self.name)))

    def leader_pid(self) -> int | None:
        """The container's PID 1 (systemd), seen from the machine."""
        for pid in cgroup_pids(self.ctx.cgroup(self.name)):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:") and len(line.split()) > 2 and line.split()[-1] == "1":
                    return pid
        return None

    def ssh_ready(self, timeout: float = 1.0) -> bool:
        """True when sshd in the host answers with its banner through the bridge."""
        try:
            with socket.create_connection((self.address, 22), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """Orderly halt (SIGTERM to nspawn), then end whatever is left in the cgroup."""
        (self.dir / "stop").parent.mkdir(parents=True, exist_ok=True)
        (self.dir / "stop").touch()
        pid = self.supervisor_pid()
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_until(lambda: not pid_alive(pid), timeout=timeout, interval=0.1)
        cgroup_kill(self.ctx.cgroup(self.name))

    def kill(self) -> None:
        """Power cut: SIGKILL everything of the host at once."""
        (self.dir / "stop").touch()
        cgroup_kill(self.ctx.cgroup(self.name))

    def teardown(self, purge: bool) -> None:
        """Stop, unmount, delete the namespace; with ``purge`` also remove the host's files."""
        if self.dir.exists() or cgroup_pids(self.ctx.cgroup(self.name)):
            self.stop()
        umount_all(self.dir)
        run(["ip", "netns", "delete", self.ctx.netns(self.name)], check=False)
        if purge and self.dir.exists() and not mounts_under(self.dir):
            shutil.rmtree(self.dir)

    def exec_argv(self, command: list[str]) -> list[str]:
        leader = self.leader_pid()
        if not leader:
            raise LabError(f"host {self.name} is not running")
        env = [f"{k}={v}" for k, v in CLEAN_ENV.items()] + ["HOME=/root", "USER=root", "TERM=dumb"]
        return ["nsenter", "-t", str(leader), "-a", "env", "-i", *env, *command]

    def known_hosts_lines(self) -> list[str]:
        pub = self.root / "etc/ssh/ssh_host_ed25519_key.pub"
        if not pub.exists():
            return []
        keytype, key = pub.read_text().split()[:2]
        return [f"{self.address} {keytype} {key}", f"{self.name} {keytype} {key}"]
