"""Jetson dressing: ``/etc/nvpmodel.conf`` and ``/etc/nv_tegra_release`` in the real formats.

The power modes are those of the boards' shipped files (Nano ``nvpmodel_t210_jetson-nano.conf``:
0=MAXN 1=5W; Orin Nano 8GB ``nvpmodel_p3767_0003.conf``: 0=15W 1=7W, and its "super" file
0=15W 1=25W 2=MAXN_SUPER). Each ``< PARAM >`` block names the sysfs file a setting writes; in the
lab the CPU files are the dressed ``/sys/devices/system/cpu`` tree and the GPU devfreq files sit
under the dressed ``/sys/class/devfreq/<node>/`` (on a real board that directory is a symlink into
``/sys/devices/platform/...``; the ``nvpmodel`` stand-in writes whatever the file names).

>>> "< POWER_MODEL ID=1 NAME=5W >" in nvpmodel_conf(PROFILES["jetson-nano"].jetson)
True
"""

from __future__ import annotations

from dataclasses import dataclass

from tierfleet.lab.profiles import JetsonSpec, PROFILES  # noqa: F401  (PROFILES: doctest)


@dataclass(frozen=True)
class PowerMode:
    id: int
    name: str
    online: tuple[int, ...]  # CPUs online in this mode
    cpu_max_khz: int  # -1 = hardware maximum
    gpu_max_hz: int  # -1 = hardware maximum


#: conf name -> (modes, default id)
MODES: dict[str, tuple[tuple[PowerMode, ...], int]] = {
    "t210": (
        (
            PowerMode(0, "MAXN", (0, 1, 2, 3), -1, -1),
            PowerMode(1, "5W", (0, 1), 918000, 640000000),
        ),
        0,
    ),
    "p3767_0003": (
        (
            PowerMode(0, "15W", (0, 1, 2, 3, 4, 5), 1510400, 624750000),
            PowerMode(1, "7W", (0, 1, 2, 3), 960000, 408000000),
        ),
        0,
    ),
    "p3767_0003_super": (
        (
            PowerMode(0, "15W", (0, 1, 2, 3, 4, 5), 1497600, 612000000),
            PowerMode(1, "25W", (0, 1, 2, 3, 4, 5), 1344000, 918000000),
            PowerMode(2, "MAXN_SUPER", (0, 1, 2, 3, 4, 5), -1, -1),
        ),
        2,
    ),
}


def _cluster_name(spec: JetsonSpec, index: int) -> str:
    if spec.soc == "tegra210":
        return "CPU_A57"
    return f"CPU_A78_{index}"


def nvpmodel_conf(spec: JetsonSpec, conf: str | None = None) -> str:
    """Render an nvpmodel configuration file for a board, in the real block format."""
    modes, default = MODES[conf or spec.nvpmodel_conf]
    ncpu = sum(len(c) for c in spec.cpu_clusters)
    devfreq = f"/sys/class/devfreq/{spec.gpu_devfreq}"
    out = [
        "#",
        f"# nvpmodel configuration for {spec.model} ({spec.soc})",
        "#",
        "# Power modes: < POWER_MODEL ID=<id> NAME=<name> > followed by <PARAM> <ARG> <VALUE> lines;",
        "# -1 selects the maximum the hardware allows. The default mode is set by < PM_CONFIG >.",
        "#",
        "",
        "< PARAM TYPE=FILE NAME=CPU_ONLINE >",
    ]
    out += [f"CORE_{n} /sys/devices/system/cpu/cpu{n}/online" for n in range(ncpu)]
    for index, cluster in enumerate(spec.cpu_clusters):
        first = cluster[0]
        out += [
            "",
            f"< PARAM TYPE=CLUSTER NAME={_cluster_name(spec, index)} >",
            f"MIN_FREQ /sys/devices/system/cpu/cpu{first}/cpufreq/scaling_min_freq",
            f"MAX_FREQ /sys/devices/system/cpu/cpu{first}/cpufreq/scaling_max_freq",
        ]
    out += [
        "",
        "< PARAM TYPE=FILE NAME=GPU >",
        f"MIN_FREQ {devfreq}/min_freq",
        f"MAX_FREQ {devfreq}/max_freq",
    ]
    for mode in modes:
        out += ["", f"< POWER_MODEL ID={mode.id} NAME={mode.name} >"]
        out += [f"CPU_ONLINE CORE_{n} {1 if n in mode.online else 0}" for n in range(ncpu)]
        for index, cluster in enumerate(spec.cpu_clusters):
            name = _cluster_name(spec, index)
            online = any(c in mode.online for c in cluster)
            out.append(f"{name} MIN_FREQ 0")
            out.append(f"{name} MAX_FREQ {mode.cpu_max_khz if online else -1}")
        out.append("GPU MIN_FREQ 0")
        out.append(f"GPU MAX_FREQ {mode.gpu_max_hz}")
    out += ["", "# mandatory section to configure the default mode", f"< PM_CONFIG DEFAULT={default} >", ""]
    return "\n".join(out)


def nv_tegra_release(spec: JetsonSpec) -> str:
    """``/etc/nv_tegra_release`` as the ``nvidia-l4t-core`` package installs it.

    >>> nv_tegra_release(PROFILES["jetson-orin-nano"].jetson).splitlines()[0][:38]
    '# R36 (release), REVISION: 4.3, GCID: '
    """
    first = (
        f"# {spec.l4t_release} (release), REVISION: {spec.l4t_revision}, GCID: {spec.gcid}, "
        f"BOARD: {spec.board}, EABI: aarch64, DATE: {spec.date}"
    )
    if spec.kernel_flavour:
        first += f"\n# KERNEL_VARIANT: {spec.kernel_flavour}"
    libdir = "tegra" if spec.soc == "tegra210" else "nvidia"
    return (
        f"{first}\nTARGET_USERSPACE_LIB_DIR={libdir}\n"
        f"TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/{libdir}\n"
    )
