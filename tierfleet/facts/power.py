"""Which power controls a host offers (the ops daemon picks its backends from the same list)."""

from __future__ import annotations

from pyinfra.api import FactBase

#: control name -> shell test that prints the name when the control exists
CONTROLS: dict[str, str] = {
    "cpufreq": "[ -d /sys/devices/system/cpu/cpufreq/policy0 ]",
    "epp": "[ -e /sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference ]",
    "rapl": "[ -e /sys/class/powercap/intel-rapl:0/energy_uj ]",
    "nvpmodel": "command -v nvpmodel >/dev/null 2>&1",
    "jetson_clocks": "command -v jetson_clocks >/dev/null 2>&1",
    "nvml": "command -v nvidia-smi >/dev/null 2>&1 || ls /usr/lib/*/libnvidia-ml.so.1 >/dev/null 2>&1",
    "devfreq": "ls /sys/class/devfreq/ 2>/dev/null | grep -q .",
}


def parse_controls(lines: list[str]) -> list[str]:
    """Keep the known control names from the output, in :data:`CONTROLS` order.

    >>> parse_controls(["nvml", "cpufreq", "bogus"])
    ['cpufreq', 'nvml']
    """
    present = {line.strip() for line in lines}
    return [name for name in CONTROLS if name in present]


class PowerControls(FactBase[list[str]]):
    """Names of the power controls present: ``cpufreq``, ``epp``, ``rapl``, ``nvpmodel``,
    ``jetson_clocks``, ``nvml``, ``devfreq``."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return " ".join(f"{test} && echo {name};" for name, test in CONTROLS.items()) + " true"

    def process(self, output: list[str]) -> list[str]:
        return parse_controls(output)
