"""Originals are persisted before the first write and survive a SIGKILL of the daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.cpufreq import CpufreqBackend
from tierfleet_ops.errors import ConfigError
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore

from . import machines
from .machines import KernelSysfs

ECO = {"governor": "powersave", "epp": "power", "max_freq_pct": 25, "boost": False}


def read(root, rel):
    return (root / "devices/system/cpu" / rel).read_text().strip()


def test_restore_after_sigkill_uses_the_first_originals(tmp_path):
    root = machines.intel_pstate(tmp_path / "sys", 2)
    state_file = tmp_path / "state" / "state.json"
    # a real process applies the eco settings and is then killed with SIGKILL
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))!r})
        from tests.ops.machines import KernelSysfs
        from tierfleet_ops.apply import Applier
        from tierfleet_ops.backends.cpufreq import CpufreqBackend
        from tierfleet_ops.settings import validate_section
        from tierfleet_ops.state import StateStore
        be = CpufreqBackend(KernelSysfs({str(root)!r}))
        s = validate_section({ECO!r}, CpufreqBackend.SETTINGS, "t", "p")
        out = Applier(StateStore({str(state_file)!r})).apply(be.plan(s)[0])
        print("applied", [o.status for o in out], flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("applied") and "changed" in line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert read(root, "cpufreq/policy0/energy_performance_preference") == "power"
    assert read(root, "intel_pstate/no_turbo") == "1"

    # restarted daemon: applying again must not overwrite the recorded originals
    be = CpufreqBackend(KernelSysfs(root))
    state = StateStore(state_file)
    ap = Applier(state)
    again = ap.apply(be.plan(validate_section(ECO, CpufreqBackend.SETTINGS, "t", "p"))[0])
    assert {o.status for o in again} == {"unchanged"}
    assert state.originals["cpufreq.policy0.energy_performance_preference"] == "balance_performance"

    out = ap.restore(be.knobs(), order=be.order)
    assert {o.status for o in out} == {"changed"}
    assert read(root, "cpufreq/policy0/energy_performance_preference") == "balance_performance"
    assert read(root, "cpufreq/policy1/scaling_max_freq") == "4800000"
    assert read(root, "intel_pstate/no_turbo") == "0"
    assert json.loads(state_file.read_text())["originals"] == []


def test_restore_orders_min_max_writes(tmp_path):
    root = machines.acpi_cpufreq(tmp_path / "sys", 1)
    pol = root / "devices/system/cpu/cpufreq/policy0"
    (pol / "scaling_min_freq").write_text("1500000\n")
    (pol / "scaling_max_freq").write_text("1500000\n")
    state = StateStore(tmp_path / "s.json")
    # recorded over two applications: min first, then max; both originals at the top clock
    state.record("cpufreq.policy0.scaling_max_freq", "3100000")
    state.record("cpufreq.policy0.scaling_min_freq", "3100000")
    be = CpufreqBackend(KernelSysfs(root))
    # latest-first alone would raise min above max (EINVAL); the backend's order raises max first
    unordered = Applier(StateStore(None))
    unordered.state.originals = dict(state.originals)
    assert [o.status for o in unordered.restore(be.knobs(), dry_run=True)] == ["would-change"] * 2
    out = Applier(state).restore(be.knobs(), order=be.order)
    assert [(o.name, o.status) for o in out] == [("cpufreq.policy0.scaling_max_freq", "changed"),
                                                 ("cpufreq.policy0.scaling_min_freq", "changed")]
    assert read(root, "cpufreq/policy0/scaling_min_freq") == "3100000"


def test_restore_without_order_hits_the_kernel_check(tmp_path):
    root = machines.acpi_cpufreq(tmp_path / "sys", 1)
    pol = root / "devices/system/cpu/cpufreq/policy0"
    (pol / "scaling_max_freq").write_text("1500000\n")
    state = StateStore(None)
    state.record("cpufreq.policy0.scaling_max_freq", "3100000")
    state.record("cpufreq.policy0.scaling_min_freq", "3100000")
    be = CpufreqBackend(KernelSysfs(root))
    out = Applier(state).restore(be.knobs())
    assert out[0].name == "cpufreq.policy0.scaling_min_freq" and out[0].status == "failed"


def test_restore_keeps_originals_of_knobs_that_are_gone(tmp_path):
    state = StateStore(tmp_path / "s.json")
    state.record("nvml.gpu0.power_limit_mw", "700000")
    out = Applier(state).restore({})
    assert out == []
    assert StateStore(tmp_path / "s.json").originals == {"nvml.gpu0.power_limit_mw": "700000"}


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match=r"state.json: originals: unreadable state file"):
        StateStore(p)
