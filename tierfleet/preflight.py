"""Preflight: does a host fit its tier? Pure functions over a :class:`~tierfleet.profile.HostProfile`.

Rules (the figures are the tier catalog's budgets, see ``tierfleet/data/tiers.yaml``):

- platform: the host's platform (jetson, gpu, cpu) must be one the tier lists.
- memory: on Jetsons (unified memory) total memory >= the tier's unified-memory figure; on GPU nodes the
  largest GPU >= the GPU-memory budget and RAM >= the RAM figure; on CPU-only hosts RAM >= the RAM figure.
  A model override raises the GPU budget (and the unified figure by the same amount) to its real size.
- cores: physical cores >= the tier's figure.
- disk: free space at the model directory >= max(tier figure, model size).
- Unknown values refuse the host, except GPU memory on a node whose GPU shows on the PCI bus but has no driver
  (no nvidia-smi) yet: the tier deploy installs the driver, so that check passes with a warning when the tier
  is named. A driver that is there but fails (mismatch, broken install) refuses the host.

``tier: auto`` resolves to the highest tier whose every check is verified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tierfleet.catalog import GB, Catalog, ModelArtifact, Tier
from tierfleet.profile import HostProfile


@dataclass(frozen=True)
class Check:
    """One requirement compared with the host: ``ok`` is False (refuse), True, or None (unverified, warn)."""

    name: str
    required: str
    actual: str
    ok: bool | None
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """The outcome for one host: the tier it was checked against and every check."""

    host: str
    requested: str
    tier: str | None
    fits: bool
    reason: str
    checks: tuple[Check, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    platform: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt_gb(value: int | float | None) -> str:
    """Format bytes as decimal GB.

    >>> fmt_gb(15_360 * 1024 * 1024), fmt_gb(None)
    ('16.1 GB', 'unknown')
    """
    if value is None:
        return "unknown"
    return f"{value / GB:.1f} GB"


def _at_least(name: str, need: float, have: float | None, fmt) -> Check:
    if have is None:
        return Check(name, f">= {fmt(need)}", "unknown", False, f"{name} unknown")
    ok = have >= need
    note = "" if ok else f"{name}: needs {fmt(need)}, has {fmt(have)}"
    return Check(name, f">= {fmt(need)}", fmt(have), ok, note)


def evaluate(profile: HostProfile, tier: Tier, model: ModelArtifact | None = None) -> list[Check]:
    """Compare a host with a tier; ``model`` overrides the tier's model artifact."""
    req = tier.requires
    model = model or tier.model
    model_bytes = model.size_bytes
    gpu_need = max(req.gpu_memory_gb * GB, model_bytes)

    checks = [
        Check(
            "platform",
            "|".join(tier.platforms),
            f"{profile.platform}: {profile.platform_detail}",
            profile.platform in tier.platforms,
            "" if profile.platform in tier.platforms else f"platform {profile.platform} is not one of {', '.join(tier.platforms)}",
        )
    ]

    if profile.platform == "jetson":
        unified_need = req.unified_memory_gb * GB + (gpu_need - req.gpu_memory_gb * GB)
        checks.append(_at_least("unified memory", unified_need, profile.ram_bytes, fmt_gb))
    elif profile.platform == "gpu":
        if profile.gpu_error:
            checks.append(
                Check("GPU memory", f">= {fmt_gb(gpu_need)}", "unknown (nvidia-smi failed)", False,
                      f"GPU memory unknown: nvidia-smi failed: {profile.gpu_error}")
            )
        elif profile.gpu_memory_bytes is None and not profile.gpu_names:
            checks.append(
                Check("GPU memory", f">= {fmt_gb(gpu_need)}", "unknown (no working driver)", None,
                      "GPU memory unverified until the driver is installed")
            )
        else:
            checks.append(_at_least("GPU memory", gpu_need, profile.gpu_memory_bytes, fmt_gb))
        checks.append(_at_least("RAM", req.ram_gb * GB, profile.ram_bytes, fmt_gb))
    else:
        checks.append(Check("GPU memory", "n/a", "n/a (CPU only, model in RAM)", True))
        checks.append(_at_least("RAM", max(req.ram_gb * GB, model_bytes), profile.ram_bytes, fmt_gb))

    checks.append(_at_least("cores", req.cores, profile.physical_cores, str))
    disk_check = _at_least("disk", max(req.disk_gb * GB, model_bytes), profile.disk_free_bytes, fmt_gb)
    if profile.disk_path:
        disk_check = Check(disk_check.name, disk_check.required, disk_check.actual,
                           disk_check.ok, disk_check.note and f"{disk_check.note} free at {profile.disk_path}")
    checks.append(disk_check)
    return checks


def _verdict(profile: HostProfile, requested: str, tier: Tier, checks: list[Check]) -> Verdict:
    failed = [c for c in checks if c.ok is False]
    warnings = [c.note for c in checks if c.ok is None] + list(profile.notes)
    reason = "; ".join(c.note for c in failed) if failed else f"fits tier {tier.name}"
    return Verdict(
        host=profile.name,
        requested=requested,
        tier=tier.name,
        fits=not failed,
        reason=reason,
        checks=tuple(checks),
        warnings=tuple(warnings),
        platform=profile.platform,
    )


def check_host(
    profile: HostProfile, catalog: Catalog, requested: str = "auto", model: ModelArtifact | None = None
) -> Verdict:
    """Check ``profile`` against tier ``requested`` (or, for ``auto``, the highest tier that fits)."""
    if requested != "auto":
        tier = catalog.tier(requested)
        return _verdict(profile, requested, tier, evaluate(profile, tier, model))

    # auto only picks a tier every check verified: an unverified GPU (no driver yet) gets none
    tiers = catalog.ordered()
    for tier in reversed(tiers):
        checks = evaluate(profile, tier, model)
        if all(c.ok is True for c in checks):
            return _verdict(profile, requested, tier, checks)
    smallest = tiers[0]
    verdict = _verdict(profile, requested, smallest, evaluate(profile, smallest, model))
    return Verdict(
        host=verdict.host,
        requested=requested,
        tier=None,
        fits=False,
        reason=f"no tier fits (smallest, {smallest.name}: {verdict.reason})",
        checks=verdict.checks,
        warnings=verdict.warnings,
        platform=verdict.platform,
    )


def unreachable(host: str, requested: str, error: str) -> Verdict:
    """The verdict for a host that could not be reached or read."""
    return Verdict(host=host, requested=requested, tier=None, fits=False, reason=f"unreachable: {error}")
