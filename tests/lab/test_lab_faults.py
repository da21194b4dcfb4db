"""Each fault, seen from the outside, and its reversal (``fault clear``)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from tierfleet.lab import mirror
from tierfleet.lab.runner import run_pyinfra

pytestmark = pytest.mark.lab
NOMUX = ("-o", "ControlPath=none", "-o", "ConnectTimeout=3")

DOWNLOAD = (
    "import hashlib,sys,urllib.request\n"
    "d=b''\n"
    "try:\n"
    "    d=urllib.request.urlopen(sys.argv[1],timeout=20).read()\n"
    "except Exception as e:\n"
    "    print('ERR',type(e).__name__)\n"
    "print(len(d),hashlib.sha256(d).hexdigest())\n"
)


@pytest.fixture(autouse=True)
def cleared(lab):
    yield
    lab.clear()


def test_stop_and_clear(lab, ssh):
    lab.fault("stop", "cpu-small")
    assert not lab.host("cpu-small").running()
    r = ssh("cpu-small", "true", extra=NOMUX)
    assert r.returncode == 255 and "Connection refused" in r.stderr
    assert [s.faults for s in lab.status() if s.name == "cpu-small"] == [["stop"]]
    lab.clear()
    assert ssh("cpu-small", "hostname", extra=NOMUX).stdout == "cpu-small\n"


def test_kill_hard_and_clear(lab, ssh):
    host = lab.host("cpu-small")
    lab.fault("kill", "cpu-small")
    assert not host.running() and host.leader_pid() is None
    assert ssh("cpu-small", "true", extra=NOMUX).returncode == 255
    lab.clear()
    assert ssh("cpu-small", "hostname", extra=NOMUX).returncode == 0


def test_cut_ssh_rejects_and_pyinfra_finishes_the_others(lab, ssh):
    lab.fault("cut-ssh", "cpu-small")
    r = ssh("cpu-small", "true", extra=NOMUX)
    assert r.returncode == 255 and ("refused" in r.stderr or "reset" in r.stderr)
    run = run_pyinfra("-y", "--limit", "cpu-small", "--limit", "cpu-server", "inventory/lab.py", "exec", "--",
                      "true", lab_dir=lab.root, timeout=120)
    assert run.returncode == 1
    assert re.search(r"\[cpu-server\]\s+Success", run.stdout), run.stdout
    assert re.search(r"\[cpu-small\]\s+Could not connect", run.stdout), run.stdout
    lab.clear()
    assert ssh("cpu-small", "true", extra=NOMUX).returncode == 0


def test_blackhole_times_out(lab, ssh):
    lab.fault("blackhole", "cpu-small")
    r = ssh("cpu-small", "true", extra=NOMUX, timeout=30)
    assert r.returncode == 255 and "timed out" in r.stderr
    lab.clear()
    assert ssh("cpu-small", "true", extra=NOMUX).returncode == 0


def test_fill_disk(lab, ssh):
    lab.fault("fill-disk", "jetson-nano")
    avail = int(ssh("jetson-nano", "df -Pk /var/lib/tierfleet | tail -1").stdout.split()[3])
    assert avail < 1024
    r = ssh("jetson-nano", "head -c 2000000 /dev/zero > /var/lib/tierfleet/x")
    assert r.returncode != 0 and "No space left" in r.stderr
    lab.clear()
    ssh("jetson-nano", "rm -f /var/lib/tierfleet/x")
    avail = int(ssh("jetson-nano", "df -Pk /var/lib/tierfleet | tail -1").stdout.split()[3])
    assert avail > 7 * 2 ** 20


def test_mirror_serves_good_then_bad_bytes(lab, ssh, tmp_path):
    blob = os.urandom(300_000)
    src = tmp_path / "weights.bin"
    src.write_bytes(blob)
    entry = mirror.publish(lab.root, src, "models/weights.bin")
    url = "http://artifacts.lab" + entry["path"]

    def fetch():
        r = ssh("gpu-node-t4", f"python3 - {url} <<'EOF'\n{DOWNLOAD}EOF")
        return r.stdout.split()

    assert fetch() == [str(len(blob)), hashlib.sha256(blob).hexdigest()]
    lab.fault("mirror", mode="corrupt")
    size, sha = fetch()
    assert int(size) == len(blob) and sha != entry["sha256"]
    lab.clear()
    lab.fault("mirror", mode="truncate", after=100_000)
    out = fetch()
    assert out[0] == "ERR" and out[2] != str(len(blob))
    lab.clear()
    lab.fault("mirror", mode="slow", rate=1_000_000)
    assert fetch() == [str(len(blob)), entry["sha256"]]


def test_clear_undoes_everything_recorded(lab):
    lab.fault("cut-ssh", "cpu-small")
    lab.fault("mirror", mode="corrupt")
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert lab.id in rules
    cleared = lab.clear()
    assert {f["kind"] for f in cleared} == {"cut-ssh", "mirror"}
    assert lab.id not in subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert not (lab.root / mirror.FAULT_FILE).exists()
    assert lab.store.load().faults == []
