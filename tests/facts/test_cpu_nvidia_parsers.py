"""CPU and NVIDIA fact parsers on the cases recordings do not cover: flags a hypervisor masks, a power limit
set below the default, CPU lists at their edges, nvidia-smi's failure modes. Each goes through the fact's
``process()`` (the value pyinfra hands the deploy) or the profile and runtime choice built from it."""

from __future__ import annotations

import pytest

from tierfleet.deploys.tier import runtime_variant
from tierfleet.facts.cpu import AllowedCpus, CpuFreq, CpuIsa, CpuTopology
from tierfleet.facts.nvidia import (
    NO_NVIDIA_SMI,
    NvidiaDriverInstalled,
    NvidiaDriverLoaded,
    NvidiaGpus,
    NvidiaPciDevices,
)
from tierfleet.profile import build_profile

V3 = "sse4_2 avx avx2 bmi2 fma f16c"
BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 sse4_1 popcnt aes xsave movbe"


@pytest.mark.parametrize(
    ("flags", "variant", "build"),
    [
        (f"{BASE} {V3}", "avx2", "linux-x86_64-cpu-v3"),
        (f"{BASE} {V3} avx512f avx512bw", "avx512", "linux-x86_64-cpu-v3"),
        # a VM whose CPU model masks one v3 feature (qemu -cpu host,-fma): the v3 build would die with SIGILL
        (f"{BASE} {V3.replace('fma', '')}", "generic", "linux-x86_64-cpu"),
        (f"{BASE} {V3.replace('avx2', '')}", "generic", "linux-x86_64-cpu"),
        (f"{BASE} {V3.replace('f16c', '')} avx512f", "generic", "linux-x86_64-cpu"),
        (f"{BASE} {V3.replace('bmi2', '')}", "generic", "linux-x86_64-cpu"),
        (f"{BASE} avx512f", "generic", "linux-x86_64-cpu"),
        (f"{BASE} avx2", "generic", "linux-x86_64-cpu"),
        (f"{BASE} fma", "generic", "linux-x86_64-cpu"),
        (BASE, "generic", "linux-x86_64-cpu"),
    ],
    ids=["v3", "v3+avx512", "no-fma", "no-avx2", "avx512-no-f16c", "no-bmi2", "avx512f-only", "avx2-only",
         "fma-only", "sse-only"],
)
def test_the_avx2_build_needs_every_v3_flag(flags, variant, build):
    isa = CpuIsa().process([f"flags\t\t: {flags}", "model name\t: Some CPU"])
    assert isa["variant"] == variant
    host = build_profile("h", {"isa": isa, "os": {"ARCH": "x86_64"}})
    assert runtime_variant(host) == build


def test_the_v3_flags_are_what_the_build_uses():
    from tierfleet.artifacts.llama_build import X86_64_FEATURES
    from tierfleet.facts.cpu import X86_64_V3

    assert X86_64_V3 == set(X86_64_FEATURES)


@pytest.mark.parametrize(
    ("lines", "variant", "model"),
    [
        (["Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics"], "neon", None),
        (["Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt"], "neon", None),
        (["flags\t: avx2", f"flags\t: {V3}"], "generic", None),  # the first flags line counts (grep -m 1)
        (["model name\t: ", f"flags\t: {V3}"], "avx2", None),  # an empty model name is unknown
        (["model name\t: First", "model name\t: Second"], "generic", "First"),
        (["flags\tavx2 fma"], "generic", None),  # no ':'
    ],
)
def test_cpuinfo_lines(lines, variant, model):
    isa = CpuIsa().process(lines)
    assert (isa["variant"], isa["model"]) == (variant, model)


@pytest.mark.parametrize(
    ("lines", "cpus"),
    [
        (["Cpus_allowed_list:\t0-1"], [0, 1]),
        (["Cpus_allowed_list:\t0-3,8,10-11"], [0, 1, 2, 3, 8, 10, 11]),
        (["Cpus_allowed_list:\t5"], [5]),
        (["Cpus_allowed_list :\t2-3"], [2, 3]),  # white space around the key
        (["Cpus_allowed:\tff", "Cpus_allowed_list:\t0-7"], list(range(8))),  # the mask line is not the list
        (["Cpus_allowed_list:\t0-1", "Cpus_allowed_list:\t4-5"], [0, 1]),  # the first one counts
        (["Cpus_allowed_list:\t"], []),
        (["Cpus_allowed_list:\t3-1"], None),
        (["Cpus_allowed_list:\t0-"], None),
        (["Cpus_allowed_list:\t0,,1"], None),
        (["Cpus_allowed_list:\tff"], None),
        (["Cpus_allowed_list:\t0-65535"], list(range(65536))),
        (["Cpus_allowed_list:\t0-65536"], None),
        (["Cpus_allowed_listing:\t0-3"], None),
        (["Cpus_allowed_list\t0-3"], None),
        (["Cpus_allowed_list"], None),  # truncated before the colon: no list, not an empty one
        ([" Cpus_allowed_list :\t2"], [2]),  # blanks around the key are not part of it
        (["Cpus_allowed:\tff"], None),
        ([], None),
    ],
)
def test_allowed_cpu_list_edges(lines, cpus):
    assert AllowedCpus().process(lines) == cpus


