"""cpufreq backend on kernel-shaped trees: planning, ordering, apply/verify, dry run, unavailable."""

from __future__ import annotations

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.backends.cpufreq import CpufreqBackend
from tierfleet_ops.errors import NotAllowedError
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import Sysfs, is_writable

from . import machines
from .machines import KernelSysfs


def settings(**kw):
    return validate_section(kw, CpufreqBackend.SETTINGS, "test.yaml", "profiles.x.cpufreq")


def statuses(outcomes):
    return {o.name: o.status for o in outcomes}


def test_detects_policies_and_driver(tmp_path):
    be = CpufreqBackend.detect(HostContext(sysfs=Sysfs(machines.orin_agx(tmp_path))))
    assert be.policies == ["policy0", "policy4", "policy8"]
    assert be.driver() == "tegra194"
    assert be.policy_cpus("policy4") == [4, 5, 6, 7]


def test_this_host_has_no_cpufreq_policies(data_dir):
    # recorded from this VM: /sys/devices/system/cpu/cpufreq exists but is empty
    assert CpufreqBackend.detect(HostContext(sysfs=Sysfs(data_dir / "host_sys"))) is None


def test_governor_falls_back_along_the_list(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.intel_pstate(tmp_path, 2)))
    changes, skipped = be.plan(settings(governor="schedutil|ondemand|powersave"))
    # intel_pstate offers only performance/powersave: powersave is already set
    assert [(c.knob.name, c.value, c.note) for c in changes] == [
        ("cpufreq.policy0.scaling_governor", "powersave", "fallback from schedutil"),
        ("cpufreq.policy1.scaling_governor", "powersave", "fallback from schedutil"),
    ]
    assert skipped == []


def test_governor_none_offered_is_skipped_with_reason(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.intel_pstate(tmp_path, 1)))
    changes, skipped = be.plan(settings(governor=["schedutil", "ondemand"]))
    assert changes == []
    assert skipped[0].name == "cpufreq.policy0.scaling_governor"
    assert "none of ['schedutil', 'ondemand'] offered" in skipped[0].reason


def test_governor_is_written_before_epp(tmp_path):
    sysfs = KernelSysfs(machines.intel_pstate(tmp_path, 1))
    # start in performance: the kernel refuses EPP writes until the governor is powersave
    (tmp_path / "devices/system/cpu/cpufreq/policy0/scaling_governor").write_text("performance\n")
    be = CpufreqBackend(sysfs)
    changes, _ = be.plan(settings(epp="power", governor="powersave"))
    assert [c.knob.name.rsplit(".", 1)[1] for c in changes] == [
        "scaling_governor", "energy_performance_preference"]
    out = Applier(StateStore(None)).apply(changes)
    assert [o.status for o in out] == ["changed", "changed"]
    assert sysfs.writes == [("devices/system/cpu/cpufreq/policy0/scaling_governor", "powersave"),
                            ("devices/system/cpu/cpufreq/policy0/energy_performance_preference", "power")]


def test_epp_skipped_under_performance_on_intel_pstate(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.intel_pstate(tmp_path, 1)))
    changes, skipped = be.plan(settings(governor="performance", epp="power"))
    assert [c.knob.name for c in changes] == ["cpufreq.policy0.scaling_governor"]
    assert "forces EPP to performance" in skipped[0].reason


def test_epp_unavailable_on_acpi_cpufreq(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.acpi_cpufreq(tmp_path)))
    changes, skipped = be.plan(settings(epp="power"))
    assert changes == []
    assert {s.reason for s in skipped} == {"no EPP on this policy"}


@pytest.mark.parametrize("start_max, new", [("2500000", (100, 100)), ("3100000", (0, 0))])
def test_min_max_written_in_a_safe_order(tmp_path, start_max, new):
    sysfs = KernelSysfs(machines.acpi_cpufreq(tmp_path, 1))
    (tmp_path / "devices/system/cpu/cpufreq/policy0/scaling_max_freq").write_text(start_max + "\n")
    if new == (0, 0):
        (tmp_path / "devices/system/cpu/cpufreq/policy0/scaling_min_freq").write_text("2500000\n")
    be = CpufreqBackend(sysfs)
    changes, _ = be.plan(settings(min_freq_pct=new[0], max_freq_pct=new[1]))
    out = Applier(StateStore(None)).apply(changes)
    assert {o.status for o in out} == {"changed"}, out
    pol = tmp_path / "devices/system/cpu/cpufreq/policy0"
    want = "3100000" if new == (100, 100) else "1500000"
    assert (pol / "scaling_min_freq").read_text().strip() == want
    assert (pol / "scaling_max_freq").read_text().strip() == want


