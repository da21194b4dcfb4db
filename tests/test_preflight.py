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
    ram = next(c for c in verdict.checks if c.name == "RAM")
    assert (ram.required, ram.actual, ram.ok) == (">= 8.0 GB", "unknown", False)


def test_gb_is_decimal():
    assert GB == 10**9


def _facts(kind: str, **outputs: list[str]):
    """A recorded host with some fact outputs replaced, parsed by the real facts."""
    from tests.fleets import HOSTS
    from tierfleet.profile import FACTS

    lines = {**HOSTS[kind], **outputs}
    return {key: fact().process(lines[key]) if lines.get(key) else fact().default()
            for key, (fact, _) in FACTS.items()}


def _checks(verdict):
    return {c.name: c for c in verdict.checks}


def test_t4_host_ram_passes_enterprise_and_only_cores_refuse(catalog):
    verdict = check_host(profile("gpu-t4"), catalog, "enterprise")
    checks = _checks(verdict)
    assert (checks["RAM"].ok, checks["RAM"].actual, checks["RAM"].required) == (True, "33.6 GB", ">= 32.0 GB")
    assert [c.name for c in verdict.checks if c.ok is False] == ["cores"]


@pytest.mark.parametrize(("kib", "fits"), [(15_625_000, True), (15_624_999, False), (8_000_000, False)])
def test_gpu_node_short_of_system_ram_is_refused(catalog, kib, fits):
    """A GPU node needs the tier's RAM too (15,625,000 KiB is exactly 16.0 GB)."""
    from tests.fleets import _mem

    host = build_profile("t4-lowram", _facts("gpu-t4", meminfo=_mem(kib)))
    verdict = check_host(host, catalog, "advanced")
    assert verdict.fits is fits
    assert _checks(verdict)["GPU memory"].ok is True
    if not fits:
        assert verdict.reason == f"RAM: needs 16.0 GB, has {kib * 1024 / 1e9:.1f} GB"
    auto = check_host(host, catalog, "auto")
    assert auto.tier == ("advanced" if fits else "basic")


def test_gpu_node_whose_nvidia_smi_fails_is_refused(catalog):
    """A driver that is installed but broken is not "no driver yet": the host is refused, not warned about."""
    failing = ["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 570.172"]
    host = build_profile("t4-broken", _facts("gpu-t4", gpus=failing))
    assert host.platform == "gpu" and host.gpu_error == failing[0]
    verdict = check_host(host, catalog, "advanced")
    memory = _checks(verdict)["GPU memory"]
    assert not verdict.fits and memory.ok is False and memory.actual == "unknown (nvidia-smi failed)"
    assert verdict.reason == ("GPU memory unknown: nvidia-smi failed: "
                              "Failed to initialize NVML: Driver/library version mismatch")
    assert "GPU memory unverified until the driver is installed" not in verdict.warnings
    assert check_host(host, catalog, "auto").tier is None


def test_gpu_listed_with_memory_not_available_is_refused(catalog):
    """nvidia-smi answers but prints ``[N/A]`` for memory.total: the GPU is there, its memory unknown."""
    line = "0, NVIDIA GH200 480GB, [N/A], 9.0, 570.172.08, Enabled, 900.00, 900.00, 100.00, 900.00, 1980, Disabled"
    host = build_profile("gh200", _facts("gpu-a100", gpus=[line]))
    assert host.gpu_names == ("NVIDIA GH200 480GB",) and host.gpu_memory_bytes is None
    verdict = check_host(host, catalog, "basic")
    memory = _checks(verdict)["GPU memory"]
    assert not verdict.fits and memory.ok is False and memory.actual == "unknown"
    assert verdict.reason == "GPU memory unknown"
    assert not verdict.warnings


@pytest.mark.parametrize(("free_kib", "fits"), [(1_464_844, True), (1_464_843, False)])
def test_the_tiers_disk_figure_decides_when_the_model_is_smaller(catalog, free_kib, fits):
    """basic asks 1.5 GB of disk; a 0.5 GB model override does not lower that (1,464,844 KiB >= 1.5 GB)."""
    from tests.fleets import _df

    small = ModelArtifact(name="m", quant="Q4_0", file="m.gguf", size_gb=0.5)
    host = build_profile("cpu", _facts("cpu-server", disk=_df(free_kib)))
    verdict = check_host(host, catalog, "basic", small)
    disk = _checks(verdict)["disk"]
    assert (disk.required, disk.ok) == (">= 1.5 GB", fits)
    if fits:
        assert verdict.fits and disk.note == ""
    else:
        assert verdict.reason == "disk: needs 1.5 GB, has 1.5 GB free at /var/lib/tierfleet/models"


def test_disk_unknown_names_no_path(catalog):
    host = build_profile("cpu", _facts("cpu-server", disk=["df: /var/lib: No such file or directory"]))
    verdict = check_host(host, catalog, "basic")
    assert verdict.reason == "disk unknown" and host.disk_path == ""


