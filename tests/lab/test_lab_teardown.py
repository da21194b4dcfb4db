"""``lab down`` leaves nothing behind, also after SIGKILLs (its own small lab, own addresses)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tierfleet.lab.fleet import Lab
from tierfleet.lab.spec import block_address
from tierfleet.lab.system import cgroup_pids, cgroup_roots, mounts_under

pytestmark = pytest.mark.lab


def leftovers(lab: Lab) -> dict:
    root = str(lab.root)
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in cmd:
            procs.append(cmd[:80])
    return {
        "processes": procs,
        "cgroup_pids": cgroup_pids(lab.id),
        "cgroups": [str(r / lab.id) for r in cgroup_roots() if (r / lab.id).exists()],
        "mounts": [str(m) for m in mounts_under(lab.root)],
        "netns": [p.name for p in Path("/run/netns").glob(f"{lab.id}-*")] if Path("/run/netns").exists() else [],
        "rules": [l for l in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout.splitlines()
                  if lab.id in l],
        "loops": [l for l in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
                  if root in l],
    }


@pytest.fixture
def small_lab(tmp_path, monkeypatch):
    """small_lab(last_octet) -> a new lab in its own state dir, on its own addresses; always brought down."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    made: list[Lab] = []

    def make(last_octet: int) -> Lab:
        monkeypatch.setenv("TIERFLEET_LAB_ADDR_BASE", block_address(last_octet))
        made.append(Lab(tmp_path / "lab"))
        return made[-1]

    yield make
    for lab in made:
        lab.down()


def test_down_after_sigkill_of_host_and_lab_leaves_nothing(small_lab):
    lab = small_lab(150)
    lab.up([("t1", "cpu-small"), ("t2", "jetson-nano")])
    lab.fault("cut-ssh", "t2")
    lab.fault("fill-disk", "t1")
    busy = leftovers(lab)
    assert busy["cgroup_pids"] and busy["mounts"] and busy["netns"] and busy["rules"] and busy["loops"]
    # SIGKILL the host's supervisor and nspawn: its systemd is orphaned but stays in the cgroup
    t1 = lab.host("t1")
    nspawn = int((t1.dir / "nspawn.pid").read_text())
    os.kill(t1.supervisor_pid(), signal.SIGKILL)
    os.kill(nspawn, signal.SIGKILL)
    # and the mirror, as if the whole lab command had been killed
    os.kill(int((lab.root / "mirror.pid").read_text()), signal.SIGKILL)
    lab.down()
    assert leftovers(lab) == {"processes": [], "cgroup_pids": [], "cgroups": [], "mounts": [], "netns": [],
                              "rules": [], "loops": []}


def test_down_keep_then_up_brings_the_same_hosts_back(small_lab):
    lab = small_lab(160)
    ssh = ["ssh", "-F", str(lab.root / "ssh_config"), "-o", "ControlPath=none", "k1"]
    lab.up([("k1", "cpu-small")])
    assert subprocess.run([*ssh, "echo kept > /root/mark"]).returncode == 0
    lab.down(purge=False)
    assert [(s.name, s.running) for s in lab.status()] == [("k1", False)]
    assert leftovers(lab)["processes"] == [] and leftovers(lab)["mounts"] == []
    lab.up()
    out = subprocess.run([*ssh, "cat /root/mark"], capture_output=True, text=True)
    assert out.stdout == "kept\n"
    lab.down()
    assert not (lab.root / "hosts" / "k1").exists()


def test_up_repairs_a_killed_mirror_and_a_stopped_host(small_lab):
    lab = small_lab(170)
    lab.up([("m1", "cpu-small")])
    port = lab.store.load().mirror_port
    os.kill(int((lab.root / "mirror.pid").read_text()), signal.SIGKILL)
    lab.fault("stop", "m1")
    lab.up()
    state = lab.store.load()
    assert state.mirror_port == port and state.faults == []
    r = lab.exec("m1", ["python3", "-c", "import urllib.request as u; print(u.urlopen("
                        "'http://mirror.lab/apt/dists/lab/InRelease').status)"], capture=True)
    assert r.stdout == b"200\n"
