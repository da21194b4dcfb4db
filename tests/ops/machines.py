"""Sysfs trees of hosts that are not here, laid out file by file as the kernel does.

Each builder writes the files the kernel exposes (same names, same formats: kHz, CPU lists,
space-separated lists) for one machine type; values come from the named real parts.
:class:`KernelSysfs` adds the kernel's write checks (EINVAL for an unknown governor or
min > max as kernels before 5.3 did, where newer ones clamp and verify catches it; EBUSY
for EPP under the performance governor with intel_pstate; EACCES on denied files), since
plain files would accept anything.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tierfleet_ops.sysfs import Sysfs, format_cpulist

CPU = "devices/system/cpu"


def put(root: Path, rel: str, value: object) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{value}\n")


def topology(root: Path, cores: list[tuple[int, ...]], nodes: dict[int, list[int]] | None = None,
             capacity: dict[int, int] | None = None, packages: dict[int, int] | None = None,
             online: list[int] | None = None, atoms: list[int] | None = None,
             omit: tuple[str, ...] = ()) -> Path:
    """``omit`` names files this kernel does not have: ``present``, ``possible``, ``online``,
    ``core_cpus_list`` (before 5.x), ``physical_package_id``, ``cpu_capacity`` (x86)."""
    cpus = sorted(c for core in cores for c in core)

    def opt(rel: str, value: object) -> None:
        if rel.rsplit("/", 1)[-1] not in omit:
            put(root, rel, value)

    opt(f"{CPU}/present", format_cpulist(cpus))
    opt(f"{CPU}/possible", format_cpulist(cpus))
    opt(f"{CPU}/online", format_cpulist(online if online is not None else cpus))
    for core_id, core in enumerate(cores):
        for c in core:
            t = f"{CPU}/cpu{c}/topology"
            opt(f"{t}/core_cpus_list", format_cpulist(core))
            opt(f"{t}/thread_siblings_list", format_cpulist(core))
            opt(f"{t}/core_id", core_id)
            opt(f"{t}/physical_package_id", (packages or {}).get(c, 0))
            opt(f"{CPU}/cpu{c}/cpu_capacity", (capacity or {}).get(c, 1024))
    for n, lst in (nodes or {0: cpus}).items():
        put(root, f"devices/system/node/node{n}/cpulist", format_cpulist(lst))
    if atoms:
        put(root, "devices/cpu_atom/cpus", format_cpulist(atoms))
        put(root, "devices/cpu_core/cpus", format_cpulist([c for c in cpus if c not in atoms]))
    return root


# --- topologies --------------------------------------------------------------------------------

def xeon16_h200_host(root: Path) -> Path:
    """The H200 node's 16-vCPU Xeon (recorded lscpu: 16 cores, 1 thread per core, 1 node)."""
    return topology(root, [(i,) for i in range(16)])


def xeon_smt(root: Path) -> Path:
    """8 cores with SMT, siblings n and n+8 (how Linux enumerates Intel SMT threads)."""
    return topology(root, [(i, i + 8) for i in range(8)])


def orin_agx(root: Path, online: list[int] | None = None) -> Path:
    """Jetson AGX Orin: 12 Cortex-A78AE in 3 clusters of 4, no SMT, cpufreq policy0/4/8."""
    topology(root, [(i,) for i in range(12)], online=online)
    for p in (0, 4, 8):
        pol = f"{CPU}/cpufreq/policy{p}"
        put(root, f"{pol}/affected_cpus", " ".join(str(c) for c in range(p, p + 4)))
        put(root, f"{pol}/related_cpus", " ".join(str(c) for c in range(p, p + 4)))
        put(root, f"{pol}/scaling_driver", "tegra194")
        put(root, f"{pol}/scaling_available_governors",
            "interactive conservative ondemand userspace powersave performance schedutil ")
        put(root, f"{pol}/scaling_governor", "schedutil")
        put(root, f"{pol}/cpuinfo_min_freq", 115200)
        put(root, f"{pol}/cpuinfo_max_freq", 2201600)
        put(root, f"{pol}/scaling_available_frequencies",
            "115200 192000 268800 345600 422400 499200 576000 652800 729600 806400 883200 960000 "
            "1036800 1113600 1190400 1267200 1344000 1420800 1497600 1574400 1651200 1728000 "
            "1804800 1881600 1958400 2035200 2112000 2188800 2201600 ")
        put(root, f"{pol}/scaling_min_freq", 115200)
        put(root, f"{pol}/scaling_max_freq", 2201600)
        put(root, f"{pol}/scaling_cur_freq", 1497600)
    return root


def big_little(root: Path) -> Path:
    """RK3588: 4 Cortex-A55 (capacity 414) + 4 Cortex-A76 (capacity 1024), no SMT."""
    return topology(root, [(i,) for i in range(8)], capacity={i: 414 if i < 4 else 1024 for i in range(8)})


