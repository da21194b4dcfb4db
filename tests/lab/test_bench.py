"""The benchmark harness keeps working: one host, one repetition, both tools, the output's shape.

Benchmarks are not tests: nothing here looks at a timing, only at what the run produced (every run
succeeded, the no-op changed nothing, both tools left the same state, the JSON, PNG and table are there).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the bench smoke run needs root and the lab (systemd-nspawn)")
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-core is not installed: pip install -e '.[bench]'")
    from tierfleet.artifacts.llama_build import cached_runtime

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no llama-server build in .cache/runtime: make runtime")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.harness import run_bench

    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    value = run_bench(sizes=[1], scale_sizes=[1], reps=1, out=out, older=False, lab_dir=tmp / "lab",
                      first_octet=180, log=lambda m: print(m, file=sys.stderr))
    return value, out


def test_every_tool_ran_and_the_rerun_changed_nothing(result):
    value, _ = result
    runs = value["runs"]
    assert {(r["tool"], r["kind"]) for r in runs} == {
        ("tierfleet", "first"), ("tierfleet", "noop"), ("tierfleet", "status"), ("ansible", "first"), ("ansible", "noop")}
    assert all(r["ok"] and r["n"] == 1 and len(r["host_cpu_s"]) == 1 for r in runs)
    assert all(r["changed"] == 0 for r in runs if r["kind"] == "noop")
    assert all(r["changed"] > 0 for r in runs if r["kind"] == "first")


def test_both_tools_left_the_same_state(result):
    value, _ = result
    check = value["state_check"]["1"]
    assert check["same"], check["differences"]
    assert check["lines"] > 50


def test_summary_json_chart_and_table(result):
    value, out = result
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(value))
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = value["summary"]
    assert [(r["n"], r["kind"]) for r in summary["compare"]] == [(1, "first"), (1, "noop")]
    assert all(r["ratio"] > 0 and set(r["tierfleet"]) == {"median", "min", "max", "n"} for r in summary["compare"])
    assert summary["cpu"][0]["tierfleet"]["controller_cpu_s"]["n"] == 1
    assert [r["n"] for r in summary["scale"]] == [1] and set(summary["scale"][0]) == {"n", "first", "noop", "status"}
    text = (out / "bench.txt").read_text()
    for heading in ("1. tier_basic, tierfleet vs Ansible", "2. CPU per host", "3. tierfleet by fleet size",
                    "same state on 1 host(s): yes"):
        assert heading in text
