"""The ops policy's energy settings for one host, from its facts: Jetson power modes and GPU power limits.

:func:`plan_energy` is pure (tested on recorded fact output); :func:`policy_variables` reads the facts
through pyinfra, logs the notes and returns the variables of ``templates/ops-policy.yaml.j2``.

**Jetson power modes.** nvpmodel ids differ per board, so each profile names a mode of the board's own
conf (:class:`tierfleet.facts.jetson.NvpmodelConf`):

- ``eco``: the mode with the lowest watt figure in its name (``5W``, ``7W``, ``MODE_10W_2CORE``);
- ``performance``: a ``MAXN`` mode (``MAXN``, ``MAXN_SUPER``), else the highest watt figure;
- ``balanced``: the board's default mode, ``< PM_CONFIG DEFAULT=N >``.

Ties go to the mode that keeps the most CPUs online, then to the lowest id. A profile whose mode cannot be
told (no watt figure, no default, a name the policy would refuse) sets no mode, with a note. Jetson Nano
(0=MAXN, 1=5W, default 0): eco 5W, balanced MAXN, performance MAXN. Orin Nano 8GB (0=15W, 1=7W, default 0):
eco 7W, balanced 15W, performance 15W.

**GPU power limits** (whole watts, one value for every GPU of the host, as the policy has one):

- ``eco`` = 60 % and ``balanced`` = 80 % of each GPU's *default* limit (its maximum when the default is
  unknown; never the current limit, which the daemon itself changes), clamped to the GPU's
  ``[min, max]`` constraints; LLM decode is memory-bound and draws far below either (H200: 126 W with a
  context loaded, 690 W under a matmul at the 700 W cap), so the caps bound prefill and batch bursts;
- several GPUs: the lowest of their figures, clamped to the range every one of them accepts;
- ``performance`` keeps the template's ``power_limit_pct: 100`` (each GPU's maximum).

A GPU without readable constraints adds a note and no figure; with none left, the limits stay unset. H200
(200-700 W, default 700 W): eco 420 W, balanced 560 W.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from tierfleet_ops.settings import name as policy_name

from tierfleet.facts.jetson import NvpmodelConfInfo, NvpmodelMode
from tierfleet.facts.nvidia import Gpu, GpuQuery

#: fraction of a GPU's default power limit per profile
GPU_POWER_FRACTION: dict[str, float] = {"eco": 0.6, "balanced": 0.8}
_WATTS_RE = re.compile(r"(?<![0-9])([0-9]{1,4})W", re.IGNORECASE)


@dataclass(frozen=True)
class EnergyPlan:
    """Profile -> nvpmodel mode name, profile -> GPU power limit (W), and why anything was left unset."""

    jetson_modes: dict[str, str] = field(default_factory=dict)
    gpu_power_w: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def template_vars(self) -> dict[str, Any]:
        """The variables ``templates/ops-policy.yaml.j2`` takes for these settings."""
        return {"ops_jetson_modes": dict(self.jetson_modes), "ops_gpu_power_w": dict(self.gpu_power_w),
                "ops_energy_notes": list(self.notes)}


def mode_watts(name: str) -> int | None:
    """The watt figure in an nvpmodel mode name, ``None`` when it has none.

    >>> mode_watts("15W"), mode_watts("MODE_10W_2CORE"), mode_watts("7W_AI"), mode_watts("MAXN_SUPER")
    (15, 10, 7, None)
    """
    match = _WATTS_RE.search(name)
    return int(match[1]) if match else None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)[:120]


def jetson_modes(conf: NvpmodelConfInfo | None) -> tuple[dict[str, str], list[str]]:
    """Map eco/balanced/performance onto a board's nvpmodel modes (rule in the module docstring).

    >>> modes, notes = jetson_modes({"path": "/etc/nvpmodel.conf", "default": 0, "modes": [
    ...     {"id": 0, "name": "MAXN", "cpu_offline": []}, {"id": 1, "name": "5W", "cpu_offline": [2, 3]}]})
    >>> modes, notes
    ({'eco': '5W', 'balanced': 'MAXN', 'performance': 'MAXN'}, [])
    """
    if conf is None:
        return {}, ["no nvpmodel conf readable (/etc/nvpmodel.conf): the profiles set no power mode"]
    notes: list[str] = []
    valid: list[NvpmodelMode] = []
    for mode in conf["modes"]:
        try:
            policy_name(mode["name"])
        except ValueError:
            notes.append(f"nvpmodel mode {mode['id']} has a name the policy refuses "
                         f"({_printable(mode['name'])!r}): never chosen")
            continue
        valid.append(mode)

    def rank(mode: NvpmodelMode) -> tuple[int, int]:
        return (len(mode["cpu_offline"]), mode["id"])

    watts = [(w, m) for m in valid if (w := mode_watts(m["name"])) is not None]
    chosen: dict[str, str] = {}
    if watts:
        chosen["eco"] = min(watts, key=lambda wm: (wm[0], *rank(wm[1])))[1]["name"]
    maxn = [m for m in valid if m["name"].upper().startswith("MAXN")]
    if maxn:
        chosen["performance"] = min(maxn, key=rank)["name"]
    elif watts:
        chosen["performance"] = min(watts, key=lambda wm: (-wm[0], *rank(wm[1])))[1]["name"]
    default = next((m for m in valid if m["id"] == conf["default"]), None)
    if default is not None:
        chosen["balanced"] = default["name"]
    elif conf["default"] is None:
        notes.append(f"{_printable(conf['path'])} has no PM_CONFIG DEFAULT: balanced sets no power mode")
    else:
        notes.append(f"{_printable(conf['path'])}: default mode {conf['default']} is not a usable mode: "
                     "balanced sets no power mode")
    for profile in ("eco", "performance"):
        if profile not in chosen:
            notes.append(f"no nvpmodel mode names its watts or MAXN: {profile} sets no power mode")
    return {p: chosen[p] for p in ("eco", "balanced", "performance") if p in chosen}, notes


def _constraints(gpu: Gpu) -> tuple[int, int, float] | None:
    """(lowest whole watt, highest whole watt, reference limit) inside a GPU's constraints, or None."""
    lo, hi = gpu.get("power_min_limit_w"), gpu.get("power_max_limit_w")
    default = gpu.get("power_default_limit_w")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or not lo > 0:
        return None
    lo_w, hi_w = math.ceil(lo), math.floor(hi)
    if lo_w > hi_w:  # min above max, or no whole watt between them
        return None
    ref = default if default is not None and math.isfinite(default) and default > 0 else hi
    return lo_w, hi_w, ref