def numa_2s(root: Path) -> Path:
    """2 sockets x 8 cores x SMT2: node0 0-7,16-23; node1 8-15,24-31; siblings n, n+16."""
    cores = [(i, i + 16) for i in range(16)]
    return topology(root, cores, nodes={0: list(range(0, 8)) + list(range(16, 24)),
                                        1: list(range(8, 16)) + list(range(24, 32))},
                    packages={c: (0 if c % 16 < 8 else 1) for c in range(32)})


def intel_hybrid(root: Path) -> Path:
    """Alder Lake i7-12700: 8 P-cores with SMT (0-15, siblings 2k,2k+1) + 4 E-cores (16-19)."""
    cores = [(2 * k, 2 * k + 1) for k in range(8)] + [(c,) for c in range(16, 20)]
    return topology(root, cores, atoms=list(range(16, 20)))


def intel_hybrid_6p8e(root: Path) -> Path:
    """Alder Lake i5-12600K as Linux lays it out: 6 P-cores with SMT (0-11, siblings 2k,2k+1), then
    8 E-cores (12-19); the hybrid PMUs list them (``cpu_core/cpus`` 0-11, ``cpu_atom/cpus`` 12-19);
    x86 has no ``cpu_capacity``."""
    cores = [(2 * k, 2 * k + 1) for k in range(6)] + [(c,) for c in range(12, 20)]
    return topology(root, cores, atoms=list(range(12, 20)), omit=("cpu_capacity",))


def big_first_little_last(root: Path) -> Path:
    """A big.LITTLE SoC that numbers its big cores first: 4 big (capacity 1024) on CPUs 0-3,
    4 LITTLE (capacity 446) on 4-7, so "lowest-numbered" and "LITTLE" point at different cores."""
    return topology(root, [(i,) for i in range(8)], capacity={i: 1024 if i < 4 else 446 for i in range(8)})


def tri_cluster(root: Path) -> Path:
    """Snapdragon 8 Gen 1 (cpu_capacity as its kernel reports): 4 A510 (325), 3 A710 (825), 1 X2 (1024)."""
    cap = {c: 325 for c in range(4)} | {c: 825 for c in range(4, 7)} | {7: 1024}
    return topology(root, [(i,) for i in range(8)], capacity=cap)


def old_kernel_smt(root: Path) -> Path:
    """8 cores with SMT (siblings n, n+8) on a kernel before ``core_cpus_list``: only
    ``thread_siblings_list`` groups the siblings."""
    return topology(root, [(i, i + 8) for i in range(8)], omit=("core_cpus_list",))


def jetson_nano_49(root: Path, online: list[int] | None = None) -> Path:
    """Jetson Nano (L4T R32, kernel 4.9): 4 Cortex-A57, ``thread_siblings_list`` but no
    ``core_cpus_list`` and no ``cpu_capacity``; in the 5W mode CPUs 2-3 are offline."""
    return topology(root, [(i,) for i in range(4)], online=online, omit=("core_cpus_list", "cpu_capacity"))


# --- cpufreq -----------------------------------------------------------------------------------

def intel_pstate(root: Path, ncpu: int = 4) -> Path:
    """intel_pstate in active mode (HWP): performance/powersave governors, EPP, no_turbo."""
    topology(root, [(i,) for i in range(ncpu)])
    put(root, f"{CPU}/intel_pstate/status", "active")
    put(root, f"{CPU}/intel_pstate/no_turbo", 0)
    for c in range(ncpu):
        pol = f"{CPU}/cpufreq/policy{c}"
        put(root, f"{pol}/affected_cpus", c)
        put(root, f"{pol}/scaling_driver", "intel_pstate")
        put(root, f"{pol}/scaling_available_governors", "performance powersave")
        put(root, f"{pol}/scaling_governor", "powersave")
        put(root, f"{pol}/energy_performance_available_preferences",
            "default performance balance_performance balance_power power ")
        put(root, f"{pol}/energy_performance_preference", "balance_performance")
        put(root, f"{pol}/cpuinfo_min_freq", 800000)
        put(root, f"{pol}/cpuinfo_max_freq", 4800000)
        put(root, f"{pol}/scaling_min_freq", 800000)
        put(root, f"{pol}/scaling_max_freq", 4800000)
        put(root, f"{pol}/scaling_cur_freq", 2100000)
    return root


