"""The backend interface and the one place where backends are chosen from what the host has."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from ..knobs import Change, Knob, Skipped
from ..runner import Runner
from ..settings import Setting
from ..sysfs import Sysfs

log = logging.getLogger(__name__)


@dataclass
class HostContext:
    """What backends may touch: a sysfs root, a command runner and an NVML loader (lazy)."""

    sysfs: Sysfs = field(default_factory=Sysfs)
    runner: Runner = field(default_factory=Runner)
    #: returns the pynvml module (or a fake with the same names); called only when needed
    nvml_loader: Callable[[], Any] | None = None
    #: where files such as jetson_clocks' stored clocks live
    state_dir: str = "/var/lib/tierfleet-ops"


class Backend:
    """One family of hardware knobs. Subclasses set ``name`` and ``SETTINGS``."""

    name = "base"
    SETTINGS: dict[str, Setting] = {}

    def knobs(self) -> dict[str, Knob]:
        """Every knob this backend can turn on this host, by name."""
        raise NotImplementedError

    def plan(self, settings: dict[str, Any]) -> tuple[list[Change], list[Skipped]]:
        """Changes (in a safe order) that bring the host to ``settings``, and what is skipped."""
        raise NotImplementedError

    def order(self, changes: list[Change]) -> list[Change]:
        """Reorder writes that depend on each other; used for apply and for restore."""
        return changes

    def readings(self) -> dict[str, float]:
        """Current readings (``power_w``, ``energy_j``, ``util_pct``...), only those that exist."""
        return {}

    def after_apply(self, outcomes: list[Any]) -> None:
        """Hook run after a profile was applied (e.g. a Jetson mode change)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def close(self) -> None:
        """Release resources (NVML shutdown)."""


def detect_backends(ctx: HostContext, wanted: list[str] | None = None) -> list[Backend]:
    """Choose the backends this host supports, in a fixed order: jetson, cpufreq, rapl, nvml."""
    from .cpufreq import CpufreqBackend
    from .jetson import JetsonBackend
    from .nvml import NvmlBackend
    from .rapl import RaplBackend

    found: list[Backend] = []
    for cls in (JetsonBackend, CpufreqBackend, RaplBackend, NvmlBackend):
        if wanted is not None and cls.name not in wanted:
            continue
        backend = cls.detect(ctx)
        if backend is not None:
            log.info("backend %s: %s", cls.name, backend.describe())
            found.append(backend)
    return found