def test_cpu_host_holds_a_model_larger_than_the_ram_figure_in_ram(catalog):
    """On a CPU-only host the model lives in RAM: a 70 GB model needs 70 GB, not the tier's 32."""
    big = ModelArtifact(name="DeepSeek-R1-Distill-Llama-70B", quant="Q8_0", file="m.gguf", size_gb=70)
    verdict = check_host(profile("cpu-server"), catalog, "enterprise", big)
    assert not verdict.fits and verdict.reason.startswith("RAM: needs 70.0 GB, has 67.2 GB")
    gpu = check_host(profile("gpu-a100"), catalog, "enterprise", big)  # a GPU node holds it on the GPU
    assert _checks(gpu)["RAM"].required == ">= 32.0 GB"
    assert _checks(gpu)["GPU memory"].note == "GPU memory: needs 70.0 GB, has 42.9 GB"


def test_check_rows_for_a_gpu_without_driver_and_a_cpu_host(catalog):
    nodriver = _checks(check_host(profile("gpu-nodriver"), catalog, "basic"))["GPU memory"]
    assert (nodriver.required, nodriver.actual, nodriver.ok) == (">= 2.0 GB", "unknown (no working driver)", None)
    cpu = _checks(check_host(profile("cpu-server"), catalog, "basic"))["GPU memory"]
    assert (cpu.required, cpu.actual, cpu.ok, cpu.note) == ("n/a", "n/a (CPU only, model in RAM)", True, "")


def test_default_request_is_auto_and_unreachable_hosts_are_refused(catalog):
    import dataclasses

    from tierfleet.preflight import unreachable

    verdict = check_host(profile("gpu-a100"), catalog)
    assert (verdict.requested, verdict.tier) == ("auto", "enterprise")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.fits = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.checks[0].ok = False  # type: ignore[misc]
    gone = unreachable("h", "basic", "timed out")
    assert (gone.fits, gone.tier, gone.reason, gone.checks) == (False, None, "unreachable: timed out", ())


def test_the_platform_row_refuses_a_platform_the_tier_does_not_list(catalog, tmp_path):
    from pathlib import Path

    import yaml

    import tierfleet
    from tierfleet.catalog import load_catalog

    data = yaml.safe_load((Path(tierfleet.__file__).parent / "data" / "tiers.yaml").read_text())
    data["tiers"]["basic"]["platforms"] = ["jetson", "cpu"]
    (tmp_path / "tiers.yaml").write_text(yaml.safe_dump(data))
    refused = check_host(profile("gpu-t4"), load_catalog(tmp_path / "tiers.yaml"), "basic")
    row = _checks(refused)["platform"]
    assert (row.required, row.ok, row.actual.split(":")[0]) == ("jetson|cpu", False, "gpu")
    assert not refused.fits and refused.reason == "platform gpu is not one of jetson, cpu"
    # a host that fits: its rows carry no notes, so the reason and warnings stay clean
    fits = check_host(profile("gpu-t4"), catalog, "basic")
    assert _checks(fits)["platform"].required == "jetson|gpu|cpu"
    assert [(c.name, c.ok, c.note) for c in fits.checks] == [
        ("platform", True, ""), ("GPU memory", True, ""), ("RAM", True, ""), ("cores", True, ""), ("disk", True, "")]


def test_a_jetson_in_a_low_power_mode_keeps_its_cores(catalog):
    """A Jetson Nano in its 5 W nvpmodel mode has CPUs 2-3 offline (the daemon's eco profile puts it there): the
    board still has four cores, so it still fits the basic tier, with a note saying what is offline."""
    five_watt = [
        "/sys/devices/system/cpu/online:0-1",
        "/sys/devices/system/cpu/present:0-3",
        "/sys/devices/system/cpu/cpu0/topology/thread_siblings_list:0",
        "/sys/devices/system/cpu/cpu1/topology/thread_siblings_list:1",
    ]
    host = build_profile("nano-5w", _facts("nano", topology=five_watt))
    assert (host.physical_cores, host.logical_cpus) == (4, 4)
    assert any("2 physical core(s) offline" in note for note in host.notes)
    verdict = check_host(host, catalog, "basic")
    assert verdict.fits, verdict.reason
    assert _checks(verdict)["cores"].actual == "4"


def test_offline_smt_threads_are_no_cores_of_their_own(catalog):
    """SMT switched off (``smt/control``) leaves every second thread offline: the cores stay eight, not sixteen."""
    lines = ["/sys/devices/system/cpu/online:0-7", "/sys/devices/system/cpu/present:0-15"]
    lines += [f"/sys/devices/system/cpu/cpu{n}/topology/core_cpus_list:{n},{n + 8}" for n in range(8)]
    host = build_profile("t4-nosmt", _facts("gpu-t4", topology=lines))
    assert (host.physical_cores, host.logical_cpus) == (8, 16)
    assert not any("offline" in note for note in host.notes)
