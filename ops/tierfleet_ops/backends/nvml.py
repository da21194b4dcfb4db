"""NVIDIA GPUs through NVML (package nvidia-ml-py, imported as ``pynvml``), initialised lazily.

Knobs per GPU: the power limit (``nvidia-smi -i N -pl W``) within the reported constraints and
locked SM clocks (``nvidia-smi -i N -lgc MIN,MAX`` / ``-rgc``). For decode-heavy LLM serving,
locked clocks save more energy than a power cap: decode draws well under the cap, so a cap
rarely triggers. Readings: power (``nvidia-smi --query-gpu=power.draw``, W), total energy since
driver load (mJ in NVML, J here), GPU utilisation (%).

Every call goes through one forgiving wrapper: NotSupported / NoPermission make a knob or a
reading unavailable, never a crash. Settings do not survive a driver reload: :meth:`check`
notices one (lost handles, an energy counter that went backwards) so the daemon re-applies.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Union
from collections.abc import Callable

from ..errors import UnavailableError
from ..knobs import Change, Knob, Skipped
from ..settings import Setting, int_range
from .base import Backend, HostContext

log = logging.getLogger(__name__)

UNLOCKED = "unlocked"
UNKNOWN = "unknown"


def default_loader() -> Any:
    """Import pynvml only when an NVIDIA driver is present (``/proc/driver/nvidia/version``)."""
    if not os.path.exists("/proc/driver/nvidia/version"):
        raise UnavailableError("no NVIDIA driver loaded")
    import pynvml  # noqa: PLC0415 - lazy on purpose: Jetsons and CPU servers never need it

    return pynvml


def clock_pair(v: Any) -> list[int] | bool:
    """``[min, max]`` in MHz, or ``false`` for unlocked clocks."""
    if v is False:
        return False
    if (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                     for x in v) and 0 < v[0] <= v[1] <= 10000):
        return list(v)
    raise ValueError(f"{v!r} is not [min_mhz, max_mhz] with min <= max, nor false")


def _mhz_or_w(text: str | None) -> float | None:
    """``"700.00 W"`` / ``"1980 MHz"`` to a number; ``N/A`` to None."""
    if not text:
        return None
    head = text.split()[0]
    try:
        return float(head)
    except ValueError:
        return None


def parse_nvidia_smi_xml(text: str) -> list[dict[str, Any]]:
    """Per-GPU limits and clocks from ``nvidia-smi -q -x`` (the command-line view of the same
    NVML values; used to cross-check recordings).

    >>> xml = ("<nvidia_smi_log><gpu><product_name>X</product_name><gpu_power_readings>"
    ...        "<current_power_limit>700.00 W</current_power_limit><min_power_limit>200.00 W</min_power_limit>"
    ...        "<max_power_limit>700.00 W</max_power_limit><default_power_limit>700.00 W</default_power_limit>"
    ...        "</gpu_power_readings><max_clocks><sm_clock>1980 MHz</sm_clock></max_clocks></gpu></nvidia_smi_log>")
    >>> g = parse_nvidia_smi_xml(xml)[0]
    >>> g["name"], g["power_limit_w"], g["limit_range_w"], g["max_sm_mhz"]
    ('X', 700.0, (200.0, 700.0), 1980.0)
    """
    import xml.etree.ElementTree as ET  # noqa: N817 - trusted local tool output

    out = []
    for gpu in ET.fromstring(text).findall("gpu"):
        pr = gpu.find("gpu_power_readings")
        if pr is None:
            pr = gpu.find("power_readings")

        def f(node: Any, tag: str) -> float | None:
            return _mhz_or_w(node.findtext(tag)) if node is not None else None

        clocks: dict[int, list[int]] = {}
        for mem in gpu.findall("supported_clocks/supported_mem_clock"):
            m = _mhz_or_w(mem.findtext("value"))
            if m is not None:
                clocks[int(m)] = [int(_mhz_or_w(g.text) or 0) for g in mem.findall("supported_graphics_clock")]
        out.append({
            "name": gpu.findtext("product_name"),
            "power_limit_w": f(pr, "current_power_limit"),
            "default_limit_w": f(pr, "default_power_limit"),
            "limit_range_w": (f(pr, "min_power_limit"), f(pr, "max_power_limit")),
            "power_draw_w": f(pr, "instant_power_draw") or f(pr, "power_draw"),
            "max_sm_mhz": f(gpu.find("max_clocks"), "sm_clock"),
            "max_mem_mhz": f(gpu.find("max_clocks"), "mem_clock"),
            "supported_graphics_mhz": clocks,
        })
    return out


class NvmlClient:
    """A lazily initialised NVML client; :meth:`call` maps NVML errors to ``UnavailableError``."""

    def __init__(self, loader: Callable[[], Any]) -> None:
        self._loader = loader
        self.nvml: Any = None
        self.handles: list[Any] = []

    def start(self) -> None:
        if self.nvml is None:
            self.nvml = self._loader()
        self.nvml.nvmlInit()
        n = self.nvml.nvmlDeviceGetCount()
        self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]

    def stop(self) -> None:
        if self.nvml is not None and self.handles is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass
        self.handles = []

    def call(self, fn: str, *args: Any) -> Any:
        """``pynvml.<fn>(*args)``; raises :class:`UnavailableError` for any NVML error."""
        try:
            return getattr(self.nvml, fn)(*args)
        except self.nvml.NVMLError as exc:
            raise UnavailableError(f"{fn}: {exc}") from exc

    def get(self, fn: str, *args: Any) -> Any:
        """Like :meth:`call` but returns ``None`` (N/A) instead of raising."""
        try:
            return self.call(fn, *args)
        except UnavailableError:
            return None

    def lost(self, exc: BaseException) -> bool:
        """True when an error means the driver went away (uninitialised, GPU lost, reset)."""
        cause = exc.__cause__
        value = getattr(cause, "value", None)
        n = self.nvml
        return value in (getattr(n, "NVML_ERROR_UNINITIALIZED", 1), getattr(n, "NVML_ERROR_GPU_IS_LOST", 15),
                         getattr(n, "NVML_ERROR_RESET_REQUIRED", 16),
                         getattr(n, "NVML_ERROR_DRIVER_NOT_LOADED", 9))


class NvmlBackend(Backend):
    """Every GPU NVML reports, with a power-limit and a locked-SM-clocks knob each."""

    name = "nvml"
    SETTINGS = {
        s.name: s
        for s in (
            Setting("power_limit_w", "integer watts within the GPU's power-limit constraints",
                    "board power limit (nvidia-smi -pl); out-of-range values are skipped",
                    int_range(1, 5000), type=int),
            Setting("power_limit_pct", "integer 1..100 of the maximum constraint",
                    "power limit as a percentage of the maximum allowed limit", int_range(1, 100), type=int),
            Setting("locked_sm_clocks_mhz", "[min_mhz, max_mhz] or false",
                    "lock SM clocks (nvidia-smi -lgc); false resets them (-rgc)", clock_pair,
                    type=Union[list[int], bool]),
        )
    }

    def __init__(self, client: NvmlClient) -> None:
        self.s = client
        self._locked: list[str] = [UNLOCKED] * len(client.handles)
        self._last_energy: list[int | None] = [None] * len(client.handles)
        self._knobs = self._make_knobs()
        self.reloads = 0

    @classmethod
    def probe(cls, ctx: HostContext) -> NvmlBackend | str:
        client = NvmlClient(ctx.nvml_loader or default_loader)
        try:
            client.start()
        except UnavailableError as exc:
            log.debug("nvml: %s", exc)
            return str(exc)
        except ImportError as exc:
            log.debug("nvml: %s", exc)
            return f"pynvml cannot be imported ({exc}); install tierfleet-ops[nvml]"
        except OSError as exc:
            log.debug("nvml: %s", exc)
            return f"NVML: {exc}"
        except Exception as exc:  # NVMLError of a module we could not name before loading it
            if client.nvml is not None and isinstance(exc, client.nvml.NVMLError):
                log.info("nvml: not available: %s", exc)
                return f"NVML: {exc}"
            raise
        if not client.handles:
            client.stop()
            return "NVML reports no GPUs"
        return cls(client)

    # --- knobs ------------------------------------------------------------------------------

    def _make_knobs(self) -> dict[str, Knob]:
        knobs: dict[str, Knob] = {}
        for i in range(len(self.s.handles)):
            knobs[f"nvml.gpu{i}.power_limit_mw"] = Knob(
                f"nvml.gpu{i}.power_limit_mw", self.name, f"GPU {i} power limit, mW",
                read=lambda i=i: self._read_limit(i), write=lambda v, i=i: self._write_limit(i, v))
            knobs[f"nvml.gpu{i}.locked_sm_clocks"] = Knob(
                f"nvml.gpu{i}.locked_sm_clocks", self.name, f"GPU {i} locked SM clocks 'min,max' MHz",
                read=lambda i=i: self._read_locked(i), write=lambda v, i=i: self._write_locked(i, v))
        return knobs

    def knobs(self) -> dict[str, Knob]:
        return self._knobs

    def _read_limit(self, i: int) -> str | None:
        v = self.s.get("nvmlDeviceGetPowerManagementLimit", self.s.handles[i])
        return None if v is None else str(v)

    def _write_limit(self, i: int, value: str) -> None:
        self.s.call("nvmlDeviceSetPowerManagementLimit", self.s.handles[i], int(value))

    def _read_locked(self, i: int) -> str | None:
        # NVML has no getter for locked clocks: the value is the one this daemon last set
        # (UNKNOWN after a restart that found a change recorded by an earlier run)
        if self.s.get("nvmlDeviceGetMaxClockInfo", self.s.handles[i], self.s.nvml.NVML_CLOCK_SM) is None:
            return None
        return self._locked[i]

    def _write_locked(self, i: int, value: str) -> None:
        h = self.s.handles[i]
        if value == UNLOCKED:
            self.s.call("nvmlDeviceResetGpuLockedClocks", h)
        else:
            lo, hi = (int(x) for x in value.split(","))
            self.s.call("nvmlDeviceSetGpuLockedClocks", h, lo, hi)
        self._locked[i] = value

    def adopt_originals(self, names: list[str]) -> None:
        """Knobs an earlier run changed (from the state file) start as UNKNOWN, not UNLOCKED."""
        for i in range(len(self._locked)):
            if f"nvml.gpu{i}.locked_sm_clocks" in names:
                self._locked[i] = UNKNOWN

    # --- planning ---------------------------------------------------------------------------

    def plan(self, settings: dict[str, Any]) -> tuple[list[Change], list[Skipped]]:
        changes: list[Change] = []
        skipped: list[Skipped] = []
        for i, h in enumerate(self.s.handles):
            want_w = settings.get("power_limit_w")
            cons = self.s.get("nvmlDeviceGetPowerManagementLimitConstraints", h)
            name = f"nvml.gpu{i}.power_limit_mw"
            if settings.get("power_limit_pct") is not None and cons:
                want_w = cons[1] * settings["power_limit_pct"] // 100 // 1000
            if want_w is not None:
                if not cons:
                    skipped.append(Skipped(name, "power-limit constraints not reported"))
                elif not cons[0] <= want_w * 1000 <= cons[1]:
                    skipped.append(Skipped(name, f"{want_w} W outside {cons[0] // 1000}..{cons[1] // 1000} W"))
                else:
                    changes.append(Change(self._knobs[name], str(want_w * 1000)))
            clocks = settings.get("locked_sm_clocks_mhz")
            if clocks is not None:
                name = f"nvml.gpu{i}.locked_sm_clocks"
                top = self.s.get("nvmlDeviceGetMaxClockInfo", h, self.s.nvml.NVML_CLOCK_SM)
                if clocks is False:
                    changes.append(Change(self._knobs[name], UNLOCKED))
                elif top is not None and clocks[1] > top:
                    skipped.append(Skipped(name, f"{clocks[1]} MHz above the maximum SM clock {top} MHz"))
                else:
                    changes.append(Change(self._knobs[name], f"{clocks[0]},{clocks[1]}"))
        return changes, skipped

    # --- readings and driver reloads --------------------------------------------------------

    def readings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        power = [self.s.get("nvmlDeviceGetPowerUsage", h) for h in self.s.handles]
        energy = [self.s.get("nvmlDeviceGetTotalEnergyConsumption", h) for h in self.s.handles]
        util = [self.s.get("nvmlDeviceGetUtilizationRates", h) for h in self.s.handles]
        if any(p is not None for p in power):
            out["gpu_power_w"] = sum(p for p in power if p is not None) / 1000.0
        if any(e is not None for e in energy):
            out["gpu_energy_j"] = sum(e for e in energy if e is not None) / 1000.0
        if any(u is not None for u in util):
            out["gpu_util_pct"] = float(max(u.gpu for u in util if u is not None))
        return out

    def check(self) -> bool:
        """Detect a driver reload; re-open NVML and return True when one happened."""
        reloaded = False
        for i, h in enumerate(self.s.handles):
            try:
                e = self.s.call("nvmlDeviceGetTotalEnergyConsumption", h)
            except UnavailableError as exc:
                if self.s.lost(exc):
                    reloaded = True
                    break
                continue
            last = self._last_energy[i]
            if last is not None and e < last:
                reloaded = True
            self._last_energy[i] = e
        if reloaded:
            log.warning("nvml: driver reload detected; settings will be re-applied")
            self.reloads += 1
            self.s.stop()
            try:
                self.s.start()
            except Exception as exc:  # noqa: BLE001 - driver may still be coming back
                log.warning("nvml: re-open failed: %s", exc)
            self._locked = [UNLOCKED] * len(self.s.handles)  # a reload resets locked clocks
            self._last_energy = [None] * len(self.s.handles)
            self._knobs = self._make_knobs()
        return reloaded

    def describe(self) -> dict[str, Any]:
        names = [self.s.get("nvmlDeviceGetName", h) for h in self.s.handles]
        return {"name": self.name, "gpus": names}

    def close(self) -> None:
        self.s.stop()
