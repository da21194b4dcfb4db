"""The CLI: subcommands, exit codes and messages mapped in one place, offline dry-run."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from click.testing import CliRunner

from tierfleet_ops import logs
from tierfleet_ops.cli import cli, main
from tierfleet_ops.notify import notify, watchdog_interval_s
from tierfleet_ops.policy import EXAMPLE

from . import machines


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_check_policy_ok_and_bad(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    code, out, _ = run_main(capsys, "check-policy", str(good))
    assert code == 0 and "good.yaml: ok, policy " in out and "profiles balanced, eco, performance" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("epp: power", "epp: max"))
    code, _, err = run_main(capsys, "check-policy", str(bad))
    assert code == 2
    assert err.strip() == ("tierfleet-ops: error: " + str(bad) + ": profiles.eco.cpufreq.epp: 'max' is not one of "
                           "default, performance, balance_performance, balance_power, power; allowed: default, "
                           "performance, balance_performance, balance_power, power")


def test_status_without_a_daemon_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_main(capsys, "status", "--socket", str(tmp_path / "none.sock"))
    assert code == 4 and "none.sock: cannot reach the daemon" in err


def test_offline_dry_run_prints_the_diff_and_changes_nothing(tmp_path, capsys, data_dir):
    root = machines.intel_pstate(tmp_path / "sys", 1)
    pol = tmp_path / "p.yaml"
    pol.write_text(EXAMPLE)
    before = sorted((p, p.read_text()) for p in root.rglob("*") if p.is_file())
    code, out, _ = run_main(capsys, "dry-run", "--policy", str(pol), "--profile", "eco", "--sysfs-root", str(root),
                            "--fake-nvml", str(data_dir / "h200_nvml_probe.json"))
    assert code == 0
    assert out.splitlines() == [
        "profile eco:",
        "  ~ intel_pstate.no_turbo: 0 -> 1",
        "  = cpufreq.policy0.scaling_governor: powersave -> powersave",
        "  ~ cpufreq.policy0.energy_performance_preference: balance_performance -> power",
        "  ~ cpufreq.policy0.scaling_max_freq: 4800000 -> 3200000",
        "  ~ nvml.gpu0.locked_sm_clocks: unlocked -> 345,1200",
        f"  x jetson: absent: not a Jetson: {tmp_path}/proc/device-tree/model is missing and nvpmodel is not on PATH",
        f"  x rapl: absent: no intel-rapl:N under {root}/class/powercap (no RAPL on this CPU, or not exposed to a VM)",
    ]
    assert sorted((p, p.read_text()) for p in root.rglob("*") if p.is_file()) == before
    code, _, err = run_main(capsys, "dry-run", "--policy", str(pol), "--profile", "turbo", "--sysfs-root", str(root))
    assert code == 2 and "profile: 'turbo' is not a profile; allowed: balanced, eco, performance" in err


def test_subcommands_and_help():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for c in ("run", "status", "profile", "reload", "dry-run", "check-policy", "bench"):
        assert c in r.output
    r = CliRunner().invoke(cli, ["profile", "--help"])
    assert "hold" in r.output and "release" in r.output


def test_sd_notify_datagram(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    try:
        assert notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": path})
        assert s.recv(100) == b"READY=1\nSTATUS=ok"
    finally:
        s.close()
    assert notify("READY=1", {}) is False
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_journal_lines_carry_priority_and_fields():
    rec = logging.LogRecord("tierfleet_ops.daemon", logging.WARNING, __file__, 1, "profile %s applied",
                            ("eco",), None)
    rec.fields = {"reason": "load 80%", "changed": 3}
    assert logs.JournalFormatter(True).format(rec) == \
        "<4>tierfleet_ops.daemon: profile eco applied reason=load 80% changed=3"
    assert logs.JournalFormatter(False).format(rec).endswith("warning tierfleet_ops.daemon: profile eco applied "
                                                             "reason=load 80% changed=3")


def test_dry_run_on_a_host_without_backends_says_what_is_absent_and_why(tmp_path, capsys):
    root = tmp_path / "sys"
    root.mkdir()
    pol = tmp_path / "p.yaml"
    pol.write_text(EXAMPLE)
    code, out, _ = run_main(capsys, "dry-run", "--policy", str(pol), "--sysfs-root", str(root),
                            "--runner-path", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "profile balanced:"
    assert f"  x cpufreq: absent: no {root}/devices/system/cpu/cpufreq: the kernel has no cpufreq driver here " \
           "(usual in VMs and containers); not applied: governor, epp, max_freq_pct" in lines
    assert "  x nvml: absent: no NVIDIA driver loaded; not applied: locked_sm_clocks_mhz" in lines \
        or any(ln.startswith("  x nvml: absent: ") for ln in lines)
    assert any(ln.startswith("  x jetson: absent: not a Jetson: ") for ln in lines)
    assert any(ln.startswith("  x rapl: absent: no intel-rapl:N under ") for ln in lines)
    assert lines[-1] == "  nothing to compare: no knob of this profile exists on this host"
    # --backend: the others are named as not selected
    code, out, _ = run_main(capsys, "dry-run", "--policy", str(pol), "--sysfs-root", str(root),
                            "--runner-path", str(tmp_path), "--backend", "cpufreq")
    assert "  x nvml: absent: not selected (--backend cpufreq); not applied: locked_sm_clocks_mhz" in out
