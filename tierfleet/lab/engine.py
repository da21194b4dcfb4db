"""A Docker engine the lab starts on this machine, for the container runtime mode (``runtime_mode: container``).

Debian's ``docker.io`` (dockerd, its own containerd, runc) started by hand, as on a machine whose PID 1 is not
systemd: its socket, data and exec roots under ``<lab dir>/engine``, no bridge, no NAT, no iptables rules, no
IP forwarding (containers get ``--network=host`` bound to loopback, or none), cgroupfs as the cgroup driver.
Nothing can be pulled here: images come from ``docker import`` (see :func:`tierfleet_ops.containers.build_image`).

Stopping sends SIGTERM to dockerd by its pid file (its containerd exits with it), then unmounts the network
namespace mount dockerd leaves behind and removes the empty ``docker`` cgroups it leaves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tierfleet.exceptions import TierfleetError


class EngineError(TierfleetError, RuntimeError):
    """The Docker engine could not be started or stopped."""


def missing() -> str | None:
    """Why no engine can be started here (``None`` when one can)."""
    if os.geteuid() != 0:
        return "the Docker engine needs root"
    for tool in ("dockerd", "containerd", "runc"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists() and not Path("/usr/bin", tool).exists():
            return f"{tool} is not installed (Debian package docker.io)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is not installed (pip install 'tierfleet-ops[container]')"
    return None


@dataclass
class Engine:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return None if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"] else pid  # a zombie has exited

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.url)

    def answers(self) -> bool:
        import docker

        try:
            return bool(self.client().ping())
        except docker.errors.DockerException:
            return False

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd unless it runs; return once its API answers."""
        why = missing()
        if why:
            raise EngineError(f"cannot start a Docker engine: {why}")
        if self.pid() and self.answers():
            return
        for d in ("data", "exec", "logs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        argv = [dockerd, f"--host={self.url}", f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}", f"--pidfile={self.pidfile}",
                "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
                "--exec-opt", "native.cgroupdriver=cgroupfs"]
        env = dict(os.environ, PATH=f"/usr/sbin:/usr/bin:/sbin:/bin:{os.environ.get('PATH', '')}")
        with open(self.root / "logs" / "dockerd.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if proc.poll() is not None:
                raise EngineError(f"dockerd exited with {proc.returncode}; see {self.root / 'logs' / 'dockerd.log'}")
            if time.monotonic() > deadline:
                proc.terminate()
                raise EngineError(f"dockerd did not answer on {self.socket} within {timeout:g} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dockerd (its containers stop with it) and unmount what it leaves behind."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid() == pid and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            if self.pid() == pid:
                os.kill(pid, signal.SIGKILL)
        netns = self.root / "exec" / "netns" / "default"
        if os.path.ismount(netns):
            subprocess.run(["umount", str(netns)], check=False)
        for d in Path("/sys/fs/cgroup").glob("*/docker"):  # empty parents it leaves in each hierarchy
            try:
                d.rmdir()
            except OSError:
                pass  # another engine's containers still run there
