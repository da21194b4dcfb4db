"""NVML backend against the fake replaying the H200 recording."""

from __future__ import annotations

import pynvml
import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.backends.nvml import UNKNOWN, NvmlBackend
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.testing.fakenvml import FakeNvml


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def gpu(data_dir):
    clock = Clock()
    fake = FakeNvml(data_dir / "h200_nvml_probe.json", clock=clock)
    be = NvmlBackend.detect(HostContext(nvml_loader=lambda: fake))
    yield be, fake, clock
    be.close()


def s(**kw):
    return validate_section(kw, NvmlBackend.SETTINGS, "t.yaml", "profiles.x.nvml")


def test_fake_follows_pynvml_errors(data_dir):
    fake = FakeNvml(data_dir / "h200_nvml_probe.json", unsupported=("nvmlDeviceGetTotalEnergyConsumption",))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported) as e:
        fake.nvmlDeviceGetTotalEnergyConsumption(h)
    assert e.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceSetPowerManagementLimit(h, 900000)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(1)
    assert fake.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200000, 700000]
    assert fake.nvmlDeviceGetSupportedGraphicsClocks(h, 3201)[:2] == [1980, 1965]
    assert fake.nvmlDeviceGetUtilizationRates(h).gpu == 0
    fake.nvmlShutdown()


def test_init_is_lazy_and_shut_down_at_close(data_dir):
    fake = FakeNvml(data_dir / "h200_nvml_probe.json")
    be = NvmlBackend.detect(HostContext(nvml_loader=lambda: fake))
    assert fake.initialized == 1 and fake.calls[0][0] == "nvmlInit"
    be.close()
    assert fake.initialized == 0 and fake.calls[-1][0] == "nvmlShutdown"


def test_no_driver_means_no_backend():
    class Mod:
        NVMLError = pynvml.NVMLError

        def nvmlInit(self):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    assert NvmlBackend.detect(HostContext(nvml_loader=lambda: Mod())) is None

    def no_library():
        raise ImportError("No module named 'pynvml'")

    assert NvmlBackend.detect(HostContext(nvml_loader=no_library)) is None


def test_readings_follow_the_recorded_trace_in_watts_and_joules(gpu):
    be, fake, clock = gpu
    r0 = be.readings()
    assert r0["gpu_power_w"] == 123.799 and r0["gpu_energy_j"] == 2597.604 and r0["gpu_util_pct"] == 0.0
    clock.t = 12.0  # under the bf16 matmul load of the recording
    r1 = be.readings()
    assert r1["gpu_power_w"] > 600 and r1["gpu_util_pct"] >= 90.0
    assert r1["gpu_energy_j"] > r0["gpu_energy_j"]


def test_power_limit_within_constraints_else_skipped(gpu):
    be, fake, _ = gpu
    changes, skipped = be.plan(s(power_limit_w=150))
    assert changes == [] and skipped[0].reason == "150 W outside 200..700 W"
    changes, _ = be.plan(s(power_limit_pct=50))
    assert [(c.knob.name, c.value) for c in changes] == [("nvml.gpu0.power_limit_mw", "350000")]


def test_locked_clocks_apply_and_reset(gpu):
    be, fake, clock = gpu
    ap = Applier(StateStore(None))
    assert [o.status for o in ap.apply(be.plan(s(locked_sm_clocks_mhz=[345, 1410]))[0])] == ["changed"]
    assert fake.locked == (345, 1410)
    clock.t = 12.0
    assert fake.nvmlDeviceGetClockInfo(be.s.handles[0], pynvml.NVML_CLOCK_SM) <= 1410
    _, skipped = be.plan(s(locked_sm_clocks_mhz=[345, 2100]))
    assert skipped[0].reason == "2100 MHz above the maximum SM clock 1980 MHz"
    ap.restore(be.knobs())
    assert fake.locked is None


def test_locked_clocks_after_a_restart_are_reset_on_restore(gpu):
    be, fake, _ = gpu
    fake.nvmlDeviceSetGpuLockedClocks(be.s.handles[0], 345, 1200)  # left by a killed daemon
    state = StateStore(None)
    state.record("nvml.gpu0.locked_sm_clocks", "unlocked")
    be.adopt_originals(list(state.originals))
    assert be.knobs()["nvml.gpu0.locked_sm_clocks"].read() == UNKNOWN
    out = Applier(state).restore(be.knobs())
    assert [o.status for o in out] == ["changed"] and fake.locked is None


def test_driver_reload_detected_by_lost_handles(gpu):
    be, fake, clock = gpu
    ap = Applier(StateStore(None))
    ap.apply(be.plan(s(power_limit_w=300))[0])
    assert be.check() is False
    fake.driver_reload()
    assert be.check() is True and be.reloads == 1
    assert be.knobs()["nvml.gpu0.power_limit_mw"].read() == "700000"
    assert [o.status for o in ap.apply(be.plan(s(power_limit_w=300))[0])] == ["changed"]
    assert fake.power_limit_mW == 300000


def test_fake_agrees_with_the_recorded_nvidia_smi_xml(data_dir):
    from tierfleet_ops.backends.nvml import parse_nvidia_smi_xml

    smi = parse_nvidia_smi_xml((data_dir / "h200_nvidia-smi-q.xml").read_text())
    assert len(smi) == 1
    g = smi[0]
    fake = FakeNvml(data_dir / "h200_nvml_probe.json", smi_xml=data_dir / "h200_nvidia-smi-q.xml")
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert g["name"] == fake.nvmlDeviceGetName(h) == "NVIDIA H200"
    lo, hi = fake.nvmlDeviceGetPowerManagementLimitConstraints(h)
    assert g["limit_range_w"] == (lo / 1000, hi / 1000) == (200.0, 700.0)
    assert g["power_limit_w"] * 1000 == fake.nvmlDeviceGetPowerManagementLimit(h)
    assert g["max_sm_mhz"] == fake.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) == 1980
    assert sorted(g["supported_graphics_mhz"]) == sorted(fake.nvmlDeviceGetSupportedMemoryClocks(h))
    for mem, clocks in g["supported_graphics_mhz"].items():
        assert fake.nvmlDeviceGetSupportedGraphicsClocks(h, mem) == clocks
        assert len(clocks) == 110 and clocks[0] == 1980 and clocks[-1] == 345
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetSupportedGraphicsClocks(h, 1000)
