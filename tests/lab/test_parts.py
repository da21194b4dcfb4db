"""The lab's parts on their own (no lab needed): the wait helper, the pyinfra runner, SSH files,
fault checks and rules, the mirror's fault file, the machine record."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tierfleet.exceptions import ConfigError
from tierfleet.lab import machine, mirror
from tierfleet.lab.faults import Faults
from tierfleet.lab.runner import grand_total, run_pyinfra
from tierfleet.lab.ssh import SshFiles
from tierfleet.lab.system import wait_until


def test_wait_until_returns_the_first_true_value():
    values = iter([0, None, "", "done", "later"])
    assert wait_until(lambda: next(values), timeout=10, interval=0) == "done"


def test_wait_until_gives_the_last_value_when_time_is_up():
    calls = []
    assert wait_until(lambda: calls.append(1) or [], timeout=0.05, interval=0.01) == []
    assert len(calls) >= 2


def test_wait_until_lets_an_error_through_at_once():
    calls = []

    def check():
        calls.append(1)
        raise ConfigError("x", "y", "z")

    with pytest.raises(ConfigError):
        wait_until(check, timeout=10)
    assert calls == [1]


def test_grand_total_needs_the_results_table():
    assert grand_total("  Grand total   12   3   -   9\n") == {"hosts": 12, "success": 3, "error": 0, "no_change": 9}
    with pytest.raises(ValueError, match="no results table"):
        grand_total("--> Could not connect to any hosts\n")


def test_run_pyinfra_runs_the_venvs_pyinfra(tmp_path):
    run = run_pyinfra("--version", lab_dir=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("pyinfra: v3."), run.stdout


@dataclass
class FakeSshHost:
    name: str
    address: str

    def known_hosts_lines(self) -> list[str]:
        return [f"{self.address} ssh-ed25519 AAAAkey-{self.name}", f"{self.name} ssh-ed25519 AAAAkey-{self.name}"]


def test_ssh_files_for_exactly_the_hosts(tmp_path):
    ssh = SshFiles(tmp_path)
    ssh.write([FakeSshHost("a", "127.0.0.11"), FakeSshHost("b", "127.0.0.12")])
    assert ssh.known_hosts.read_text().splitlines() == [
        "127.0.0.11 ssh-ed25519 AAAAkey-a", "a ssh-ed25519 AAAAkey-a",
        "127.0.0.12 ssh-ed25519 AAAAkey-b", "b ssh-ed25519 AAAAkey-b"]
    # ssh itself reads the config: each name resolves to its address, the lab key, strict checking
    out = subprocess.run(["ssh", "-G", "-F", str(ssh.config), "b"], capture_output=True, text=True, check=True).stdout
    opts = dict(line.split(" ", 1) for line in out.splitlines())
    assert opts["hostname"] == "127.0.0.12" and opts["user"] == "root"
    assert opts["identityfile"] == str(tmp_path / "id_ed25519")
    assert opts["stricthostkeychecking"] == "true" and opts["controlpath"].startswith(str(tmp_path / "cm-"))
    ssh.write([])
    assert ssh.known_hosts.read_text() == "" and ssh.config.read_text() == ""
    ssh.close_masters()  # nothing listed: nothing to end


def test_ssh_key_is_made_once(tmp_path):
    ssh = SshFiles(tmp_path / "state")
    first = ssh.public_key()
    assert first.startswith("ssh-ed25519 ") and first.rstrip().endswith(" tierfleet-lab")
    assert ssh.public_key() == first


@pytest.mark.parametrize(("kind", "host", "message"), [
    ("melt", "a", "kind: 'melt'; allowed: stop, kill, cut-ssh, blackhole, fill-disk, mirror"),
    ("stop", None, "host: the stop fault needs a host name"),
    ("fill-disk", "", "host: the fill-disk fault needs a host name"),
])
def test_fault_checks_name_the_key(kind, host, message):
    with pytest.raises(ConfigError, match=message):
        Faults.check(kind, host)
    Faults.check("mirror", None)


def test_firewall_rules_are_tagged_with_lab_host_and_kind(tmp_path):
    faults = Faults(tmp_path, "tflabc123")
    host = FakeSshHost("gpu-a", "127.0.5.11")
    [cut] = faults.rules("cut-ssh", host)
    assert cut[:2] == ["INPUT", "-d"] and "tflabc123:gpu-a:cut-ssh" in cut and cut[-3:] == ["REJECT", "--reject-with",
                                                                                              "tcp-reset"]
    drop_in, drop_out = faults.rules("blackhole", host)
    assert drop_in[-1] == drop_out[-1] == "DROP" and "--dport" in drop_in and "--sport" in drop_out


def test_undo_names_the_hosts_to_start_again(tmp_path):
    mirror.set_fault(tmp_path, "corrupt")
    fill = tmp_path / "fill"
    fill.write_bytes(b"x")
    records = [{"kind": "stop", "host": "a"}, {"kind": "fill-disk", "host": "b", "file": str(fill)},
               {"kind": "kill", "host": "c"}, {"kind": "mirror", "host": None}, {"kind": "kill", "host": "a"}]
    assert Faults(tmp_path, "tflnone00").undo(records) == ["a", "c"]
    assert not fill.exists() and not (tmp_path / mirror.FAULT_FILE).exists()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"mode": "melt"}', '{"mode": "slow", "rate": "fast"}', "null"])
def test_a_bad_mirror_fault_file_is_no_fault(tmp_path, text):
    (tmp_path / mirror.FAULT_FILE).write_text(text)
    assert mirror.read_fault(tmp_path, "/artifacts/x") is None


def test_mirror_fault_applies_under_its_prefix_only(tmp_path):
    mirror.set_fault(tmp_path, "truncate", after=10, prefix="/artifacts/models/")
    fault = mirror.read_fault(tmp_path, "/artifacts/models/m.gguf")
    assert (fault.mode, fault.after) == ("truncate", 10)
    assert mirror.read_fault(tmp_path, "/apt/dists/lab/InRelease") is None
    mirror.clear_fault(tmp_path)
    assert mirror.read_fault(tmp_path, "/artifacts/models/m.gguf") is None


def test_machine_restore_puts_back_only_what_was_recorded(tmp_path, monkeypatch):
    limit = tmp_path / "max_user_instances"
    limit.write_text("128\n")
    monkeypatch.setattr(machine, "INOTIFY", limit)
    record: dict = {"inotify_max_user_instances": 128}
    limit.write_text("1024\n")
    machine.restore(record, busy=True)  # another lab's hosts still run: they keep the raised limit
    assert limit.read_text() == "1024\n" and record == {"inotify_max_user_instances": 128}
    machine.restore(record, busy=False)
    assert limit.read_text() == "128\n" and record == {}
    machine.restore(record, busy=False)  # nothing recorded: nothing written
    assert limit.read_text() == "128\n"


def test_the_inotify_limit_counts_every_lab_on_the_machine(tmp_path, monkeypatch):
    limit = tmp_path / "max_user_instances"
    monkeypatch.setattr(machine, "INOTIFY", limit)
    monkeypatch.setattr(machine, "NSPAWN_RUN", tmp_path)  # "mounted" already: the tmpfs step does nothing
    monkeypatch.setattr(machine, "mounts_under", lambda path: [path])
    limit.write_text("128\n")
    record: dict = {}
    machine.setup(record, 3, running=2)  # 5 hosts in all: enough instances
    assert limit.read_text() == "128\n" and record == {}
    machine.setup(record, 3, running=7)  # another lab already runs 7 hosts
    assert limit.read_text() == "1024\n" and record == {"inotify_max_user_instances": 128}


def test_nspawn_running_finds_a_process_by_its_name(tmp_path):
    fake = tmp_path / "systemd-nspawn"
    fake.write_bytes(Path("/bin/sleep").read_bytes())
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        assert machine.nspawn_running()
    finally:
        proc.kill()
        proc.wait()