TOPO = "/sys/devices/system/cpu"


def test_topology_falls_back_to_thread_siblings_list():
    """The Jetson Nano's 4.9 kernel has only thread_siblings_list (no core_cpus_list)."""
    topo = CpuTopology().process([
        f"{TOPO}/online:0-3",
        *(f"{TOPO}/cpu{n}/topology/thread_siblings_list:{n % 2},{n % 2 + 2}" for n in range(4)),
        f"{TOPO}/cpu0/topology/core_cpus_list:0,2",
    ])
    assert topo["cores"] == [[0, 2], [1, 3]] and topo["smt"]


def test_topology_without_sibling_files_counts_each_cpu_as_a_core():
    topo = CpuTopology().process([f"{TOPO}/online:0-2"])
    assert topo["cores"] == [[0], [1], [2]] and not topo["smt"] and topo["packages"] == 1


def test_topology_drops_offline_siblings_and_counts_packages():
    topo = CpuTopology().process([
        f"{TOPO}/online:0-1",
        f"{TOPO}/cpu0/topology/core_cpus_list:0,2",
        f"{TOPO}/cpu1/topology/core_cpus_list:1,3",
        f"{TOPO}/cpu0/topology/physical_package_id:0",
        f"{TOPO}/cpu1/topology/physical_package_id:1",
    ])
    assert topo["cores"] == [[0], [1]] and not topo["smt"] and topo["packages"] == 2


def test_a_sibling_list_naming_only_offline_cpus_keeps_the_cpu_as_its_own_core():
    # a garbled or stale list that leaves the CPU itself out: the CPU still makes one core, never an empty one
    topo = CpuTopology().process([
        f"{TOPO}/online:0-1",
        f"{TOPO}/cpu0/topology/core_cpus_list:2",
        f"{TOPO}/cpu1/topology/core_cpus_list:1,3",
    ])
    assert topo["cores"] == [[0], [1]] and not topo["smt"]


def test_cpufreq_files_below_a_policy_directory_are_not_policy_files():
    # only policy<N>/<file>: a deeper path (stats/, a hostile line) neither adds a policy nor sets its values
    below = "/sys/devices/system/cpu/cpufreq/policy0"
    assert CpuFreq().process([f"{below}/stats/reset:1", f"{below}/x/scaling_governor:evil"]) is None
    info = CpuFreq().process([f"{below}/scaling_governor:powersave", f"{below}/x/scaling_governor:evil"])
    assert info["policies"] == {0: {"governor": "powersave", "epp": "", "cpus": ""}}


def test_cpufreq_without_an_available_governors_file_lists_none():
    info = CpuFreq().process(["/sys/devices/system/cpu/cpufreq/policy0/scaling_governor:schedutil"])
    assert (info["governors"], info["epp_available"], info["driver"]) == ([], [], None)


def test_topology_capacity_only_when_cores_differ():
    same = CpuTopology().process([f"{TOPO}/online:0-1", f"{TOPO}/cpu0/cpu_capacity:1024",
                                  f"{TOPO}/cpu1/cpu_capacity:1024"])
    mixed = CpuTopology().process([f"{TOPO}/online:0-2", f"{TOPO}/cpu0/cpu_capacity:1024",
                                   f"{TOPO}/cpu1/cpu_capacity:446", f"{TOPO}/cpu2/cpu_capacity:[unreadable]"])
    assert same["capacity"] == {} and mixed["capacity"] == {0: 1024, 1: 446}


def test_a_missing_package_id_counts_as_package_zero():
    topo = CpuTopology().process([f"{TOPO}/online:0-1", f"{TOPO}/cpu0/topology/physical_package_id:0"])
    assert topo["packages"] == 1


def test_no_cpuinfo_means_the_generic_build():
    assert CpuIsa.default() == {"model": None, "flags": [], "variant": "generic"}


