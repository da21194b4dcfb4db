"""Intel/AMD RAPL package energy from powercap sysfs (read-only: no knobs).

Command-line equivalent: ``cat /sys/class/powercap/intel-rapl:0/energy_uj`` (µJ, wraps at
``max_energy_range_uj``). Root-readable only on recent kernels: EACCES reads as unavailable.
"""

from __future__ import annotations

import time
from typing import Any
from collections.abc import Callable

from ..knobs import Change, Knob, Skipped
from ..sysfs import Sysfs
from .base import Backend, HostContext

POWERCAP = "class/powercap"


def rapl_domains(sysfs: Sysfs) -> list[str]:
    """Top-level package domains (``intel-rapl:0``, ``intel-rapl:1``; not sub-zones ``:0:0``)."""
    return [d for d in sysfs.listdir(POWERCAP) if d.startswith("intel-rapl:") and d.count(":") == 1]


class RaplBackend(Backend):
    """Package energy counters; the energy total survives counter wraps; power is the energy
    between two readings over the time between them (W)."""

    name = "rapl"
    SETTINGS: dict = {}

    def __init__(self, sysfs: Sysfs, domains: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.sysfs = sysfs
        self.domains = domains
        self.clock = clock
        self._last: dict[str, int] = {}
        self._total_uj = 0
        self._last_t: float | None = None
        self._last_total = 0

    @classmethod
    def probe(cls, ctx: HostContext) -> RaplBackend | str:
        found = rapl_domains(ctx.sysfs)
        domains = [d for d in found if ctx.sysfs.read(f"{POWERCAP}/{d}/energy_uj")]
        if domains:
            return cls(ctx.sysfs, domains)
        if found:
            return (f"{ctx.sysfs.path(POWERCAP)}/{found[0]}/energy_uj unreadable "
                    "(root only on recent kernels)")
        return f"no intel-rapl:N under {ctx.sysfs.path(POWERCAP)} (no RAPL on this CPU, or not exposed to a VM)"

    def knobs(self) -> dict[str, Knob]:
        return {}

    def plan(self, settings: dict[str, Any]) -> tuple[list[Change], list[Skipped]]:
        return [], []

    def readings(self) -> dict[str, float]:
        seen = False
        for d in self.domains:
            raw = self.sysfs.read(f"{POWERCAP}/{d}/energy_uj")
            if not raw or not raw.isdigit():
                continue
            seen = True
            now = int(raw)
            if d in self._last:
                delta = now - self._last[d]
                if delta < 0:  # wrapped
                    rng = self.sysfs.read(f"{POWERCAP}/{d}/max_energy_range_uj")
                    delta += int(rng) if rng and rng.isdigit() else 0
                self._total_uj += max(delta, 0)
            self._last[d] = now
        if not seen:
            return {}
        out = {"cpu_energy_j": self._total_uj / 1e6}
        now = self.clock()
        if self._last_t is not None and now > self._last_t:
            out["cpu_power_w"] = (self._total_uj - self._last_total) / 1e6 / (now - self._last_t)
        self._last_t, self._last_total = now, self._total_uj
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "domains": self.domains}
