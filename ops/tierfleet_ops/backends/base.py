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

    @classmethod
    def probe(cls, ctx: HostContext) -> Backend | str:
        """The backend when this host has it, else why not (said in ``status`` and ``dry-run``)."""
        raise NotImplementedError

    @classmethod
    def detect(cls, ctx: HostContext) -> Any:
        """The backend when this host has it, else ``None``."""
        found = cls.probe(ctx)
        return None if isinstance(found, str) else found

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


def backend_classes() -> list[type[Backend]]:
    """Every backend, in the order they are chosen: jetson, cpufreq, rapl, nvml."""
    from .cpufreq import CpufreqBackend
    from .jetson import JetsonBackend
    from .nvml import NvmlBackend
    from .rapl import RaplBackend

    return [JetsonBackend, CpufreqBackend, RaplBackend, NvmlBackend]


def probe_backends(ctx: HostContext, wanted: list[str] | None = None) -> tuple[list[Backend], dict[str, str]]:
    """The backends this host supports, and for each one it does not, why not."""
    found: list[Backend] = []
    absent: dict[str, str] = {}
    for cls in backend_classes():
        if wanted is not None and cls.name not in wanted:
            absent[cls.name] = f"not selected (--backend {' '.join(wanted)})"
            continue
        got = cls.probe(ctx)
        if isinstance(got, str):
            log.info("backend %s: absent: %s", cls.name, got)
            absent[cls.name] = got
        else:
            log.info("backend %s: %s", cls.name, got.describe())
            found.append(got)
    return found, absent


def detect_backends(ctx: HostContext, wanted: list[str] | None = None) -> list[Backend]:
    """Choose the backends this host supports, in a fixed order: jetson, cpufreq, rapl, nvml."""
    return probe_backends(ctx, wanted)[0]


def not_applied(profile: dict[str, dict[str, Any]], absent: dict[str, str]) -> list[dict[str, Any]]:
    """For each absent backend: why, and which of the profile's settings therefore do nothing.

    >>> not_applied({"cpufreq": {"governor": ["powersave"], "epp": None}, "nvml": {"power_limit_w": None}},
    ...             {"cpufreq": "no cpufreq driver", "rapl": "no RAPL"})
    [{'backend': 'cpufreq', 'reason': 'no cpufreq driver', 'settings': ['governor']}, {'backend': 'rapl', 'reason': 'no RAPL', 'settings': []}]
    """
    return [{"backend": name, "reason": why,
             "settings": [k for k, v in (profile.get(name) or {}).items() if v is not None]}
            for name, why in absent.items()]