def test_cpufreq_reads_the_first_policy_and_intel_pstate():
    base = f"{TOPO}/cpufreq"
    info = CpuFreq().process([
        f"{base}/policy4/scaling_driver:other",
        f"{base}/policy0/scaling_driver:intel_pstate",
        f"{base}/policy0/scaling_available_governors:performance powersave",
        f"{base}/policy0/energy_performance_available_preferences:default performance power",
        f"{base}/policy4/scaling_governor:performance",
        f"{base}/policy4/affected_cpus:4",
        f"{TOPO}/intel_pstate/status:active",
    ])
    assert (info["driver"], info["governors"], info["intel_pstate"]) == (
        "intel_pstate", ["performance", "powersave"], "active")
    assert info["epp_available"] == ["default", "performance", "power"]
    assert info["policies"][4] == {"governor": "performance", "epp": "", "cpus": "4"}
    assert info["policies"][0]["governor"] == ""


# --- NVIDIA ------------------------------------------------------------------------------------------------

def test_power_limit_and_default_limit_are_read_apart():
    """An operator lowered the limit to 250 W on a card whose default is 300 W (min 100, max 350)."""
    [gpu] = NvidiaGpus().process(
        ["0, NVIDIA A100-PCIE-40GB, 40960, 8.0, 570.172.08, Enabled, 250.00, 300.00, 100.00, 350.00, 1410, Enabled"]
    )["gpus"]
    assert (gpu["power_limit_w"], gpu["power_default_limit_w"], gpu["power_min_limit_w"],
            gpu["power_max_limit_w"]) == (250.0, 300.0, 100.0, 350.0)
    assert (gpu["max_sm_clock_mhz"], gpu["persistence_mode"], gpu["mig_mode"], gpu["compute_cap"]) == (
        1410, True, "Enabled", "8.0")


def test_bare_n_a_is_unknown_like_bracketed_n_a():
    # some drivers print N/A without brackets for a field the card lacks
    [gpu] = NvidiaGpus().process(["0, Tesla K80, 11441, N/A, 470.82.01, N/A, N/A, N/A, N/A, N/A, 875, N/A"])["gpus"]
    assert (gpu["compute_cap"], gpu["persistence_mode"], gpu["power_limit_w"], gpu["mig_mode"]) == (
        None, None, None, None)
    assert (gpu["memory_total_mib"], gpu["max_sm_clock_mhz"], gpu["driver_version"]) == (11441, 875, "470.82.01")


def test_a_line_with_the_right_number_of_fields_but_no_index_is_not_a_gpu():
    line = "Error, a, b, c, d, e, f, g, h, i, j, k"
    query = NvidiaGpus().process([line])
    assert (query["gpus"], query["error"]) == ([], line)


def test_minimal_query_line_moves_the_driver_version():
    [gpu] = NvidiaGpus().process(["0, Tesla K80, 11441, 470.256.02"])["gpus"]
    assert (gpu["driver_version"], gpu["compute_cap"], gpu["memory_total_mib"], gpu["power_limit_w"]) == (
        "470.256.02", None, 11441, None)


@pytest.mark.parametrize(
    ("lines", "gpus", "error", "library"),
    [
        ([f"##{NO_NVIDIA_SMI}##"], 0, NO_NVIDIA_SMI, None),
        (["", f"##{NO_NVIDIA_SMI}##", "  "], 0, NO_NVIDIA_SMI, None),
        (["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."], 0,
         "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", None),
        (["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 570.172"], 0,
         "Failed to initialize NVML: Driver/library version mismatch", "570.172"),
        (["Failed to initialize NVML: Driver/library version mismatch", "  NVML library version: 570.172  "], 0,
         "Failed to initialize NVML: Driver/library version mismatch", "570.172"),
        (["0, Tesla T4, 15360, 7.5, 570.172.08, Disabled, 70.00, 70.00, 60.00, 70.00, 1590, [N/A]",
          "WARNING: infoROM is corrupted at gpu 0000:3B:00.0"], 1,
         "unparsed nvidia-smi output: WARNING: infoROM is corrupted at gpu 0000:3B:00.0", None),
        (["0, Tesla T4, 15360, 7.5, 570.172.08, Disabled, 70.00, 70.00, 60.00, 70.00, 1590, [N/A]", ""], 1, None,
         None),
        # the library version however it is spaced or followed
        (["Failed to initialize NVML: Driver/library version mismatch", "NVML library version:570.172"], 0,
         "Failed to initialize NVML: Driver/library version mismatch", "570.172"),
        (["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 570.172 (x86_64)"], 0,
         "Failed to initialize NVML: Driver/library version mismatch", "570.172"),
    ],
    ids=["no-smi", "no-smi-blank-lines", "no-driver", "mismatch", "mismatch-padded-lines", "warning-after-gpu", "blank-line",
         "mismatch-no-space", "mismatch-trailing-words"],
)
def test_nvidia_smi_outcomes(lines, gpus, error, library):
    value = NvidiaGpus().process(lines)
    assert (len(value["gpus"]), value["error"], value["library_version"]) == (gpus, error, library)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("persistence_mode", "Disabled", False), ("persistence_mode", "[N/A]", None),
     ("memory_total_mib", "[N/A]", None), ("memory_total_mib", "[Insufficient Permissions]", None),
     ("power_limit_w", "[Not Supported]", None), ("mig_mode", "N/A", None)],
)
def test_not_available_fields_are_unknown(field, value, expected):
    fields = ["0", "Tesla T4", "15360", "7.5", "570.172.08", "Enabled", "70.00", "70.00", "60.00", "70.00",
              "1590", "Disabled"]
    index = {"persistence_mode": 5, "memory_total_mib": 2, "power_limit_w": 6, "mig_mode": 11}[field]
    fields[index] = value
    [gpu] = NvidiaGpus().process([", ".join(fields)])["gpus"]
    assert gpu[field] == expected


