"""The benchmark's arithmetic and output without a lab: medians and ratios, per-host CPU, the scale slope, runs
of separate invocations combined, the table and chart, and bad --combine input refused with the file named.

No timings are measured here; the runs are written down by hand.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from bench.harness import Run  # noqa: E402

MACHINE = {"cpu": "test cpu", "cpus": 2, "memory_gib": 24, "kernel": "6", "python": "3.11",
           "load_before": [3.0, 3.0, 3.0], "load_after": [4.0, 4.0, 4.0]}


def result(runs: list[Run], sizes: list[int], scale: list[int], reps: int, load: float) -> dict:
    return {"machine": dict(MACHINE, load_before=[load] * 3, load_after=[load + 1] * 3),
            "versions": {"pyinfra": "3.x", "ansible-core": "2.x"},
            "config": {"sizes": sizes, "scale_sizes": scale, "reps": reps},
            "runs": [asdict(r) for r in runs],
            "state_check": {str(n): {"same": True, "lines": 100, "differences": []} for n in sizes},
            "summary": harness.summarise(runs)}


def comparison_runs() -> list[Run]:
    return [
        Run("tierfleet", 3, "first", 0, 90.0, 1.5, [10.0, 11.0, 12.0], 63),
        Run("tierfleet", 3, "first", 1, 110.0, 1.4, [10.0, 10.0, 10.0], 63),
        Run("tierfleet", 3, "noop", 0, 20.0, 1.2, [0.9, 0.8, 1.0], 0),
        Run("tierfleet", 3, "noop", 1, 30.0, 1.0, [0.7, 0.7, 0.7], 0),
        Run("tierfleet", 3, "status", 0, 5.0, 0.5),
        Run("ansible", 3, "first", 0, 700.0, 30.0, [50.0, 50.0, 50.0], 111),
        Run("ansible", 3, "first", 1, 900.0, 20.0, [40.0, 40.0, 40.0], 111),
        Run("ansible", 3, "noop", 0, 200.0, 10.0, [8.0, 8.0, 8.0], 0),
        Run("ansible", 3, "noop", 1, 300.0, 12.0, [9.0, 9.0, 9.0], 0),
    ]


def scale_runs() -> list[Run]:
    return [Run("tierfleet", 10, "first", 0, 160.0, 1.0, [10.0] * 10, 210),
            Run("tierfleet", 10, "noop", 0, 41.0, 0.5, [0.8] * 10, 0),
            Run("tierfleet", 10, "status", 0, 12.0, 0.2)]


def test_ratios_of_medians_and_cpu_per_host():
    summary = harness.summarise(comparison_runs())
    first, noop = summary["compare"]
    assert (first["kind"], first["tierfleet"]["median"], first["ansible"]["median"]) == ("first", 100.0, 800.0)
    assert first["ratio"] == pytest.approx(0.125) and first["met"]
    assert noop["ratio"] == pytest.approx(25.0 / 250.0) and noop["met"]
    assert (noop["tierfleet"]["min"], noop["tierfleet"]["max"]) == (20.0, 30.0)
    cpu = summary["cpu"][0]
    # every host of every no-op run counts once
    assert cpu["tierfleet"]["host_cpu_s"] == {"median": 0.75, "min": 0.7, "max": 1.0, "n": 6}
    assert cpu["tierfleet"]["controller_cpu_s"]["median"] == pytest.approx(1.1)
    assert cpu["met"] == {"host_cpu_s": True, "controller_cpu_s": False}


def test_a_missed_goal_is_reported():
    runs = [r for r in comparison_runs() if not (r.tool == "ansible" and r.kind == "noop")]
    runs.append(Run("ansible", 3, "noop", 0, 100.0, 10.0, [8.0] * 3, 0))
    noop = harness.summarise(runs)["compare"][1]
    assert noop["ratio"] == pytest.approx(0.25) and not noop["met"]


def test_runs_of_two_invocations_combine_into_one_scale_row(tmp_path):
    a = result(comparison_runs(), [3], [3], 2, load=5.0)
    b = result(scale_runs(), [], [10], 1, load=9.0)
    files = []
    for name, value in (("a.json", a), ("b.json", b)):
        files.append(tmp_path / name)
        files[-1].write_text(json.dumps(value))
    out = tmp_path / "out"
    assert harness.main(["--combine", *map(str, files), "--out", str(out)]) == 0

    combined = json.loads((out / "bench.json").read_text())
    assert [r["n"] for r in combined["summary"]["scale"]] == [3, 10]
    # tierfleet's CPU per host on 10 hosts, with no Ansible run to compare there
    cpu = combined["summary"]["cpu"]
    assert [r["n"] for r in cpu] == [3, 10] and "ansible" not in cpu[1]
    assert cpu[1]["tierfleet"]["controller_cpu_s"]["median"] == 0.5 and cpu[1]["met"]["controller_cpu_s"] is False
    slopes = combined["summary"]["slopes"]
    assert (slopes["from"], slopes["to"]) == (3, 10)
    assert slopes["noop"] == pytest.approx((41.0 - 25.0) / 7)
    assert slopes["status"] == pytest.approx((12.0 - 5.0) / 7)
    assert combined["config"]["reps"] == "1-2" and combined["state_check"] == a["state_check"]
    assert [s["load_before"][0] for s in combined["sources"]] == [5.0, 9.0]
    text = (out / "bench.txt").read_text()
    assert "run of sizes none, scale 10, 1 rep(s): load 9.0 before / 10.0 after" in text
    assert "per extra host from 3 to 10" in text and "same state on 3 host(s): yes" in text
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content, words", [
    ("{not json", "a.json"),
    ('{"runs": []}', "missing"),
    ("", "a.json"),
])
def test_combine_refuses_what_is_not_a_bench_result(tmp_path, capsys, content, words):
    bad = tmp_path / "a.json"
    bad.write_text(content)
    out = tmp_path / "out"
    assert harness.main(["--combine", str(bad), "--out", str(out)]) == 1
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_sizes_option():
    assert harness._sizes("3,10") == [3, 10]
    assert harness._sizes("none") == []
    for bad in ("", "0", "41", "x", "3;10"):
        with pytest.raises(Exception, match="host counts"):
            harness._sizes(bad)
