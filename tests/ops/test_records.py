"""Energy records: the file the daemon appends to (real files), its shape, rotation, torn lines, refused paths,
failures that never stop the daemon, and the policy's ``records`` section."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tierfleet_ops.errors import ConfigError
from tierfleet_ops.policy import parse_policy
from tierfleet_ops.records import EnergyRecorder

from .test_daemon import host  # noqa: F401 - the in-process daemon fixture

READINGS = {"gpu_power_w": 151.25, "gpu_energy_j": 9001.5, "cpu_power_w": 38.0, "cpu_energy_j": 77.0,
            "board_power_w": float("nan"), "gpu_util_pct": 12.0, "cpu_mhz": 2400.0}


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def records(path):
    return [json.loads(x) for x in lines(path)]


def test_samples_and_switches_have_the_documented_shape(tmp_path):
    rec = EnergyRecorder(tmp_path / "energy.jsonl", clock=lambda: 1_800_000_000.25)
    assert rec.switch(None, "eco", "start") and rec.sample("eco", READINGS, 42.123)
    assert rec.sample("eco", {}, None)
    assert records(tmp_path / "energy.jsonl") == [
        {"t": 1_800_000_000.25, "event": "switch", "from": None, "to": "eco", "reason": "start"},
        # the /metrics source labels; NaN and readings that are no power or energy are left out
        {"t": 1_800_000_000.25, "profile": "eco", "power_w": {"gpu": 151.25, "cpu_package": 38.0},
         "energy_j": {"gpu": 9001.5, "cpu_package": 77.0}, "load_pct": 42.12},
        {"t": 1_800_000_000.25, "profile": "eco", "power_w": {}, "energy_j": {}, "load_pct": None},
    ]
    assert os.stat(tmp_path / "energy.jsonl").st_mode & 0o777 == 0o600
    assert rec.status() == {"path": str(tmp_path / "energy.jsonl"), "written": 3, "dropped": 0, "rotations": 0,
                            "error": None}


def test_a_hostile_reason_stays_on_its_line(tmp_path):
    rec = EnergyRecorder(tmp_path / "energy.jsonl")
    rec.switch("eco", "performance", 'x"\n{"t": 1, "profile": "forged"}\n' + "y" * 1000)
    (only,) = records(tmp_path / "energy.jsonl")
    assert only["to"] == "performance" and len(only["reason"]) == 200 and "\n" in only["reason"]


def test_rotation_keeps_one_old_file_and_every_line_whole(tmp_path):
    path = tmp_path / "energy.jsonl"
    rec = EnergyRecorder(path, max_bytes=1000)
    for i in range(60):
        assert rec.sample("eco", dict(READINGS, gpu_energy_j=float(i)), float(i))
    assert rec.rotations >= 5
    assert sorted(os.listdir(tmp_path)) == ["energy.jsonl", "energy.jsonl.1"]
    for p in (path, tmp_path / "energy.jsonl.1"):
        assert 0 < p.stat().st_size <= 1000
    old, new = records(tmp_path / "energy.jsonl.1"), records(path)
    # the two files hold the most recent records, in order, none lost at the seam
    energies = [r["energy_j"]["gpu"] for r in old + new]
    assert energies == [float(i) for i in range(60 - len(energies), 60)]


def test_two_threads_writing_at_once_leave_whole_lines(tmp_path):
    """The tick and a control request (a held profile) may write at the same moment, across rotations."""
    import threading

    path = tmp_path / "energy.jsonl"
    rec = EnergyRecorder(path, max_bytes=4096)
    start = threading.Barrier(2)

    def writer(profile):
        start.wait()
        for i in range(300):
            rec.sample(profile, dict(READINGS, gpu_energy_j=float(i)), None)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("eco", "performance")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert rec.written == 600 and rec.dropped == 0 and rec.rotations > 10
    got = records(tmp_path / "energy.jsonl.1") + records(path)  # every line parses
    for profile in ("eco", "performance"):  # each writer's records in its own order
        mine = [r["energy_j"]["gpu"] for r in got if r["profile"] == profile]
        assert mine == sorted(mine) and mine[-1] == 299.0


def test_a_torn_last_line_stays_one_garbled_line(tmp_path):
    path = tmp_path / "energy.jsonl"
    good = json.dumps({"t": 1, "profile": "eco"})
    path.write_text(good + "\n" + '{"t": 2, "profile": "ec')  # a crash in the middle of a write
    EnergyRecorder(path).sample("balanced", {}, None)
    got = lines(path)
    assert got[:2] == [good, '{"t": 2, "profile": "ec'] and json.loads(got[2])["profile"] == "balanced"


def test_a_symlink_in_its_place_is_refused_not_followed(tmp_path, caplog):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    (tmp_path / "energy.jsonl").symlink_to(target)
    rec = EnergyRecorder(tmp_path / "energy.jsonl")
    assert not rec.sample("eco", READINGS, 1.0)
    assert target.read_text() == "root:x:0:0\n"
    assert "symbolic link" in rec.error and rec.dropped == 1


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_directory_others_may_write_is_refused(tmp_path, mode):
    d = tmp_path / "state"
    d.mkdir()
    d.chmod(mode)
    rec = EnergyRecorder(d / "energy.jsonl")
    assert not rec.sample("eco", {}, None)
    assert "writable by group or others" in rec.error and not (d / "energy.jsonl").exists()


def test_a_missing_directory_is_made_private(tmp_path):
    rec = EnergyRecorder(tmp_path / "new" / "energy.jsonl")
    assert rec.sample("eco", {}, None)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_failures_are_logged_once_and_writing_resumes(tmp_path, caplog):
    path = tmp_path / "energy.jsonl"
    path.mkdir()  # a target that cannot be written
    rec = EnergyRecorder(path)
    with caplog.at_level(logging.INFO, logger="tierfleet_ops.records"):
        assert [rec.sample("eco", {}, None) for _ in range(5)] == [False] * 5
        assert rec.dropped == 5 and "Is a directory" in rec.error
        path.rmdir()
        assert rec.sample("eco", {}, None) and rec.error is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "records are dropped" in errors[0].getMessage()
    assert any("writing again" in r.getMessage() for r in caplog.records)
    assert len(records(path)) == 1


@pytest.fixture
def small_fs(tmp_path):
    """A real 8 KiB tmpfs (root only): a disk that fills up and can be made read-only."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if run.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_disk_that_fills_half_way_through_a_line_leaves_whole_lines(small_fs):
    path = small_fs / "energy.jsonl"
    rec = EnergyRecorder(path, max_bytes=1 << 20, clock=lambda: 1_800_000_000.5)
    (small_fs / "filler").write_bytes(b"x" * 4096)  # one of the two pages
    written = 0
    while rec.sample("eco", READINGS, 50.0):
        written += 1
    size = len(lines(path)[0]) + 1
    assert 4096 % size and written == 4096 // size
    # the kernel took the bytes that fit in the page and refused the rest; the piece was taken back
    assert rec.error.endswith(f"short write ({4096 % size} of {size} bytes)")
    assert len(records(path)) == written and path.read_bytes().endswith(b"\n")
    (small_fs / "filler").unlink()
    assert rec.sample("balanced", {}, None)
    assert [r["profile"] for r in records(path)] == ["eco"] * written + ["balanced"]


