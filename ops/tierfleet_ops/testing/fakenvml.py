"""A fake ``pynvml`` module that replays a recorded NVML probe (an H200 by default).

It has pynvml's real function names, argument order, units (mW, mJ, MHz) and exceptions: the
error classes, codes and constants are pynvml's own, so ``except pynvml.NVMLError_NotSupported``
works the same against the fake. Readings follow the recorded trace (``t``, ``p_mW``, ``e_mJ``,
``sm``, ``util``) on an injectable clock; writes are checked the way the driver checks them
(constraints, root, locked clock range).

Modelling choices where the recording cannot tell: after :meth:`FakeNvml.driver_reload` every
handle from before the reload raises ``NVML_ERROR_GPU_IS_LOST`` until ``nvmlInit`` is called
again, the energy counter restarts at zero and the power limit and locked clocks return to their
defaults, as they do on a real driver reload.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pynvml

_NAMES = ("NVMLError", "NVML_ERROR_UNINITIALIZED", "NVML_ERROR_INVALID_ARGUMENT",
          "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_GPU_IS_LOST",
          "NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_RESET_REQUIRED", "NVML_CLOCK_GRAPHICS",
          "NVML_CLOCK_SM", "NVML_CLOCK_MEM", "c_nvmlUtilization_t", "c_nvmlMemory_t")


class _Handle:
    def __init__(self, index: int, generation: int) -> None:
        self.index = index
        self.generation = generation


class FakeNvml:
    """Use an instance where the ``pynvml`` module would be used (``HostContext.nvml_loader``)."""

    def __init__(self, probe: dict[str, Any] | str | Path, clock: Callable[[], float] | None = None,
                 root: bool = True, unsupported: tuple[str, ...] = (),
                 smi_xml: str | Path | None = None) -> None:
        if not isinstance(probe, dict):
            probe = json.loads(Path(probe).read_text())
        self.probe = probe
        #: graphics clocks by memory clock; the probe has the top one, ``nvidia-smi -q -x`` all
        self.graphics_clocks = {probe["supported_mem_clocks_MHz"][0]: probe["supported_graphics_clocks_MHz_at_top_mem"]}
        if smi_xml is not None:
            from ..backends.nvml import parse_nvidia_smi_xml

            self.graphics_clocks.update(parse_nvidia_smi_xml(Path(smi_xml).read_text())[0]["supported_graphics_mhz"])
        for n in _NAMES:
            setattr(self, n, getattr(pynvml, n))
        # every NVMLError_* subclass pynvml builds from its codes
        for n in dir(pynvml):
            if n.startswith("NVMLError_"):
                setattr(self, n, getattr(pynvml, n))
        self._t0 = None
        self.clock = clock or time.monotonic
        self.root = root
        self.unsupported = set(unsupported)
        self.initialized = 0
        self.generation = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._energy_offset = 0
        self._reset_settings()

    def _reset_settings(self) -> None:
        self.power_limit_mW = self.probe["power_limit_default_mW"]
        self.locked: tuple[int, int] | None = None

    # --- helpers ----------------------------------------------------------------------------

    def _err(self, code: int) -> pynvml.NVMLError:
        return pynvml.NVMLError(code)

    def _enter(self, fn: str, handle: Any = None, *args: Any) -> None:
        self.calls.append((fn, args))
        if not self.initialized:
            raise self._err(pynvml.NVML_ERROR_UNINITIALIZED)
        if fn in self.unsupported:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle is not None:
            if not isinstance(handle, _Handle):
                raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if handle.generation != self.generation:
                raise self._err(pynvml.NVML_ERROR_GPU_IS_LOST)

    def _sample(self) -> dict[str, Any]:
        trace = self.probe["trace"]
        if self._t0 is None:
            self._t0 = self.clock()
        t = self.clock() - self._t0
        span = trace[-1]["t"] + (trace[-1]["t"] - trace[-2]["t"])
        loops, rem = divmod(t, span)
        row = trace[0]
        for r in trace:
            if r["t"] <= rem:
                row = r
            else:
                break
        energy_per_loop = trace[-1]["e_mJ"] - trace[0]["e_mJ"]
        out = dict(row)
        out["e_mJ"] = row["e_mJ"] + int(loops) * energy_per_loop - self._energy_offset
        return out

    def driver_reload(self) -> None:
        """Simulate ``rmmod nvidia; modprobe nvidia``: handles go stale, settings reset."""
        self.generation += 1
        self.initialized = 0
        self._energy_offset = self._sample()["e_mJ"] + self._energy_offset
        self._reset_settings()

    # --- pynvml API -------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append(("nvmlInit", ()))
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.calls.append(("nvmlShutdown", ()))
        if not self.initialized:
            raise self._err(pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialized -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return int(self.probe.get("count", 1))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < int(self.probe.get("count", 1)):
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index, self.generation)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return self.probe["name"]

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return self.probe["uuid"]

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """mW (``nvidia-smi --query-gpu=power.draw``)."""
        self._enter("nvmlDeviceGetPowerUsage", handle)
        return int(self._sample()["p_mW"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        """mJ since the driver was loaded."""
        self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        return int(self._sample()["e_mJ"])

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        self._enter("nvmlDeviceGetPowerManagementLimit", handle)
        return self.power_limit_mW

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        self._enter("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return self.probe["power_limit_default_mW"]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        return self.power_limit_mW

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        self._enter("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return list(self.probe["power_limit_constraints_mW"])

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        self._enter("nvmlDeviceSetPowerManagementLimit", handle, limit)
        if not self.root:
            raise self._err(pynvml.NVML_ERROR_NO_PERMISSION)
        lo, hi = self.probe["power_limit_constraints_mW"]
        if not lo <= limit <= hi:
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.power_limit_mW = int(limit)

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, type: int) -> int:  # noqa: A002 - pynvml's name
        self._enter("nvmlDeviceGetMaxClockInfo", handle, type)
        key = {pynvml.NVML_CLOCK_MEM: "max_clock_mem_MHz", pynvml.NVML_CLOCK_SM: "max_clock_sm_MHz",
               pynvml.NVML_CLOCK_GRAPHICS: "max_clock_graphics_MHz"}.get(type)
        if key is None:
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.probe[key]

    def nvmlDeviceGetClockInfo(self, handle: _Handle, type: int) -> int:  # noqa: A002
        self._enter("nvmlDeviceGetClockInfo", handle, type)
        if type == pynvml.NVML_CLOCK_MEM:
            return self.probe["clock_mem_MHz"]
        if type not in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        sm = int(self._sample()["sm"])
        if self.locked:
            sm = min(max(sm, self.locked[0]), self.locked[1])
        return sm

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: _Handle) -> list[int]:
        self._enter("nvmlDeviceGetSupportedMemoryClocks", handle)
        return list(self.probe["supported_mem_clocks_MHz"])

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: _Handle, memoryClockMHz: int) -> list[int]:  # noqa: N803
        self._enter("nvmlDeviceGetSupportedGraphicsClocks", handle, memoryClockMHz)
        if memoryClockMHz not in self.graphics_clocks:
            raise self._err(pynvml.NVML_ERROR_NOT_FOUND)  # NVML: not a supported memory clock
        return list(self.graphics_clocks[memoryClockMHz])

    def nvmlDeviceSetGpuLockedClocks(self, handle: _Handle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:  # noqa: N803
        self._enter("nvmlDeviceSetGpuLockedClocks", handle, minGpuClockMHz, maxGpuClockMHz)
        if not self.root:
            raise self._err(pynvml.NVML_ERROR_NO_PERMISSION)
        clocks = self.probe["supported_graphics_clocks_MHz_at_top_mem"]
        if not (min(clocks) <= minGpuClockMHz <= maxGpuClockMHz <= max(clocks)):
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.locked = (minGpuClockMHz, maxGpuClockMHz)

    def nvmlDeviceResetGpuLockedClocks(self, handle: _Handle) -> None:
        self._enter("nvmlDeviceResetGpuLockedClocks", handle)
        if not self.root:
            raise self._err(pynvml.NVML_ERROR_NO_PERMISSION)
        self.locked = None

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        self._enter("nvmlDeviceGetUtilizationRates", handle)
        u = pynvml.c_nvmlUtilization_t()
        u.gpu = int(self._sample()["util"])
        u.memory = 0
        return u

    def nvmlDeviceGetPerformanceState(self, handle: _Handle) -> int:
        self._enter("nvmlDeviceGetPerformanceState", handle)
        return int(self._sample()["pstate"])

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature", handle, sensor)
        return int(self._sample()["temp"])
