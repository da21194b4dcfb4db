"""The on-host package stands alone: no pyinfra, no tierfleet control package, lazy NVML."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert lines[0].startswith("setup: backends ") and "nvml (recorded H200 probe)" in lines[0]
    assert lines[0].endswith("; no runtime")
    assert lines[1].startswith("daemon cpu: ") and "% of one core" in lines[1]
    assert lines[2].startswith("daemon rss: ") and "MiB" in lines[2]
    assert lines[3].startswith("reaction: ")


RUNTIME_BIN = Path(__file__).resolve().parents[2] / ".cache/runtime/build/bin/llama-server"


@pytest.mark.skipif(not RUNTIME_BIN.exists(), reason="no cached llama-server build under .cache/runtime")
def test_bench_measures_the_deployed_case_with_a_real_llama_server(tmp_path):
    gguf_tiny = pytest.importorskip("tierfleet.artifacts.gguf_tiny")
    model = gguf_tiny.write_tiny_gguf(tmp_path / "tiny.gguf", qtype="q8_0", seed=1)[0]
    p = subprocess.run([sys.executable, "-m", "tierfleet_ops.bench", "--seconds", "2", "--tick", "0.5",
                        "--llama-server", str(RUNTIME_BIN), "--model", str(model)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"setup: backends .*nvml \(recorded H200 probe\); absent: .*; "
                        r"runtime http://127\.0\.0\.1:\d+ scraped every tick", lines[0]), lines[0]
    # the runtime was found, scraped and its threads pinned while the figures were taken
    m = re.search(r"; \d+ ticks, 1 runtime process\(es\), (\d+) thread\(s\) pinned", lines[1])
    assert m and int(m.group(1)) >= 2, lines[1]
    assert lines[2].startswith("daemon rss: ")