def gpu_power_limits(query: GpuQuery | None) -> tuple[dict[str, int], list[str]]:
    """eco/balanced GPU power limits in whole watts from the GPUs' constraints (rule in the module docstring).

    >>> limits, notes = gpu_power_limits({"error": None, "library_version": None, "gpus": [
    ...     {"index": 0, "name": "NVIDIA H200", "power_limit_w": 420.0, "power_default_limit_w": 700.0,
    ...      "power_min_limit_w": 200.0, "power_max_limit_w": 700.0}]})
    >>> limits, notes
    ({'eco': 420, 'balanced': 560}, [])
    """
    gpus = (query or {}).get("gpus") or []
    if not gpus:
        error = (query or {}).get("error") or "no GPU listed"
        return {}, [f"no GPU readable through nvidia-smi ({_printable(str(error))}): power limits left unset"]
    notes: list[str] = []
    ranges: list[tuple[int, int]] = []
    figures: dict[str, list[int]] = {p: [] for p in GPU_POWER_FRACTION}
    for gpu in gpus:
        cons = _constraints(gpu)
        if cons is None:
            notes.append(f"GPU {gpu.get('index')} ({_printable(gpu.get('name') or '?')}): no readable power-limit "
                         "constraints: no limit derived from it")
            continue
        lo_w, hi_w, ref = cons
        ranges.append((lo_w, hi_w))
        for profile, fraction in GPU_POWER_FRACTION.items():
            figures[profile].append(round(ref * fraction))
    if not ranges:
        return {}, notes + ["no GPU reports power-limit constraints: power limits left unset"]
    lo_all, hi_all = max(lo for lo, _ in ranges), min(hi for _, hi in ranges)
    if lo_all > hi_all:
        return {}, notes + [f"the GPUs' power-limit ranges do not overlap ({ranges}): power limits left unset"]
    # the lowest figure, clamped to the range every GPU accepts (for one GPU: its own constraints)
    return {p: min(max(min(v), lo_all), hi_all) for p, v in figures.items()}, notes


def plan_energy(platform: str, nvpmodel: NvpmodelConfInfo | None = None, gpus: GpuQuery | None = None) -> EnergyPlan:
    """The energy settings of a host of ``platform`` (``jetson``, ``gpu``, ``cpu``) from its facts. Pure.

    >>> plan_energy("cpu")
    EnergyPlan(jetson_modes={}, gpu_power_w={}, notes=())
    """
    if platform == "jetson":
        modes, notes = jetson_modes(nvpmodel)
        return EnergyPlan(jetson_modes=modes, notes=tuple(notes))
    if platform == "gpu":
        limits, notes = gpu_power_limits(gpus)
        return EnergyPlan(gpu_power_w=limits, notes=tuple(notes))
    return EnergyPlan()


def policy_variables(host: Any, platform: str) -> dict[str, Any]:
    """Read this host's nvpmodel conf or GPUs (pyinfra facts), log the notes, return the template variables."""
    from pyinfra import logger

    from tierfleet.facts.jetson import NvpmodelConf
    from tierfleet.facts.nvidia import NvidiaGpus

    plan = plan_energy(
        platform,
        nvpmodel=host.get_fact(NvpmodelConf) if platform == "jetson" else None,
        gpus=host.get_fact(NvidiaGpus) if platform == "gpu" else None,
    )
    for note in plan.notes:
        host.log_styled(f"energy policy: {note}", fg="yellow", log_func=logger.warning)
    return plan.template_vars()
