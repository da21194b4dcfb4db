"""One contract, every backend: the same checks run against each (psutil's test_contracts idea)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import Backend, HostContext
from tierfleet_ops.backends.cpufreq import CpufreqBackend
from tierfleet_ops.backends.jetson import JetsonBackend
from tierfleet_ops.backends.nvml import NvmlBackend
from tierfleet_ops.backends.rapl import RaplBackend
from tierfleet_ops.knobs import Knob
from tierfleet_ops.runner import Runner
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import Sysfs
from tierfleet_ops.testing.fakenvml import FakeNvml

from . import machines
from .machines import KernelSysfs

STANDINS = Path(__file__).parent / "standins"
ALL_NVML_READS = ("nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption",
                  "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerManagementLimit",
                  "nvmlDeviceGetPowerManagementLimitConstraints", "nvmlDeviceGetMaxClockInfo",
                  "nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetGpuLockedClocks")


def _cpufreq_intel(tmp, data, mp):
    return CpufreqBackend(KernelSysfs(machines.intel_pstate(tmp, 2))), {
        "governor": "powersave", "epp": "power", "max_freq_pct": 50, "boost": False}


def _cpufreq_orin(tmp, data, mp):
    return CpufreqBackend(KernelSysfs(machines.orin_agx(tmp))), {"governor": "powersave", "max_freq_pct": 30}


def _rapl(tmp, data, mp):
    return RaplBackend.detect(HostContext(sysfs=Sysfs(machines.acpi_cpufreq(tmp)))), {}


def _nvml(tmp, data, mp):
    fake = FakeNvml(data / "h200_nvml_probe.json")
    return NvmlBackend.detect(HostContext(nvml_loader=lambda: fake)), {
        "power_limit_w": 400, "locked_sm_clocks_mhz": [345, 1410]}


def _nvml_not_supported(tmp, data, mp):
    fake = FakeNvml(data / "h200_nvml_probe.json", unsupported=ALL_NVML_READS)
    return NvmlBackend.detect(HostContext(nvml_loader=lambda: fake)), {
        "power_limit_w": 400, "locked_sm_clocks_mhz": [345, 1410]}


def _nvml_no_permission(tmp, data, mp):
    fake = FakeNvml(data / "h200_nvml_probe.json", root=False)
    return NvmlBackend.detect(HostContext(nvml_loader=lambda: fake)), {
        "power_limit_w": 400, "locked_sm_clocks_mhz": [345, 1410]}


def _jetson(tmp, data, mp):
    root = machines.jetson_agx_orin(tmp / "host" / "sys")
    for k, v in (("NVPM_CONF", data / "orin_agx_nvpmodel.conf"), ("NVPM_STATE", tmp / "nvpm.state"),
                 ("NVPM_SYSROOT", root), ("NVPM_LOG", tmp / "log")):
        mp.setenv(k, str(v))
    ctx = HostContext(sysfs=Sysfs(root), runner=Runner(path=str(STANDINS)), state_dir=str(tmp / "st"))
    return JetsonBackend.detect(ctx), {"nvpmodel": "MAXN", "jetson_clocks": True, "gpu_max_freq_pct": 80}


BACKENDS = {"cpufreq-intel_pstate": _cpufreq_intel, "cpufreq-orin": _cpufreq_orin, "rapl": _rapl,
            "nvml-h200": _nvml, "nvml-not-supported": _nvml_not_supported,
            "nvml-no-permission": _nvml_no_permission, "jetson-orin": _jetson}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path, data_dir, monkeypatch):
    be, want = BACKENDS[request.param](tmp_path, data_dir, monkeypatch)
    assert isinstance(be, Backend), f"{request.param} not detected"
    yield request.param, be, validate_section(want, type(be).SETTINGS, "contract", be.name)
    be.close()


def test_knobs_read_as_string_or_unavailable(backend):
    _, be, _ = backend
    for name, k in be.knobs().items():
        assert isinstance(k, Knob) and k.name == name and name.split(".")[0] in (be.name, "intel_pstate")
        v = k.read()
        assert v is None or isinstance(v, str)


def test_empty_settings_change_nothing(backend):
    _, be, _ = backend
    changes, skipped = be.plan(validate_section({}, type(be).SETTINGS, "contract", be.name))
    assert changes == [] and skipped == []


def test_settings_are_self_describing(backend):
    _, be, _ = backend
    for key, st in type(be).SETTINGS.items():
        assert st.name == key and st.allowed and st.description


def test_apply_verify_idempotent_restore(backend):
    label, be, want = backend
    changes, skipped = be.plan(want)
    knobs = be.knobs()
    for ch in changes:
        assert ch.knob.name in knobs
    for s in skipped:
        assert s.reason
    before = {n: k.read() for n, k in knobs.items()}
    ap = Applier(StateStore(None))
    first = ap.apply(changes)
    allowed = {"changed", "unchanged", "unavailable", "failed"}
    assert {o.status for o in first} <= allowed, first
    if label in ("nvml-h200", "jetson-orin", "cpufreq-intel_pstate", "cpufreq-orin"):
        assert "changed" in {o.status for o in first}
        assert not {o.status for o in first} & {"failed", "verify-failed"}
    if label == "nvml-not-supported":
        assert changes == [] or {o.status for o in first} <= {"unavailable", "failed"}
    if label == "nvml-no-permission":
        assert {o.status for o in first} == {"failed"}
        assert all("Insufficient Permissions" in o.note for o in first)
    second = ap.apply(be.plan(want)[0])
    assert not {o.status for o in second} & {"changed"}, second
    ap.restore(be.knobs(), order=be.order)
    after = {n: k.read() for n, k in be.knobs().items()}
    assert after == before


def test_readings_are_finite_numbers(backend):
    _, be, _ = backend
    for k, v in be.readings().items():
        assert isinstance(k, str) and isinstance(v, float) and math.isfinite(v)


def test_describe_names_the_backend(backend):
    _, be, _ = backend
    assert be.describe()["name"] == be.name


def test_rapl_energy_survives_a_wrap_and_gives_power(tmp_path):
    root = machines.acpi_cpufreq(tmp_path)
    f = root / "class/powercap/intel-rapl:0/energy_uj"
    t = [100.0]
    be = RaplBackend(Sysfs(root), ["intel-rapl:0"], clock=lambda: t[0])
    f.write_text("262143000000\n")
    assert be.readings() == {"cpu_energy_j": 0.0}
    f.write_text("5000000\n")            # wrapped at max_energy_range_uj = 262143328850
    t[0] = 102.0
    r = be.readings()
    assert r["cpu_energy_j"] == pytest.approx((262143328850 - 262143000000 + 5000000) / 1e6)
    assert r["cpu_power_w"] == pytest.approx(r["cpu_energy_j"] / 2.0)