def test_the_policy_section_is_validated():
    base = textwrap.dedent("""\
        version: 1
        profiles: {eco: {cpufreq: {governor: powersave}}}
        """)
    assert parse_policy(base).records == {"enabled": True, "interval_s": 10.0, "max_kib": 8192}
    assert parse_policy(base + "records: {interval_s: 2, max_kib: 64, enabled: false}\n").records == {
        "enabled": False, "interval_s": 2.0, "max_kib": 64}
    for bad, message in [
        ("records: {interval_s: 0}", "records.interval_s: 0 is not a number in 1..3600; allowed: seconds 1..3600"),
        ("records: {interval_s: null}", "records.interval_s: null is not a value; leave the key out for the "
         "default (10.0)"),
        ("records: {max_kib: 8}", "records.max_kib: "),
        ("records: {max_kib: 1.5}", "records.max_kib: "),
        ("records: {enabled: 'yes please'}", "records.enabled: "),
        ("records: {path: /etc/passwd}", "records.path: unknown setting; allowed: enabled, interval_s, max_kib"),
        ("records: null", "records: null is not a value"),
        ("records: [1]", "records: "),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_policy(base + bad + "\n", "p.yaml")
        assert str(exc.value).startswith("p.yaml: ") and message in str(exc.value), (bad, str(exc.value))


# --- the daemon in-process: records from its own ticks --------------------------------------------

def test_the_daemon_records_samples_on_its_interval_and_every_switch(host):  # noqa: F811
    d, llama, fake, root, _ = host
    path = Path(d.cfg.state_path).parent / "energy.jsonl"
    for t in range(0, 25):
        d.tick(float(t))
    got = records(path)
    assert got[0]["event"] == "switch" and got[0]["from"] is None and got[0]["to"] == "eco" \
        and got[0]["reason"] == "start"
    samples = [r for r in got if "profile" in r]
    assert len(samples) == 3  # ticks 0, 10 and 20 (interval_s: 10 by default)
    assert "gpu" in samples[0]["power_w"] and {"gpu", "cpu_package"} <= set(samples[0]["energy_j"])
    llama.processing, llama.deferred = 4, 1  # 125 % of queue_full: performance after the dwell
    for t in range(25, 29):
        d.tick(float(t))
    assert d.selector.current == "performance"
    got = records(path)
    switch = [r for r in got if r.get("event") == "switch"][-1]
    assert switch["from"] == "eco" and switch["to"] == "performance" and switch["reason"].startswith("mean load")
    # a sample opens the new profile's time at once, not at the next interval
    assert got[-1]["profile"] == "performance" and got.index(switch) == len(got) - 2
    d.hold("balanced")  # a manual switch from the control side is recorded too
    assert records(path)[-1] | {"t": 0} == {
        "t": 0, "event": "switch", "from": "performance", "to": "balanced", "reason": "held"}
    assert d.status()["records"]["written"] == len(records(path))


def test_a_target_the_daemon_cannot_write_does_not_stop_it(host, caplog):  # noqa: F811
    d, llama, fake, root, _ = host
    path = Path(d.cfg.state_path).parent / "energy.jsonl"
    path.rename(path.with_name("moved"))
    path.mkdir()
    with caplog.at_level(logging.ERROR, logger="tierfleet_ops.records"):
        for t in range(0, 40):
            d.tick(float(t))
        d.hold("performance")
    assert d.ticks == 40 and d.selector.current == "performance"
    st = d.status()["records"]
    assert st["dropped"] == 5 and "Is a directory" in st["error"]  # 4 samples and the switch
    assert len([r for r in caplog.records if "energy records" in r.getMessage()]) == 1
    path.rmdir()
    d.tick(40.0)
    assert d.status()["records"]["error"] is None and records(path)[-1]["profile"] == "performance"
