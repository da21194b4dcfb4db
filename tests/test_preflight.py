"""Preflight verdicts on whole-host fact recordings (pure: no connector)."""

from __future__ import annotations

import pytest

from tests.fleets import facts_for
from tierfleet.catalog import GB, ModelArtifact
from tierfleet.preflight import check_host
from tierfleet.profile import build_profile


def profile(kind: str):
    return build_profile(kind, facts_for(kind))


@pytest.mark.parametrize(
    ("kind", "tier", "fits", "reason"),
    [
        ("orin-nano", "basic", True, "fits tier basic"),
        ("orin-nano", "advanced", False, "cores: needs 8, has 6"),
        ("nano", "basic", True, "fits tier basic"),
        ("nano", "advanced", False, "unified memory: needs 5.5 GB, has 4.2 GB; cores: needs 8, has 4"),
        ("gpu-t4", "advanced", True, "fits tier advanced"),
        ("gpu-t4", "enterprise", False, "cores: needs 16, has 8"),
        ("gpu-a100", "enterprise", True, "fits tier enterprise"),
        ("cpu-server", "enterprise", True, "fits tier enterprise"),
        ("cpu-small", "basic", False, "RAM: needs 8.0 GB, has 4.1 GB; cores: needs 4, has 2; "
         "disk: needs 1.9 GB, has 0.9 GB free at /var/lib/tierfleet/models"),
    ],
)
def test_verdicts(catalog, kind, tier, fits, reason):
    verdict = check_host(profile(kind), catalog, tier)
    assert verdict.fits is fits
    assert verdict.reason == reason
    assert verdict.tier == tier


@pytest.mark.parametrize(
    ("kind", "resolved"),
    [("orin-nano", "basic"), ("nano", "basic"), ("gpu-t4", "advanced"), ("gpu-a100", "enterprise"),
     ("cpu-server", "enterprise")],
)
def test_auto_picks_highest_tier_that_fits(catalog, kind, resolved):
    verdict = check_host(profile(kind), catalog, "auto")
    assert verdict.fits and verdict.tier == resolved and verdict.requested == "auto"


def test_auto_with_no_tier_fitting_explains_the_smallest(catalog):
    verdict = check_host(profile("cpu-small"), catalog, "auto")
    assert not verdict.fits and verdict.tier is None
    assert verdict.reason.startswith("no tier fits (smallest, basic: RAM: needs 8.0 GB")


def test_profiles_read_platform_and_sizes():
    orin = profile("orin-nano")
    assert (orin.platform, orin.unified_memory, orin.physical_cores) == ("jetson", True, 6)
    assert "JetPack 6.2" in orin.platform_detail and "tegra234" in orin.platform_detail
    t4 = profile("gpu-t4")
    assert (t4.platform, t4.gpu_memory_bytes, t4.physical_cores, t4.logical_cpus) == ("gpu", 15360 * 2**20, 8, 16)
    assert t4.cpu_variant == "avx512" and not t4.driver_mismatch
    nano = profile("nano")
    assert any("JetPack 4" in note for note in nano.notes)


def test_gpu_without_driver_passes_memory_with_a_warning(catalog):
    verdict = check_host(profile("gpu-nodriver"), catalog, "enterprise")
    assert verdict.fits
    memory = next(c for c in verdict.checks if c.name == "GPU memory")
    assert memory.ok is None
    assert "GPU memory unverified until the driver is installed" in verdict.warnings


def test_model_override_larger_than_budget_raises_requirements(catalog):
    big = ModelArtifact(name="DeepSeek-R1-Distill-Qwen-14B", quant="Q4_K_M",
                        file="DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf", size_gb=8.99)
    verdict = check_host(profile("gpu-t4"), catalog, "advanced", big)
    assert verdict.fits  # 16.1 GB T4 holds 9 GB
    checks = {c.name: c for c in verdict.checks}
    assert checks["GPU memory"].required == ">= 9.0 GB"
    assert checks["disk"].required == ">= 9.0 GB"
    verdict = check_host(profile("orin-nano"), catalog, "basic", big)
    assert not verdict.fits
    assert "unified memory: needs 10.5 GB" in verdict.reason


def test_driver_mismatch_is_noted():
    facts = facts_for("gpu-t4")
    facts["driver_loaded"] = "550.120"
    p = build_profile("t4", facts)
    assert p.driver_mismatch
    assert any("driver/library mismatch: loaded 550.120, installed 570.172.08" in n for n in p.notes)


def test_unknown_facts_refuse(catalog):
    p = build_profile("blank", {})
    verdict = check_host(p, catalog, "basic")
    assert not verdict.fits
    assert verdict.reason == "RAM unknown; cores unknown; disk unknown"


def test_gb_is_decimal():
    assert GB == 10**9