def test_an_lspci_line_cut_after_the_vendor_still_names_an_nvidia_gpu():
    from tierfleet.facts.nvidia import parse_lspci_line

    assert parse_lspci_line("01:00.0 3D controller: NVIDIA") == {
        "slot": "01:00.0", "kind": "3D controller", "description": "NVIDIA"}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["01:00.0 VGA compatible controller: NVIDIA Corporation AD102 [GeForce RTX 4090] (rev a1)"],
         [("01:00.0", "VGA compatible controller")]),
        (["pci=0000:01:00.0 vendor=0x10de class=0x030000 device=0x2684",
          "pci=0000:02:00.0 vendor=0x10de class=0x038000 device=0x20b0",
          "pci=0000:03:00.0 vendor=0x10de class=0x040300 device=0x22ba",
          "pci=0000:04:00.0 vendor=0x1002 class=0x030000 device=0x744c"],
         [("0000:01:00.0", "VGA compatible controller"), ("0000:02:00.0", "Display controller")]),
        (["00:02.0 VGA compatible controller: Intel Corporation Device 46a6",
          "pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x2335"], [("0000:17:00.0", "3D controller")]),
    ],
    ids=["lspci-vga", "sysfs-classes-and-vendors", "lspci-without-nvidia-falls-back"],
)
def test_pci_devices(lines, expected):
    assert [(g["slot"], g["kind"]) for g in NvidiaPciDevices().process(lines)] == expected


@pytest.mark.parametrize(
    "line",
    [
        "pci= vendor=0x10de class=0x030200 device=0x2335",  # no slot
        "pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x23/5",
        "pci=0000:17:00.0 vendor=0x10de class=0x03/200 device=0x2335",
        "pci=0000:17:00.0 vendor=0x10de class=0x0302/0 device=0x2335",
        "pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x2335 extra",
        "pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x23355",
        "pci=0000:17:00.0 vendor=0x10df class=0x030200 device=0x2335",
    ],
)
def test_a_garbled_sysfs_pci_line_is_no_gpu(line):
    assert NvidiaPciDevices().process([line]) == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("01:00.0 Display controller: NVIDIA Corporation GA100 [A100 PCIe 40GB] (rev a1)", "Display controller"),
        ("  01:00.0 3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)", "3D controller"),
    ],
)
def test_lspci_display_and_indented_lines_name_a_gpu(line, kind):
    [gpu] = NvidiaPciDevices().process([line])
    assert (gpu["slot"], gpu["kind"]) == ("01:00.0", kind)


def test_an_indented_sysfs_pci_line_names_a_gpu():
    [gpu] = NvidiaPciDevices().process(["  pci=0000:17:00.0 vendor=0x10de class=0x030200 device=0x2335"])
    assert gpu["slot"] == "0000:17:00.0"


@pytest.mark.parametrize(
    "line",
    [
        "01:00.1 Audio device: NVIDIA Corporation GA102 High Definition Audio Controller (rev a1)",  # the GPU's HDMI audio
        "01:00.2 USB controller: NVIDIA Corporation TU104 USB 3.1 Host Controller (rev a1)",
        "01:00/0 3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)",
        "3D controller: NVIDIA Corporation TU104GL [Tesla T4] (rev a1)",
    ],
)
def test_other_nvidia_functions_and_garbled_lspci_lines_are_no_gpu(line):
    assert NvidiaPciDevices().process([line]) == []


