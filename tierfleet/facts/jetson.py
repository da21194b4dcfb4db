"""Jetson facts: board model, SoC, L4T release and JetPack version.

Sources, in order: ``/proc/device-tree/{model,compatible}`` (falling back to
``/sys/firmware/devicetree/base``, which ``/proc/device-tree`` links to on Jetsons),
``/etc/nv_tegra_release`` (first line, e.g. ``# R36 (release), REVISION: 4.3, ...``) and, when that file
is missing, the version of the ``nvidia-l4t-core`` package.
"""

from __future__ import annotations

import re
from typing import TypedDict

from pyinfra.api import FactBase
from tierfleet_ops.backends.jetson import parse_nvpmodel_conf, parse_nvpmodel_conf_default

from tierfleet.facts._util import parse_key_values

#: SoC compatible string -> (family, apt repository component of the L4T apt source)
SOCS: dict[str, tuple[str, str]] = {
    "tegra210": ("Nano/TX1", "t210"),
    "tegra186": ("TX2", "t186"),
    "tegra194": ("Xavier", "t194"),
    "tegra234": ("Orin", "t234"),
    "tegra264": ("Thor", "t264"),
}

#: L4T release -> JetPack version. Most specific prefix wins.
L4T_TO_JETPACK: dict[str, str] = {
    "38.4": "7.1",
    "38.2": "7.0",
    "36.5.0": "6.2.1",
    "36.4.7": "6.2.1",
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4.2": "6.1.1",
    "36.4.0": "6.1",
    "36.3": "6.0",
    "36.2": "6.0 DP",
    "35.6.1": "5.1.5",
    "35.6.0": "5.1.4",
    "35.6": "5.1.4",
    "35.5": "5.1.3",
    "35.4": "5.1.2",
    "35.3": "5.1.1",
    "35.2": "5.1",
    "35.1": "5.0.2",
    "32.7.6": "4.6.6",
    "32.7.5": "4.6.5",
    "32.7.4": "4.6.4",
    "32.7.3": "4.6.3",
    "32.7.2": "4.6.2",
    "32.7.1": "4.6.1",
    "32.6": "4.6",
    "32.5.2": "4.5.1",
    "32.5.1": "4.5.1",
    "32.5": "4.5",
}

# ASCII digits only, as few as real releases have (``\d`` also matches other scripts' digits)
_RELEASE_RE = re.compile(r"#\s*R(?P<major>[0-9]{1,3})\s*\(release\),\s*REVISION:\s*(?P<rev>[0-9]{1,4}(?:\.[0-9]{1,4}){0,3})(?![0-9.])")
_PACKAGE_RE = re.compile(r"^(?P<version>[0-9]{1,3}\.[0-9]{1,4}(?:\.[0-9]{1,4})?)(?![0-9])")


class JetsonInfo(TypedDict):
    model: str | None
    soc: str | None
    family: str | None
    apt_soc: str | None
    l4t: str | None
    jetpack: str | None
    l4t_source: str | None


def parse_l4t_release(line: str) -> str | None:
    """Parse the first line of ``/etc/nv_tegra_release`` into an L4T version.

    >>> parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64")
    '36.4.3'
    >>> parse_l4t_release("garbage") is None
    True
    """
    match = _RELEASE_RE.search(line)
    if not match:
        return None
    return f"{match['major']}.{match['rev']}"


def parse_l4t_package_version(version: str) -> str | None:
    """Parse the ``nvidia-l4t-core`` package version (``36.4.3-20250107174145``) into an L4T version.

    >>> parse_l4t_package_version("32.7.6-20241104234540")
    '32.7.6'
    """
    match = _PACKAGE_RE.match(version.strip())
    return match["version"] if match else None


def jetpack_for(l4t: str | None) -> str | None:
    """Map an L4T version to its JetPack release (most specific table prefix wins).

    >>> jetpack_for("36.4.3"), jetpack_for("35.4.1"), jetpack_for("32.7.6"), jetpack_for("99.1")
    ('6.2', '5.1.2', '4.6.6', None)
    """
    if not l4t:
        return None
    parts = l4t.split(".")
    for n in range(len(parts), 0, -1):
        jetpack = L4T_TO_JETPACK.get(".".join(parts[:n]))
        if jetpack:
            return jetpack
    return None