def acpi_cpufreq(root: Path, ncpu: int = 2) -> Path:
    """acpi-cpufreq (AMD EPYC, no CPPC): full governor list, 3 P-states, global boost."""
    topology(root, [(i,) for i in range(ncpu)])
    put(root, f"{CPU}/cpufreq/boost", 1)
    for c in range(ncpu):
        pol = f"{CPU}/cpufreq/policy{c}"
        put(root, f"{pol}/affected_cpus", c)
        put(root, f"{pol}/scaling_driver", "acpi-cpufreq")
        put(root, f"{pol}/scaling_available_governors",
            "conservative ondemand userspace powersave performance schedutil ")
        put(root, f"{pol}/scaling_governor", "schedutil")
        put(root, f"{pol}/scaling_available_frequencies", "3100000 2500000 1500000 ")
        put(root, f"{pol}/cpuinfo_min_freq", 1500000)
        put(root, f"{pol}/cpuinfo_max_freq", 3100000)
        put(root, f"{pol}/scaling_min_freq", 1500000)
        put(root, f"{pol}/scaling_max_freq", 3100000)
        put(root, f"{pol}/scaling_cur_freq", 2500000)
    put(root, "class/powercap/intel-rapl:0/energy_uj", 262143328850)
    put(root, "class/powercap/intel-rapl:0/max_energy_range_uj", 262143328850)
    put(root, "class/powercap/intel-rapl:0:0/energy_uj", 1000)
    return root


class KernelSysfs(Sysfs):
    """Sysfs over a built tree that checks writes the way the cpufreq core does."""

    def __init__(self, root: Path, denied: tuple[str, ...] = ()) -> None:
        super().__init__(root)
        self.denied = denied
        self.writes: list[tuple[str, str]] = []

    def read(self, rel: str) -> str | None:
        if rel in self.denied:
            return None  # what Sysfs.read gives for EACCES
        return super().read(rel)

    def _write_file(self, path: Path, value: str) -> None:
        rel = str(path.relative_to(self.root))
        if rel in self.denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        d = path.parent
        leaf = path.name

        def rd(name: str) -> str:
            return (d / name).read_text().strip()

        if leaf == "scaling_governor" and value not in rd("scaling_available_governors").split():
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if leaf == "energy_performance_preference":
            if rd("scaling_driver") == "intel_pstate" and rd("scaling_governor") == "performance" \
                    and value != "performance":
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            if value not in rd("energy_performance_available_preferences").split():
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if leaf == "scaling_min_freq" and int(value) > int(rd("scaling_max_freq")):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if leaf == "scaling_max_freq" and int(value) < int(rd("scaling_min_freq")):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        self.writes.append((rel, value))
        super()._write_file(path, value)  # the real open: O_NOFOLLOW, regular files only


# --- Jetson ------------------------------------------------------------------------------------

ORIN_GPU_FREQS = [306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000,
                  1020000000, 1122000000, 1224000000, 1300500000]


def jetson_agx_orin(root: Path) -> Path:
    """AGX Orin (JetPack 5) sysfs: CPUs with online files, GPU devfreq reached through the
    class symlink (of_node name ga10b), INA3221 hwmon rails; device-tree model beside it."""
    orin_agx(root)
    for c in range(12):
        put(root, f"{CPU}/cpu{c}/online", 1)
    dev = root / "devices/platform/17000000.ga10b"
    df = dev / "devfreq/17000000.ga10b"
    put(root, "devices/platform/17000000.ga10b/of_node/name", "ga10b\0")
    put(root, "devices/platform/17000000.ga10b/load", 412)
    rel = "devices/platform/17000000.ga10b/devfreq/17000000.ga10b"
    put(root, f"{rel}/available_frequencies", " ".join(map(str, ORIN_GPU_FREQS)))
    put(root, f"{rel}/min_freq", ORIN_GPU_FREQS[0])
    put(root, f"{rel}/max_freq", ORIN_GPU_FREQS[-1])
    put(root, f"{rel}/cur_freq", ORIN_GPU_FREQS[3])
    put(root, f"{rel}/governor", "nvhost_podgov")
    (df / "device").symlink_to("../..")
    (root / "class/devfreq").mkdir(parents=True, exist_ok=True)
    (root / "class/devfreq/17000000.ga10b").symlink_to(f"../../{rel}")
    hw = "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate((("VDD_GPU_SOC", 5008, 1196), ("VDD_CPU_CV", 5016, 398),
                                         ("VIN_SYS_5V0", 5000, 1020)), start=1):
        put(root, f"{hw}/in{n}_label", label)
        put(root, f"{hw}/in{n}_input", mv)
        put(root, f"{hw}/curr{n}_input", ma)
    put(root.parent, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\0")
    return root


def jetson_nano_jp4_rails(root: Path) -> Path:
    """Jetson Nano (JetPack 4) INA3221 through iio: rail_name_N / in_powerN_input (mW)."""
    d = "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (label, mw) in enumerate((("POM_5V_IN", 3964), ("POM_5V_GPU", 1204), ("POM_5V_CPU", 803))):
        put(root, f"{d}/rail_name_{n}", label)
        put(root, f"{d}/in_power{n}_input", mw)
    return root
