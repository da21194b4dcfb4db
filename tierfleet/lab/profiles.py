"""Lab host profiles: what each kind of lab host looks like to the facts.

A profile is plain data. :mod:`tierfleet.lab.dress` turns it into the files a host sees under
``/proc`` and ``/sys``; the stand-in programs (``nvidia-smi``, ``nvpmodel``, ``jetson_clocks``,
``lspci``) read the per-host copy of it at ``/usr/share/tierfleet-lab/profile.json``.

Figures come from public spec data, except ``gpu-node-h200`` whose CPU and GPU figures are the
recording in ``tests/ops/data/`` (a 16-core Xeon VM without SMT or cpufreq; its
RAM size was not recorded, 128 GiB is chosen).

>>> PROFILES["jetson-nano"].tier, PROFILES["jetson-nano"].kind
('basic', 'jetson')
>>> PROFILES["gpu-node-a100"].logical_cpus
64
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tierfleet.exceptions import ConfigError

KINDS = ("jetson", "cpu_servers", "gpu_nodes")

GIB_KIB = 1024 * 1024


@dataclass(frozen=True)
class GpuSpec:
    """A discrete NVIDIA GPU as ``nvidia-smi`` and ``lspci`` report it."""

    name: str
    memory_mib: int
    compute_cap: str
    driver: str
    cuda: str
    power_default_w: float
    power_min_w: float
    power_max_w: float
    sm_max_mhz: int
    mem_max_mhz: int
    pci_bus: str  # nvidia-smi form: 00000000:17:00.0
    pci_device_id: str  # 0x233510DE
    lspci_name: str  # "GH100 [H200 SXM 141GB]"
    uuid: str
    idle_power_w: float
    idle_sm_mhz: int
    temperature_c: int
    serial: str = "N/A"
    vbios: str = "N/A"
    #: recorded ``nvidia-smi -q`` / ``-q -x`` replayed verbatim (file names under reference/nvml)
    recorded_q: str | None = None
    recorded_qx: str | None = None


@dataclass(frozen=True)
class JetsonSpec:
    """An NVIDIA Jetson module: L4T release, device tree and power modes."""

    model: str  # /proc/device-tree/model
    compatible: tuple[str, ...]  # /proc/device-tree/compatible, NUL separated
    soc: str  # tegra210 / tegra234
    l4t_release: str  # R36
    l4t_revision: str  # 4.3
    l4t_deb_version: str  # nvidia-l4t-core version
    jetpack: str
    board: str
    gcid: str
    date: str
    kernel_flavour: str  # nv_tegra_release KERNEL_VARIANT / "generic"
    nvpmodel_conf: str  # key into tierfleet.lab.jetson.NVPMODEL_CONFS
    default_mode: int
    gpu_devfreq: str  # 57000000.gpu / 17000000.ga10b
    gpu_of_node: str  # gpu / ga10b
    gpu_freqs_hz: tuple[int, ...]
    cpu_freqs_khz: tuple[int, ...]
    cpu_clusters: tuple[tuple[int, ...], ...]  # cpufreq policies (first cpu names the policy)
    cpu_part: str  # "0xd07" (A57) / "0xd42" (A78AE)
    cpu_features: str
    rails: tuple[str, ...]  # INA3221 rail labels
    emc_max_hz: int


@dataclass(frozen=True)
class CpufreqSpec:
    """The cpufreq driver a host reports; ``driver=None`` means no cpufreq at all (VMs)."""

    driver: str | None
    governors: tuple[str, ...] = ()
    governor: str = ""
    min_khz: int = 0
    max_khz: int = 0
    base_khz: int = 0
    epp: tuple[str, ...] = ()  # available energy_performance_preference values
    epp_default: str = ""
    rapl: bool = False


@dataclass(frozen=True)
class Profile:
    """One kind of lab host."""

    name: str
    kind: str  # jetson / cpu_servers / gpu_nodes
    tier: str  # the tier this profile is meant for (may fail preflight on purpose)
    dressed_arch: str  # what the real machine would be (uname -m stays x86_64 in the lab)
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    mem_total_kib: int
    disk_gib: int
    cpu_model: str
    cpu_flags: str = ""
    cpu_family: int = 6
    cpu_model_id: int = 85
    bogomips: str = "4200.00"
    cpufreq: CpufreqSpec = field(default_factory=lambda: CpufreqSpec(None))
    gpus: tuple[GpuSpec, ...] = ()
    jetson: JetsonSpec | None = None
    unified_memory: bool = False
    note: str = ""

    @property
    def physical_cores(self) -> int:
        return self.sockets * self.cores_per_socket

    @property
    def logical_cpus(self) -> int:
        return self.physical_cores * self.threads_per_core

    def to_json(self) -> dict:
        """The profile as JSON data (what the stand-ins read inside the host)."""
        return asdict(self)


_X86_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse "
    "sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl xtopology "
    "nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr "
    "pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm "
    "3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single intel_ppin ssbd mba ibrs ibpb stibp "
    "ibrs_enhanced tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 "
    "erms invpcid rtm cqm mpx rdt_a avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local "
    "dtherm ida arat pln pts pku ospke avx512_vnni md_clear flush_l1d arch_capabilities"
)
_X86_FLAGS_AVX2 = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid "
    "aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave "
    "avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs "
    "skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd "
    "mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 cqm rdt_a rdseed adx smap clflushopt clwb "
    "sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf "
    "xsaveerptr rdpru wbnoinvd amd_ppin arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid "
    "decodeassists pausefilter pfthreshold v_vmsave_vmload vgif v_spec_ctrl umip rdpid overflow_recov succor smca"
)
_H200_HOST_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht "
    "syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c "
    "rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase "
    "tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb "
    "avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 wbnoinvd arat "
    "avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq "
    "rdpid bus_lock_detect cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk ibt amx_bf16 "
    "avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities"
)

_INTEL_PSTATE = CpufreqSpec(
    driver="intel_pstate",
    governors=("performance", "powersave"),
    governor="powersave",
    min_khz=800000,
    max_khz=3900000,
    base_khz=2900000,
    epp=("default", "performance", "balance_performance", "balance_power", "power"),
    epp_default="balance_performance",
    rapl=True,
)
_ACPI_CPUFREQ = CpufreqSpec(
    driver="acpi-cpufreq",
    governors=("conservative", "ondemand", "userspace", "powersave", "performance", "schedutil"),
    governor="schedutil",
    min_khz=1500000,
    max_khz=2450000,
    base_khz=2450000,
    rapl=True,
)

H200 = GpuSpec(
    name="NVIDIA H200",
    memory_mib=143771,
    compute_cap="9.0",
    driver="580.159.04",
    cuda="13.0",
    power_default_w=700.0,
    power_min_w=200.0,
    power_max_w=700.0,
    sm_max_mhz=1980,
    mem_max_mhz=3201,
    pci_bus="00000000:00:06.0",
    pci_device_id="0x233510DE",
    lspci_name="GH100 [H200 SXM 141GB]",
    uuid="GPU-1def259d-64df-1d6b-e7a7-59227e1000aa",
    idle_power_w=79.0,
    idle_sm_mhz=345,
    temperature_c=40,
    serial="1653724051275",
    vbios="96.00.A5.00.1A",
    recorded_q="h200_nvidia-smi-q.txt",
    recorded_qx="h200_nvidia-smi-q.xml",
)
A100 = GpuSpec(
    name="NVIDIA A100-SXM4-40GB",
    memory_mib=40960,
    compute_cap="8.0",
    driver="550.163.01",
    cuda="12.4",
    power_default_w=400.0,
    power_min_w=100.0,
    power_max_w=400.0,
    sm_max_mhz=1410,
    mem_max_mhz=1215,
    pci_bus="00000000:07:00.0",
    pci_device_id="0x20B010DE",
    lspci_name="GA100 [A100 SXM4 40GB]",
    uuid="GPU-4a1b2c3d-0000-4000-8000-a10000000040",
    idle_power_w=52.0,
    idle_sm_mhz=210,
    temperature_c=31,
)
T4 = GpuSpec(
    name="Tesla T4",
    memory_mib=15360,
    compute_cap="7.5",
    driver="550.163.01",
    cuda="12.4",
    power_default_w=70.0,
    power_min_w=60.0,
    power_max_w=70.0,
    sm_max_mhz=1590,
    mem_max_mhz=5001,
    pci_bus="00000000:3B:00.0",
    pci_device_id="0x1EB810DE",
    lspci_name="TU104GL [Tesla T4]",
    uuid="GPU-7e4f0a11-0000-4000-8000-7e5140000004",
    idle_power_w=9.0,
    idle_sm_mhz=300,
    temperature_c=34,
)

JETSON_NANO = JetsonSpec(
    model="NVIDIA Jetson Nano Developer Kit",
    compatible=("nvidia,p3450-0000", "nvidia,jetson-nano", "nvidia,tegra210"),
    soc="tegra210",
    l4t_release="R32",
    l4t_revision="7.6",
    l4t_deb_version="32.7.6-20241104234540",
    jetpack="4.6.6",
    board="t210ref",
    gcid="38416929",
    date="Mon Nov  4 23:48:28 UTC 2024",
    kernel_flavour="",
    nvpmodel_conf="t210",
    default_mode=0,
    gpu_devfreq="57000000.gpu",
    gpu_of_node="gpu",
    gpu_freqs_hz=(76800000, 153600000, 230400000, 307200000, 384000000, 460800000, 537600000,
                  614400000, 640000000, 691200000, 768000000, 844800000, 921600000),
    cpu_freqs_khz=(102000, 204000, 307200, 403200, 518400, 614400, 710400, 825600, 918000,
                   1036800, 1132800, 1224000, 1326000, 1428000, 1479000),
    cpu_clusters=((0, 1, 2, 3),),
    cpu_part="0xd07",
    cpu_features="fp asimd evtstrm aes pmull sha1 sha2 crc32",
    rails=("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"),
    emc_max_hz=1600000000,
)
JETSON_ORIN_NANO = JetsonSpec(
    model="NVIDIA Jetson Orin Nano Developer Kit",
    compatible=("nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"),
    soc="tegra234",
    l4t_release="R36",
    l4t_revision="4.3",
    l4t_deb_version="36.4.3-20250107174145",
    jetpack="6.2",
    board="generic",
    gcid="38968081",
    date="Tue Jan  7 17:35:22 UTC 2025",
    kernel_flavour="oot",
    nvpmodel_conf="p3767_0003",
    default_mode=0,
    gpu_devfreq="17000000.ga10b",
    gpu_of_node="ga10b",
    gpu_freqs_hz=(306000000, 408000000, 510000000, 612000000, 624750000, 714000000, 816000000,
                  918000000, 1020000000),
    cpu_freqs_khz=(115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400,
                   883200, 960000, 1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600,
                   1510400, 1574400, 1651200, 1728000),
    cpu_clusters=((0, 1, 2, 3), (4, 5)),
    cpu_part="0xd42",
    cpu_features=("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                  "dcpop asimddp uscat ilrcpc flagm paca pacg"),
    rails=("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"),
    emc_max_hz=3199000000,
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="jetson-orin-nano",
            kind="jetson",
            tier="basic",
            dressed_arch="aarch64",
            sockets=1,
            cores_per_socket=6,
            threads_per_core=1,
            mem_total_kib=7759460,  # 7.4 GiB: 8 GB module less the carve-outs
            disk_gib=16,
            cpu_model="ARMv8 Processor rev 1 (v8l)",
            jetson=JETSON_ORIN_NANO,
            unified_memory=True,
            bogomips="62.50",
        ),
        Profile(
            name="jetson-nano",
            kind="jetson",
            tier="basic",
            dressed_arch="aarch64",
            sockets=1,
            cores_per_socket=4,
            threads_per_core=1,
            mem_total_kib=4059412,  # 3.87 GiB of the 4 GB module
            disk_gib=8,
            cpu_model="ARMv8 Processor rev 1 (v8l)",
            jetson=JETSON_NANO,
            unified_memory=True,
            bogomips="38.40",
            note="fails preflight for advanced (4 cores, 3.9 GiB unified)",
        ),
        Profile(
            name="cpu-server",
            kind="cpu_servers",
            tier="advanced",
            dressed_arch="x86_64",
            sockets=1,
            cores_per_socket=16,
            threads_per_core=2,
            mem_total_kib=65_799_548,
            disk_gib=24,
            cpu_model="Intel(R) Xeon(R) Gold 6326 CPU @ 2.90GHz",
            cpu_flags=_X86_FLAGS,
            cpu_model_id=106,
            bogomips="5800.00",
            cpufreq=_INTEL_PSTATE,
        ),
        Profile(
            name="cpu-small",
            kind="cpu_servers",
            tier="basic",
            dressed_arch="x86_64",
            sockets=1,
            cores_per_socket=2,
            threads_per_core=1,
            mem_total_kib=4_025_220,
            disk_gib=1,
            cpu_model="Intel(R) Xeon(R) CPU E3-1220 v5 @ 3.00GHz",
            cpu_flags=_X86_FLAGS,
            cpu_model_id=94,
            bogomips="6000.00",
            cpufreq=_INTEL_PSTATE,
            note="fails preflight for basic (2 cores, 4 GB RAM, 1 GiB disk)",
        ),
        Profile(
            name="gpu-node-t4",
            kind="gpu_nodes",
            tier="advanced",
            dressed_arch="x86_64",
            sockets=1,
            cores_per_socket=8,
            threads_per_core=2,
            mem_total_kib=32_863_788,
            disk_gib=24,
            cpu_model="Intel(R) Xeon(R) Silver 4208 CPU @ 2.10GHz",
            cpu_flags=_X86_FLAGS,
            bogomips="4200.00",
            cpufreq=_ACPI_CPUFREQ,
            gpus=(T4,),
        ),
        Profile(
            name="gpu-node-a100",
            kind="gpu_nodes",
            tier="enterprise",
            dressed_arch="x86_64",
            sockets=2,
            cores_per_socket=16,
            threads_per_core=2,
            mem_total_kib=263_842_788,
            disk_gib=48,
            cpu_model="AMD EPYC 7302 16-Core Processor",
            cpu_flags=_X86_FLAGS_AVX2,
            cpu_family=23,
            cpu_model_id=49,
            bogomips="5988.89",
            cpufreq=_ACPI_CPUFREQ,
            gpus=(A100,),
        ),
        Profile(
            name="gpu-node-h200",
            kind="gpu_nodes",
            tier="enterprise",
            dressed_arch="x86_64",
            sockets=1,
            cores_per_socket=16,
            threads_per_core=1,
            mem_total_kib=132_008_860,
            disk_gib=48,
            cpu_model="Intel(R) Xeon(R) Processor",
            cpu_flags=_H200_HOST_FLAGS,
            cpu_model_id=207,
            bogomips="4200.00",
            gpus=(H200,),
            note="CPU side as recorded: KVM guest, 16 cores, no SMT, no cpufreq",
        ),
    )
}


def get_profile(name: str, source: str = "lab fleet spec") -> Profile:
    """Look a profile up by name, with an error that lists the allowed names.

    >>> get_profile("cpu-small").physical_cores
    2
    """
    try:
        return PROFILES[name]
    except KeyError:
        allowed = ", ".join(sorted(PROFILES))
        raise ConfigError(source, "profile", f"unknown profile {name!r}; allowed: {allowed}") from None