def test_percentages_snap_to_available_frequencies(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.orin_agx(tmp_path)))
    changes, _ = be.plan(settings(max_freq_pct=50))
    assert {c.value for c in changes} == {"1113600"}  # 50 % of 115200..2201600, snapped down
    assert len(changes) == 3


def test_boost_uses_the_global_file_or_no_turbo(tmp_path):
    be = CpufreqBackend(KernelSysfs(machines.acpi_cpufreq(tmp_path / "a")))
    assert [(c.knob.name, c.value) for c in be.plan(settings(boost=False))[0]] == [("cpufreq.boost", "0")]
    be = CpufreqBackend(KernelSysfs(machines.intel_pstate(tmp_path / "b", 1)))
    assert [(c.knob.name, c.value) for c in be.plan(settings(boost=False))[0]] == [
        ("intel_pstate.no_turbo", "1")]


def test_apply_twice_second_run_changes_nothing(tmp_path):
    sysfs = KernelSysfs(machines.intel_pstate(tmp_path, 2))
    be = CpufreqBackend(sysfs)
    want = settings(governor="powersave", epp="power", max_freq_pct=50, boost=False)
    ap = Applier(StateStore(None))
    first = ap.apply(be.plan(want)[0])
    assert "changed" in {o.status for o in first}
    n = len(sysfs.writes)
    second = ap.apply(be.plan(want)[0])
    assert {o.status for o in second} == {"unchanged"}
    assert len(sysfs.writes) == n


def test_dry_run_reports_the_diff_and_writes_nothing(tmp_path):
    sysfs = KernelSysfs(machines.intel_pstate(tmp_path, 1))
    be = CpufreqBackend(sysfs)
    state = StateStore(tmp_path / "state.json")
    out = Applier(state).apply(be.plan(settings(epp="power", max_freq_pct=50))[0], dry_run=True)
    assert [(o.name, o.before, o.want, o.status) for o in out] == [
        ("cpufreq.policy0.energy_performance_preference", "balance_performance", "power", "would-change"),
        ("cpufreq.policy0.scaling_max_freq", "4800000", "2800000", "would-change"),
    ]
    assert sysfs.writes == []
    assert state.originals == {} and not (tmp_path / "state.json").exists()


def test_denied_knob_is_unavailable_not_a_crash(tmp_path):
    rel = "devices/system/cpu/cpufreq/policy0/energy_performance_preference"
    sysfs = KernelSysfs(machines.intel_pstate(tmp_path, 1), denied=(rel,))
    be = CpufreqBackend(sysfs)
    out = Applier(StateStore(None)).apply(be.plan(settings(epp="power"))[0])
    assert statuses(out) == {"cpufreq.policy0.energy_performance_preference": "unavailable"}


def test_refused_write_is_reported_failed(tmp_path):
    sysfs = KernelSysfs(machines.intel_pstate(tmp_path, 1))
    be = CpufreqBackend(sysfs)
    knob = be.knobs()["cpufreq.policy0.scaling_governor"]
    from tierfleet_ops.knobs import Change

    out = Applier(StateStore(None)).apply([Change(knob, "schedutil")])
    assert out[0].status == "failed"
    assert "Invalid argument" in out[0].note


def test_writes_outside_the_allowlist_are_refused(tmp_path):
    sysfs = Sysfs(machines.intel_pstate(tmp_path, 1))
    for rel in ("devices/system/cpu/cpu0/online", "kernel/mm/transparent_hugepage/enabled",
                "devices/system/cpu/cpufreq/policy0/../../cpu0/online", "/etc/passwd"):
        assert not is_writable(rel)
        with pytest.raises(NotAllowedError, match="not on the sysfs allowlist"):
            sysfs.write(rel, "0")
    assert is_writable("devices/system/cpu/cpufreq/policy12/scaling_governor")


def test_readings_average_frequency(tmp_path):
    be = CpufreqBackend(Sysfs(machines.orin_agx(tmp_path)))
    assert be.readings() == {"cpu_freq_mhz": 1497.6}
