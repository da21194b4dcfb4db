"""The prepared GPU power script is read-only and runs end to end (with a replayed NVML probe here); the shard
bench runs end to end."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from .conftest import RUNTIME, needs_runtime

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_idle_power.py"
PROBE = REPO / "ops" / "tierfleet_ops" / "data" / "h200_nvml_probe.json"


def test_the_gpu_script_calls_only_nvml_getters():
    tree = ast.parse(SCRIPT.read_text())
    docs = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef))}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)} - docs
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | strings
    nvml = {n for n in names if n.startswith("nvml")}
    assert nvml and all(n.startswith(("nvmlDeviceGet", "nvmlInit", "nvmlShutdown")) for n in nvml), nvml
    assert not [s for s in strings if "nvidia-smi" in s or "Set" in s]  # no tool run, no setter named


@needs_runtime
def test_the_gpu_script_runs_its_four_states(tmp_path, tiny_models):
    out = tmp_path / "power.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--llama-server", str(RUNTIME.server), "--model",
                          str(tiny_models["a"][0]), "--seconds", "1", "--settle", "0", "--sleep-after", "2",
                          "--ngl", "0", "--fake-nvml", str(PROBE), "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    states = json.loads(out.read_text())["states"]
    assert list(states) == ["no runtime", "loaded, idle", "asleep", "unloaded"]
    assert all(s["samples"] > 0 and s["power_w_mean"] > 0 for s in states.values())
    assert "unloading the idle shard saves" in run.stdout


@needs_runtime
def test_the_shard_bench_runs_its_three_parts():
    """A short run of bench/shards.py (a 5 MB shard, a few requests), so the harness keeps working; no figure is
    judged here (benchmarks are not tests)."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "shards.py"), "--size-mb", "5", "--requests", "5",
                          "--repeat", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    out = run.stdout
    for part in ("1. wake-up", "2. added latency of the gate", "3. memory given back"):
        assert part in out, out
    assert "inside the child" in out and "read time / weights" in out, out  # the child's phases were found
    assert "warmup = false, repack = false" in out