class Jetson(FactBase[JetsonInfo | None]):
    """Jetson identity, or ``None`` on anything that is not a Jetson.

    .. code:: python

        {"model": "NVIDIA Jetson Orin Nano Developer Kit", "soc": "tegra234", "family": "Orin",
         "apt_soc": "t234", "l4t": "36.4.3", "jetpack": "6.2", "l4t_source": "nv_tegra_release"}
    """

    def command(self) -> str:
        return (
            "for d in /proc/device-tree /sys/firmware/devicetree/base; do "
            'if [ -r "$d/model" ]; then '
            "printf 'model='; tr -d '\\000' < \"$d/model\"; echo; "
            "printf 'compatible='; tr '\\000' ' ' < \"$d/compatible\" 2>/dev/null; echo; break; fi; "
            "done; "
            "if [ -r /etc/nv_tegra_release ]; then printf 'nv_tegra_release='; head -n 1 /etc/nv_tegra_release; fi; "
            "printf 'l4t_core='; dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null; echo; true"
        )

    def process(self, output: list[str]) -> JetsonInfo | None:
        values = parse_key_values(output)
        compatible = values.get("compatible", "").split()
        soc = next((c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")), None)

        l4t, source = None, None
        if values.get("nv_tegra_release"):
            l4t, source = parse_l4t_release(values["nv_tegra_release"]), "nv_tegra_release"
        if l4t is None and values.get("l4t_core"):
            l4t, source = parse_l4t_package_version(values["l4t_core"]), "nvidia-l4t-core"
        if soc is None and l4t is None:
            return None

        family, apt_soc = SOCS.get(soc or "", (None, None))
        return JetsonInfo(
            model=values.get("model") or None,
            soc=soc,
            family=family,
            apt_soc=apt_soc,
            l4t=l4t,
            jetpack=jetpack_for(l4t),
            l4t_source=source if l4t else None,
        )


#: where nvpmodel keeps the conf chosen with ``nvpmodel -f`` (it reads that one instead of /etc/nvpmodel.conf)
NVPMODEL_CONF_PATH_FILE = "/var/lib/nvpmodel/conf_file_path"
NVPMODEL_CONF = "/etc/nvpmodel.conf"
#: read at most this much of a conf (real ones are 10-60 KiB)
NVPMODEL_CONF_MAX_BYTES = 262144


class NvpmodelMode(TypedDict):
    id: int
    name: str
    #: CPUs the mode takes offline (``CPU_ONLINE CORE_N 0``)
    cpu_offline: list[int]


class NvpmodelConfInfo(TypedDict):
    path: str
    modes: list[NvpmodelMode]
    #: the ``< PM_CONFIG DEFAULT=N >`` mode id, ``None`` when the conf has none
    default: int | None


def parse_nvpmodel_conf_output(lines: list[str]) -> NvpmodelConfInfo | None:
    """Parse ``##conf=<path>`` followed by the conf's text; ``None`` without a conf or a mode in it.

    The blocks are read by the ops daemon's own parsers (:func:`tierfleet_ops.backends.jetson.parse_nvpmodel_conf`
    and :func:`~tierfleet_ops.backends.jetson.parse_nvpmodel_conf_default`), so both sides see the same modes.

    >>> info = parse_nvpmodel_conf_output(["##conf=/etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=MAXN >",
    ...     "< POWER_MODEL ID=1 NAME=5W >", "CPU_ONLINE CORE_2 0", "< PM_CONFIG DEFAULT=0 >"])
    >>> [(m["id"], m["name"], m["cpu_offline"]) for m in info["modes"]], info["default"]
    ([(0, 'MAXN', []), (1, '5W', [2])], 0)
    """
    if not lines or not lines[0].startswith("##conf="):
        return None
    text = "\n".join(lines[1:])
    modes = parse_nvpmodel_conf(text)
    if not modes:
        return None
    return NvpmodelConfInfo(
        path=lines[0][len("##conf="):],
        modes=[NvpmodelMode(id=i, name=m["name"], cpu_offline=sorted(set(m["cpu_offline"])))
               for i, m in sorted(modes.items())],
        default=parse_nvpmodel_conf_default(text),
    )


class NvpmodelConf(FactBase[NvpmodelConfInfo | None]):
    """The power modes of a Jetson's nvpmodel conf and its default mode; ``None`` where there is no conf.

    The conf is the one nvpmodel itself uses: the path in ``/var/lib/nvpmodel/conf_file_path`` (set by
    ``nvpmodel -f``) when that file is readable, else ``/etc/nvpmodel.conf`` (on L4T a link to the board's
    ``/etc/nvpmodel/nvpmodel_<board>.conf``).

    .. code:: python

        {"path": "/etc/nvpmodel.conf", "default": 0,
         "modes": [{"id": 0, "name": "15W", "cpu_offline": []}, {"id": 1, "name": "7W", "cpu_offline": [4, 5]}]}
    """

    def command(self) -> str:
        return (
            f"conf={NVPMODEL_CONF}; "
            f"if [ -r {NVPMODEL_CONF_PATH_FILE} ]; then c=$(head -n 1 {NVPMODEL_CONF_PATH_FILE}); "
            '[ -n "$c" ] && [ -r "$c" ] && conf=$c; fi; '
            'if [ -r "$conf" ]; then printf \'##conf=%s\\n\' "$conf"; '
            f'head -c {NVPMODEL_CONF_MAX_BYTES} "$conf"; echo; fi; true'
        )

    def process(self, output: list[str]) -> NvpmodelConfInfo | None:
        return parse_nvpmodel_conf_output(output)