@pytest.mark.parametrize(
    ("fact", "lines", "expected"),
    [
        (NvidiaDriverInstalled, ["570.172.08"], "570.172.08"),
        (NvidiaDriverInstalled, ["570.172"], "570.172"),
        (NvidiaDriverInstalled, ["570"], None),
        (NvidiaDriverInstalled, ["modinfo: ERROR: Module nvidia not found."], None),
        (NvidiaDriverLoaded, ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 2025"],
         "570.172.08"),
        (NvidiaDriverLoaded, ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08"], "570.172.08"),
        (NvidiaDriverLoaded, ["GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)"], None),
        # modinfo's line padded, suffixed, prefixed or with a non-digit part is no version
        (NvidiaDriverInstalled, ["  570.172.08  "], "570.172.08"),
        (NvidiaDriverInstalled, ["570.172.08-1ubuntu1"], None),
        (NvidiaDriverInstalled, ["570.172.08 (open)"], None),
        (NvidiaDriverInstalled, ["v570.172.08"], None),
        (NvidiaDriverInstalled, ["570.x"], None),
        (NvidiaDriverInstalled, ["570./"], None),
        # the whole file: the version may end the NVRM line, the GCC line's version is never taken
        (NvidiaDriverLoaded, ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08",
                              "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)"], "570.172.08"),
        (NvidiaDriverLoaded, ["NVRM version: 535.54.03"], "535.54.03"),
    ],
)
def test_driver_versions(fact, lines, expected):
    assert fact().process(lines) == expected


def test_allowed_cpus_read_on_this_machine_match_the_kernel():
    """The command, run for real, reports the CPUs this process (and so its children) may use."""
    import os
    import subprocess

    fact = AllowedCpus()
    out = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True, check=True)
    assert fact.process(out.stdout.splitlines()) == sorted(os.sched_getaffinity(0))


def test_topology_counts_offline_cores_apart_from_online_ones():
    # CPUs 4-7 offline: 4-5 still show their pair, 6-7 have lost their topology (the kernel removes it)
    topo = CpuTopology().process([
        f"{TOPO}/online:0-3", f"{TOPO}/present:0-7",
        *(f"{TOPO}/cpu{n}/topology/core_cpus_list:{n}" for n in range(4)),
        f"{TOPO}/cpu4/topology/core_cpus_list:4-5", f"{TOPO}/cpu5/topology/core_cpus_list:4-5",
    ])
    assert topo["cores"] == [[0], [1], [2], [3]] and topo["present"] == list(range(8))
    assert topo["offline_cores"] == 3  # [4, 5] and two loose single-thread ones


def test_topology_without_present_reports_no_offline_cores():
    topo = CpuTopology().process([f"{TOPO}/online:0-1", f"{TOPO}/present:garbled"])
    assert "present" not in topo and "offline_cores" not in topo


def test_offline_cpus_group_by_thread_siblings_list_where_core_cpus_list_is_missing():
    # a 4.9 kernel (Jetson Nano) has only thread_siblings_list: offline SMT pairs group by it, online ones hold theirs
    topo = CpuTopology().process([
        f"{TOPO}/online:0-1", f"{TOPO}/present:0-7",
        f"{TOPO}/cpu0/topology/thread_siblings_list:0,4", f"{TOPO}/cpu1/topology/thread_siblings_list:1,5",
        f"{TOPO}/cpu2/topology/thread_siblings_list:2,6", f"{TOPO}/cpu6/topology/thread_siblings_list:2,6",
        f"{TOPO}/cpu3/topology/thread_siblings_list:3,7", f"{TOPO}/cpu7/topology/thread_siblings_list:3,7",
    ])
    assert topo["cores"] == [[0], [1]] and topo["offline_cores"] == 2  # 4 and 5 are threads of online cores


def test_loose_offline_cpus_count_as_cores_of_the_widest_online_core():
    topo = CpuTopology().process([
        f"{TOPO}/online:0-2", f"{TOPO}/present:0-4",
        f"{TOPO}/cpu0/topology/core_cpus_list:0-1", f"{TOPO}/cpu1/topology/core_cpus_list:0-1",
        f"{TOPO}/cpu2/topology/core_cpus_list:2",
    ])
    assert topo["cores"] == [[0, 1], [2]] and topo["offline_cores"] == 1  # CPUs 3-4: one two-thread core


def test_a_garbled_node_cpulist_is_an_empty_node():
    topo = CpuTopology().process([f"{TOPO}/online:0-1", "/sys/devices/system/node/node0/cpulist:0-x"])
    assert topo["numa_nodes"] == {0: []}
