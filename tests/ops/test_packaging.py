"""The on-host package stands alone: no pyinfra, no tierfleet control package, lazy NVML."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import tierfleet_ops
for m in pkgutil.walk_packages(tierfleet_ops.__path__, "tierfleet_ops."):
    if not m.name.endswith("__main__") and ".testing." not in m.name:
        importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split(".")[0] in ("pyinfra", "tierfleet", "pynvml"))
print(",".join(bad))
"""


def test_importing_every_module_pulls_in_neither_pyinfra_tierfleet_nor_pynvml():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_bench_prints_its_three_figures():
    p = subprocess.run([sys.executable, "-m", "tierfleet_ops.bench", "--seconds", "1", "--tick", "0.5"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("daemon cpu: ") and "% of one core" in lines[0]
    assert lines[1].startswith("daemon rss: ") and "MiB" in lines[1]
    assert lines[2].startswith("reaction: ")
