"""Dress a lab host's ``/proc`` and ``/sys`` as its profile (the LXCFS approach, with plain files).

The facts read real paths over SSH. A lab host is an x86_64 systemd-nspawn container on a 2-core
VM, so the kernel's own files describe this VM. For each host the lab writes a small tree of
regular files (``hosts/<name>/dress/``) and systemd-nspawn bind-mounts parts of it over the
kernel's files (``--bind``/``--bind-ro`` are applied after nspawn mounts ``/proc`` and ``/sys``):

==========================================  =========================================  =====
container path                              dressed content                            mode
==========================================  =========================================  =====
``/proc/meminfo``                           profile's MemTotal (static figures)         ro
``/proc/cpuinfo``                           x86 or arm64 format, one entry per CPU      ro
``/sys/devices/system/cpu``                 topology, online, cpufreq policies,         rw
                                            intel_pstate (writable: governors, EPP,
                                            ``cpuN/online`` for ``nvpmodel``)
``/sys/devices/system/node``                NUMA nodes and their cpulists               ro
``/sys/class``                              ``devfreq`` (Jetson GPU), ``hwmon``          rw
                                            (INA3221 rails), ``powercap`` (RAPL), plus
                                            links to every real class except ``net``
``/sys/firmware``                           ``devicetree/base/{model,compatible}``      ro
                                            (Jetsons only)
``/sys/bus``                                ``i2c/drivers/ina3221*``: power rails       ro
                                            (Jetsons only; hides the VM's own buses)
``/proc/driver``                            ``nvidia/version`` (GPU nodes only)         ro
==========================================  =========================================  =====

``/proc/device-tree`` cannot be created (procfs has no such entry on x86 and refuses new ones),
so Jetson facts take their documented fallback ``/sys/firmware/devicetree/base`` -- a real path
on every Jetson, where ``/proc/device-tree`` is only a symlink to it.

Not dressed, from the real container: ``uname -m`` (x86_64 even for Jetsons), ``/etc/os-release``
(Debian 12), ``/proc/stat``, ``/proc/uptime`` (per-host time namespace), load and the real
scheduler affinity (2 CPUs: pinning to a dressed CPU above 1 fails as it would on a smaller box).

>>> tree = dress_tree(PROFILES["jetson-nano"])
>>> tree["sys/devices/system/cpu/online"]
'0-3\\n'
>>> tree["sys/firmware/devicetree/base/compatible"]
'nvidia,p3450-0000\\x00nvidia,jetson-nano\\x00nvidia,tegra210\\x00'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tierfleet.lab.profiles import PROFILES, Profile  # noqa: F401  (PROFILES: doctest)


@dataclass(frozen=True)
class Symlink:
    """A symlink in a dressed tree."""

    target: str


@dataclass(frozen=True)
class Bind:
    """One bind mount of a dressed path over a container path."""

    source: str  # relative to the dress dir
    dest: str  # absolute in the container
    read_only: bool


def cpulist(cpus) -> str:
    """Format CPU numbers the way the kernel does (``0-3,8-11``).

    >>> cpulist([0, 1, 2, 3, 8, 9, 11])
    '0-3,8-9,11'
    >>> cpulist([])
    ''
    """
    cpus = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for c in cpus:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = c
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def cpumask(cpus, ncpu: int) -> str:
    """Format a hex CPU mask the way sysfs does (32-bit groups, comma separated)."""
    value = 0
    for c in cpus:
        value |= 1 << c
    groups = max(1, (ncpu + 31) // 32)
    words = [f"{(value >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range(groups))]
    return ",".join(words)


@dataclass(frozen=True)
class Cpu:
    number: int
    package: int
    core: int  # core_id within the package
    siblings: tuple[int, ...]  # SMT siblings including itself
    node: int


def topology(profile: Profile) -> list[Cpu]:
    """Logical CPUs in Linux order: first threads of every core of every package, then siblings.

    >>> [(c.number, c.package, c.core, c.siblings) for c in topology(PROFILES["gpu-node-t4"])][:2]
    [(0, 0, 0, (0, 8)), (1, 0, 1, (1, 9))]
    """
    physical = profile.physical_cores
    cpus = []
    for n in range(profile.logical_cpus):
        phys = n % physical
        package = phys // profile.cores_per_socket
        core = phys % profile.cores_per_socket
        siblings = tuple(phys + t * physical for t in range(profile.threads_per_core))
        cpus.append(Cpu(n, package, core, siblings, package))
    return cpus


def meminfo(profile: Profile) -> str:
    """``/proc/meminfo`` with the profile's MemTotal and plausible idle figures (kB)."""
    total = profile.mem_total_kib
    free = int(total * 0.86)
    available = int(total * 0.93)
    cached = int(total * 0.05)
    rows = [
        ("MemTotal", total), ("MemFree", free), ("MemAvailable", available), ("Buffers", int(total * 0.01)),
        ("Cached", cached), ("SwapCached", 0), ("Active", int(total * 0.04)), ("Inactive", int(total * 0.03)),
        ("Active(anon)", int(total * 0.01)), ("Inactive(anon)", 0), ("Active(file)", int(total * 0.03)),
        ("Inactive(file)", int(total * 0.03)), ("Unevictable", 0), ("Mlocked", 0), ("SwapTotal", 0),
        ("SwapFree", 0), ("Dirty", 12), ("Writeback", 0), ("AnonPages", int(total * 0.01)),
        ("Mapped", int(total * 0.005)), ("Shmem", 1024), ("KReclaimable", int(total * 0.005)),
        ("Slab", int(total * 0.01)), ("SReclaimable", int(total * 0.005)), ("SUnreclaim", int(total * 0.005)),
        ("KernelStack", 8192), ("PageTables", 4096), ("NFS_Unstable", 0), ("Bounce", 0),
        ("WritebackTmp", 0), ("CommitLimit", total // 2), ("Committed_AS", int(total * 0.02)),
        ("VmallocTotal", 34359738367), ("VmallocUsed", 40960), ("VmallocChunk", 0), ("Percpu", 2048),
        ("HardwareCorrupted", 0), ("AnonHugePages", 0), ("ShmemHugePages", 0), ("ShmemPmdMapped", 0),
    ]
    lines = [f"{k + ':':<16}{v:>8} kB" for k, v in rows]
    lines += [
        f"{'HugePages_Total:':<16}{0:>8}", f"{'HugePages_Free:':<16}{0:>8}",
        f"{'HugePages_Rsvd:':<16}{0:>8}", f"{'HugePages_Surp:':<16}{0:>8}",
        f"{'Hugepagesize:':<16}{2048:>8} kB", f"{'Hugetlb:':<16}{0:>8} kB",
    ]
    return "\n".join(lines) + "\n"


def cpuinfo(profile: Profile) -> str:
    """``/proc/cpuinfo`` in the dressed architecture's format."""
    blocks = []
    if profile.dressed_arch == "aarch64":
        spec = profile.jetson
        for cpu in topology(profile):
            blocks.append(
                f"processor\t: {cpu.number}\nBogoMIPS\t: {profile.bogomips}\nFeatures\t: {spec.cpu_features}\n"
                f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x{1 if spec.soc == 'tegra234' else 1:x}\n"
                f"CPU part\t: {spec.cpu_part}\nCPU revision\t: 1\n"
            )
        return "\n".join(blocks) + "\n"
    vendor = "AuthenticAMD" if "AMD" in profile.cpu_model else "GenuineIntel"
    mhz = (profile.cpufreq.base_khz or 2100000) / 1000
    for cpu in topology(profile):
        apic = cpu.package * 64 + cpu.core * 2 + (0 if cpu.number == cpu.siblings[0] else 1)
        blocks.append(
            f"processor\t: {cpu.number}\nvendor_id\t: {vendor}\ncpu family\t: {profile.cpu_family}\n"
            f"model\t\t: {profile.cpu_model_id}\nmodel name\t: {profile.cpu_model}\nstepping\t: 2\n"
            f"microcode\t: 0x1000065\ncpu MHz\t\t: {mhz:.3f}\ncache size\t: 32768 KB\n"
            f"physical id\t: {cpu.package}\nsiblings\t: {profile.cores_per_socket * profile.threads_per_core}\n"
            f"core id\t\t: {cpu.core}\ncpu cores\t: {profile.cores_per_socket}\napicid\t\t: {apic}\n"
            f"initial apicid\t: {apic}\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 27\nwp\t\t: yes\n"
            f"flags\t\t: {profile.cpu_flags}\nbugs\t\t: spectre_v1 spectre_v2 spec_store_bypass\n"
            f"bogomips\t: {profile.bogomips}\nclflush size\t: 64\ncache_alignment\t: 64\n"
            f"address sizes\t: 46 bits physical, 57 bits virtual\npower management:\n"
        )
    return "\n".join(blocks) + "\n"


def _policies(profile: Profile) -> list[tuple[int, ...]]:
    """cpufreq policies: clusters on Jetsons, one per logical CPU on x86."""
    if profile.jetson:
        return [tuple(c) for c in profile.jetson.cpu_clusters]
    if not profile.cpufreq.driver:
        return []
    return [(c.number,) for c in topology(profile)]


def _cpu_tree(profile: Profile) -> dict:
    tree: dict = {}
    base = "sys/devices/system/cpu"
    cpus = topology(profile)
    n = len(cpus)
    allcpus = cpulist(range(n))
    tree[f"{base}/online"] = f"{allcpus}\n"
    tree[f"{base}/offline"] = "\n"
    tree[f"{base}/possible"] = f"{allcpus}\n"
    tree[f"{base}/present"] = f"{allcpus}\n"
    tree[f"{base}/kernel_max"] = "8191\n" if profile.dressed_arch == "x86_64" else "15\n"
    tree[f"{base}/isolated"] = "\n"
    if profile.dressed_arch == "x86_64":
        smt = profile.threads_per_core > 1
        tree[f"{base}/smt/active"] = "1\n" if smt else "0\n"
        tree[f"{base}/smt/control"] = "on\n" if smt else "notsupported\n"
    policy_of = {}
    for policy in _policies(profile):
        for c in policy:
            policy_of[c] = policy[0]
    for cpu in cpus:
        d = f"{base}/cpu{cpu.number}"
        if cpu.number != 0 or profile.dressed_arch == "aarch64":
            tree[f"{d}/online"] = "1\n"
        core_cpus = cpulist(cpu.siblings)
        package_cpus = [c.number for c in cpus if c.package == cpu.package]
        t = f"{d}/topology"
        tree[f"{t}/core_cpus_list"] = f"{core_cpus}\n"
        tree[f"{t}/core_cpus"] = cpumask(cpu.siblings, n) + "\n"
        tree[f"{t}/thread_siblings_list"] = f"{core_cpus}\n"
        tree[f"{t}/thread_siblings"] = cpumask(cpu.siblings, n) + "\n"
        tree[f"{t}/package_cpus_list"] = f"{cpulist(package_cpus)}\n"
        tree[f"{t}/package_cpus"] = cpumask(package_cpus, n) + "\n"
        tree[f"{t}/core_siblings_list"] = f"{cpulist(package_cpus)}\n"
        tree[f"{t}/physical_package_id"] = f"{cpu.package}\n"
        tree[f"{t}/core_id"] = f"{cpu.core}\n"
        tree[f"{t}/die_id"] = "0\n"
        if profile.jetson:
            cluster = next(i for i, c in enumerate(profile.jetson.cpu_clusters) if cpu.number in c)
            tree[f"{t}/cluster_id"] = f"{cluster}\n"
            tree[f"{t}/cluster_cpus_list"] = f"{cpulist(profile.jetson.cpu_clusters[cluster])}\n"
            tree[f"{d}/cpu_capacity"] = "1024\n"
        if cpu.number in policy_of:
            tree[f"{d}/cpufreq"] = Symlink(f"../cpufreq/policy{policy_of[cpu.number]}")
        tree[f"{d}/node{cpu.node}"] = Symlink(f"../../node/node{cpu.node}")
    tree.update(_cpufreq_tree(profile))
    return tree


def _cpufreq_tree(profile: Profile) -> dict:
    tree: dict = {}
    base = "sys/devices/system/cpu/cpufreq"
    policies = _policies(profile)
    if not policies:
        return {f"{base}/.keep": ""} if profile.dressed_arch == "x86_64" else {}
    if profile.jetson:
        spec = profile.jetson
        driver, governor = "tegra194" if spec.soc == "tegra234" else "tegra-cpufreq", "schedutil"
        governors = ("interactive", "conservative", "ondemand", "userspace", "powersave", "performance",
                     "schedutil")
        fmin, fmax, freqs = spec.cpu_freqs_khz[0], spec.cpu_freqs_khz[-1], spec.cpu_freqs_khz
        base_khz = 0
    else:
        cf = profile.cpufreq
        driver, governor, governors = cf.driver, cf.governor, cf.governors
        fmin, fmax, base_khz = cf.min_khz, cf.max_khz, cf.base_khz
        freqs = () if driver == "intel_pstate" else (fmax, (fmax + fmin) // 2, fmin)
    for policy in policies:
        p = f"{base}/policy{policy[0]}"
        listed = " ".join(str(c) for c in policy)
        tree.update({
            f"{p}/affected_cpus": f"{listed}\n",
            f"{p}/related_cpus": f"{listed}\n",
            f"{p}/scaling_driver": f"{driver}\n",
            f"{p}/scaling_governor": f"{governor}\n",
            f"{p}/scaling_available_governors": " ".join(governors) + " \n",
            f"{p}/scaling_min_freq": f"{fmin}\n",
            f"{p}/scaling_max_freq": f"{fmax}\n",
            f"{p}/scaling_cur_freq": f"{fmax}\n",
            f"{p}/cpuinfo_min_freq": f"{fmin}\n",
            f"{p}/cpuinfo_max_freq": f"{fmax}\n",
            f"{p}/cpuinfo_transition_latency": "0\n",
            f"{p}/scaling_setspeed": "<unsupported>\n",
        })
        if freqs:
            tree[f"{p}/scaling_available_frequencies"] = " ".join(str(f) for f in freqs) + " \n"
        if base_khz and driver == "intel_pstate":
            tree[f"{p}/base_frequency"] = f"{base_khz}\n"
        if profile.cpufreq.epp:
            tree[f"{p}/energy_performance_preference"] = f"{profile.cpufreq.epp_default}\n"
            tree[f"{p}/energy_performance_available_preferences"] = " ".join(profile.cpufreq.epp) + " \n"
    if profile.cpufreq.driver == "intel_pstate":
        ip = "sys/devices/system/cpu/intel_pstate"
        tree.update({
            f"{ip}/status": "active\n",
            f"{ip}/no_turbo": "0\n",
            f"{ip}/min_perf_pct": f"{100 * fmin // fmax}\n",
            f"{ip}/max_perf_pct": "100\n",
            f"{ip}/num_pstates": f"{(fmax - fmin) // 100000 + 1}\n",
            f"{ip}/turbo_pct": "26\n",
            f"{ip}/hwp_dynamic_boost": "0\n",
        })
    elif profile.cpufreq.driver == "acpi-cpufreq":
        tree[f"{base}/boost"] = "1\n"
    return tree


def _node_tree(profile: Profile) -> dict:
    base = "sys/devices/system/node"
    cpus = topology(profile)
    nodes = sorted({c.node for c in cpus})
    tree = {
        f"{base}/online": f"{cpulist(nodes)}\n",
        f"{base}/possible": f"{cpulist(nodes)}\n",
        f"{base}/has_cpu": f"{cpulist(nodes)}\n",
        f"{base}/has_memory": f"{cpulist(nodes)}\n",
        f"{base}/has_normal_memory": f"{cpulist(nodes)}\n",
    }
    per_node = profile.mem_total_kib // len(nodes)
    for node in nodes:
        members = [c.number for c in cpus if c.node == node]
        tree[f"{base}/node{node}/cpulist"] = f"{cpulist(members)}\n"
        tree[f"{base}/node{node}/cpumap"] = cpumask(members, len(cpus)) + "\n"
        tree[f"{base}/node{node}/meminfo"] = (
            f"Node {node} MemTotal:       {per_node} kB\nNode {node} MemFree:        {int(per_node * 0.86)} kB\n"
        )
    return tree


def _class_tree(profile: Profile) -> dict:
    tree: dict = {}
    if profile.jetson:
        spec = profile.jetson
        d = f"sys/class/devfreq/{spec.gpu_devfreq}"
        tree.update({
            f"{d}/cur_freq": f"{spec.gpu_freqs_hz[0]}\n",
            f"{d}/min_freq": f"{spec.gpu_freqs_hz[0]}\n",
            f"{d}/max_freq": f"{spec.gpu_freqs_hz[-1]}\n",
            f"{d}/available_frequencies": " ".join(str(f) for f in spec.gpu_freqs_hz) + "\n",
            f"{d}/governor": "nvhost_podgov\n",
            f"{d}/available_governors": "wmark_active nvhost_podgov userspace performance simple_ondemand\n",
            f"{d}/load": "0\n",
            f"{d}/device/of_node/name": f"{spec.gpu_of_node}\0",
            f"{d}/device/of_node/compatible": f"nvidia,{spec.gpu_of_node}\0",
        })
        if spec.soc == "tegra234":
            h = "sys/class/hwmon/hwmon1"
            tree[f"{h}/name"] = "ina3221\n"
            for i, (label, mv, ma) in enumerate(zip(spec.rails, (5080, 4968, 4976), (980, 96, 424)), 1):
                tree[f"{h}/in{i}_label"] = f"{label}\n"
                tree[f"{h}/in{i}_input"] = f"{mv}\n"
                tree[f"{h}/curr{i}_input"] = f"{ma}\n"
            # JetPack 5+: the driver's device directory holds hwmon/hwmonN
            tree["sys/bus/i2c/drivers/ina3221/1-0040/name"] = "ina3221\n"
            tree["sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"] = Symlink("/sys/class/hwmon/hwmon1")
        else:
            # JetPack 4: the ina3221x driver exposes iio rails
            d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
            tree[f"{d}/name"] = "ina3221x\n"
            for i, (label, mw) in enumerate(zip(spec.rails, (2460, 80, 560))):
                tree[f"{d}/rail_name_{i}"] = f"{label}\n"
                tree[f"{d}/in_power{i}_input"] = f"{mw}\n"
                tree[f"{d}/in_voltage{i}_input"] = f"{5000 - 8 * i}\n"
                tree[f"{d}/in_current{i}_input"] = f"{mw * 1000 // 5000}\n"
    if profile.cpufreq.rapl:
        for pkg in range(profile.sockets):
            d = f"sys/class/powercap/intel-rapl:{pkg}"
            tree.update({
                f"{d}/name": f"package-{pkg}\n",
                f"{d}/enabled": "1\n",
                f"{d}/energy_uj": f"{123456789 + pkg * 1000}\n",
                f"{d}/max_energy_range_uj": "262143328850\n",
                f"{d}/constraint_0_name": "long_term\n",
                f"{d}/constraint_0_power_limit_uw": f"{150 * 1000000}\n",
            })
    return tree


def _firmware_tree(profile: Profile) -> dict:
    spec = profile.jetson
    base = "sys/firmware/devicetree/base"
    return {
        f"{base}/model": f"{spec.model}\0",
        f"{base}/compatible": "".join(f"{c}\0" for c in spec.compatible),
        f"{base}/name": "\0",
        f"{base}/serial-number": "1421621040987\0",
    }


def _driver_tree(profile: Profile) -> dict:
    gpu = profile.gpus[0]
    tree = {
        "proc/driver/nvidia/version": (
            f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {gpu.driver}  Release Build  "
            f"(dvs-builder@U22-I3-AM08-24-2)  Wed Oct  1 03:39:41 UTC 2025\n"
            f"GCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1)\n"
        ),
    }
    for g in profile.gpus:
        bus = g.pci_bus[4:].lower()
        tree[f"proc/driver/nvidia/gpus/{bus}/information"] = (
            f"Model: \t\t {g.name}\nIRQ:   \t\t 0\nGPU UUID: \t {g.uuid}\nVideo BIOS: \t {g.vbios}\n"
            f"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus}\n"
            f"Device Minor: \t 0\nGPU Excluded:\t No\n"
        )
    return tree


def dress_tree(profile: Profile) -> dict:
    """Every dressed file of a profile: relative path -> text (or :class:`Symlink`)."""
    tree: dict = {"proc/meminfo": meminfo(profile), "proc/cpuinfo": cpuinfo(profile)}
    if profile.dressed_arch == "aarch64":
        # arm64 lists only online CPUs: nvpmodel rebuilds proc/cpuinfo from this full copy
        tree["proc/cpuinfo.all"] = tree["proc/cpuinfo"]
    tree.update(_cpu_tree(profile))
    tree.update(_node_tree(profile))
    tree.update(_class_tree(profile))
    if profile.jetson:
        tree.update(_firmware_tree(profile))
    if profile.gpus:
        tree.update(_driver_tree(profile))
    return tree


def binds(profile: Profile) -> list[Bind]:
    """The bind mounts that put a profile's dressed tree in place.

    >>> [b.dest for b in binds(PROFILES["gpu-node-h200"])]
    ['/proc/meminfo', '/proc/cpuinfo', '/sys/devices/system/cpu', '/sys/devices/system/node', '/proc/driver']
    """
    out = [
        Bind("proc/meminfo", "/proc/meminfo", True),
        Bind("proc/cpuinfo", "/proc/cpuinfo", True),
        Bind("sys/devices/system/cpu", "/sys/devices/system/cpu", False),
        Bind("sys/devices/system/node", "/sys/devices/system/node", True),
    ]
    if profile.jetson or profile.cpufreq.rapl:
        out.append(Bind("sys/class", "/sys/class", False))
    if profile.jetson:
        out.append(Bind("sys/firmware", "/sys/firmware", True))
        out.append(Bind("sys/bus", "/sys/bus", True))
    if profile.gpus:
        out.append(Bind("proc/driver", "/proc/driver", True))
    return out


def write_tree(root: Path, tree: dict, real_sys_class: Path | None = Path("/sys/class")) -> None:
    """Write a dressed tree under ``root`` (replacing what was there).

    With ``real_sys_class``, ``sys/class`` also gets a relative link for each entry of every
    real class except ``net`` (network namespaces make the machine's list wrong in a host), so
    hiding ``/sys/class`` behind the dressed one loses nothing else.
    """
    root = Path(root)
    for rel, content in sorted(tree.items(), key=lambda kv: kv[0]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(content.target)
        elif not rel.endswith("/.keep"):
            path.write_text(content)
    if real_sys_class is not None and (root / "sys/class").is_dir() and real_sys_class.is_dir():
        for cls in real_sys_class.iterdir():
            if cls.name == "net" or (root / "sys/class" / cls.name).exists():
                continue
            target = root / "sys/class" / cls.name
            target.mkdir()
            for entry in cls.iterdir():
                try:
                    link = os.readlink(entry)
                except OSError:
                    continue
                (target / entry.name).symlink_to(link)
