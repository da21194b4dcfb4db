"""The energy report: records replayed from a real H200 power trace, summed per profile, drawn and looked at."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tierfleet.report import HostSeries, parse_records, render_html, render_png, summarise

TRACE = Path(__file__).parent / "ops" / "data" / "h200_nvml_probe.json"


def h200_records() -> list[str]:
    """The ops daemon's records for the recorded H200 run: eco while idle, performance once it is loaded."""
    lines, t0, last = [], 1_800_000_000.0, None
    for point in json.loads(TRACE.read_text())["trace"]:
        profile = "performance" if point.get("util", 0) > 0 or last == "performance" else "eco"
        if profile != last:
            lines.append(json.dumps({"t": t0 + point["t"], "event": "switch", "from": last, "to": profile,
                                     "reason": "load"}))
            last = profile
        lines.append(json.dumps({"t": t0 + point["t"], "profile": profile, "power_w": {"gpu": point["p_mW"] / 1000},
                                 "energy_j": {"gpu": point["e_mJ"] / 1000}, "load_pct": point.get("util")}))
    return lines


def test_energy_per_profile_comes_from_the_counters():
    series = parse_records("h200", h200_records())
    totals = summarise(series)
    assert set(totals) == {"eco", "performance"}
    probe = json.loads(TRACE.read_text())["trace"]
    counted = (probe[-1]["e_mJ"] - probe[0]["e_mJ"]) / 1000
    assert sum(t.energy_j for t in totals.values()) == pytest.approx(counted, rel=1e-6)
    assert totals["performance"].mean_power_w > totals["eco"].mean_power_w
    assert [s.to_profile for s in series.switches] == ["eco", "performance"]


def test_power_is_integrated_where_there_is_no_counter_and_gaps_are_left_out():
    lines = [json.dumps({"t": t, "profile": "eco", "power_w": {"cpu": 10.0}}) for t in (0, 10, 20)]
    lines.append(json.dumps({"t": 1000, "profile": "eco", "power_w": {"cpu": 10.0}}))  # the daemon was down
    totals = summarise(parse_records("h", lines))
    assert totals["eco"].seconds == 20 and totals["eco"].energy_j == 200 and totals["eco"].mean_power_w == 10


def test_hostile_lines_are_skipped():
    lines = ["", "not json", "[" * 100000, json.dumps({"t": "x", "profile": "eco"}), '{"t": NaN, "profile": "eco"}',
             json.dumps({"t": 1, "profile": 5}), json.dumps({"t": 2, "event": "switch"}),
             '{"t": 3, "profile": "eco", "power_w": {"a": "9", "b": true, "c": 2, "d": Infinity}}']
    series = parse_records("h", lines)
    assert [(s.t, s.power_w) for s in series.samples] == [(3.0, 2.0)] and series.switches == []


def test_the_report_renders(tmp_path):
    from PIL import Image

    series = [parse_records("gpu-node-h200", h200_records()), HostSeries("jetson-nano", error="no answer within 20s")]
    png = render_png(series)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size[0] > 800 and image.size[1] > 400
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # lines, bands and bars were drawn, not a blank page
    page = render_html(series)
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "gpu-node-h200" in page and "no answer within 20s" in page and "<script" not in page
    (tmp_path / "report.png").write_bytes(png)


def test_the_report_reads_what_the_daemon_writes(tmp_path):
    """Round trip: the ops daemon (in-process, on a recorded cpufreq tree, the replayed H200 and a real HTTP queue
    signal) ticks through idle, loaded and idle again; its energy.jsonl is what parse_records and summarise see."""
    from tierfleet_ops.backends.base import HostContext
    from tierfleet_ops.daemon import Daemon, DaemonConfig
    from tierfleet_ops.testing.fakenvml import FakeNvml

    from tests.ops import machines
    from tests.ops.llama_standin import LlamaStandin
    from tests.ops.machines import KernelSysfs
    from tests.ops.test_daemon import POLICY, Clock

    clock = Clock()
    with LlamaStandin() as llama:
        root = machines.acpi_cpufreq(tmp_path / "sys", 2)
        pol = tmp_path / "policy.yaml"
        pol.write_text(POLICY.format(metrics=llama.url("/metrics"), slots=llama.url("/slots"))
                       + "records: {interval_s: 5}\n")
        fake = FakeNvml(TRACE, clock=clock)
        ctx = HostContext(sysfs=KernelSysfs(root), nvml_loader=lambda: fake, state_dir=str(tmp_path / "state"))
        d = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "state/state.json"),
                                socket_path=None, metrics_port=None, ctx=ctx))
        d.recorder.clock = lambda: 1_800_000_000.0 + clock.t  # the records' wall clock runs with the ticks
        d.start()
        switched = {}
        try:
            for t in range(0, 121):
                llama.processing = 4 if 30 <= t < 70 else 0
                clock.t = float(t)
                before = d.selector.current
                d.tick(float(t))
                if d.selector.current != before:
                    switched[t] = d.selector.current
        finally:
            d.stop()
    path = tmp_path / "state" / "energy.jsonl"
    series = parse_records("cpu-h200", path.read_text().splitlines())
    assert [(s.from_profile, s.to_profile) for s in series.switches] == [(None, "eco"), ("eco", "performance"),
                                                                         ("performance", "eco")]
    assert [s.t - 1_800_000_000.0 for s in series.switches[1:]] == list(switched)
    # a sample opens each profile's time at the switch, and one more closes the run at stop
    assert series.samples[0].t == 1_800_000_000.0 and series.samples[-1].t == 1_800_000_120.0
    totals = summarise(series)
    (t_up, _), (t_down, _) = switched.items()
    assert totals["performance"].seconds == t_down - t_up
    assert totals["eco"].seconds == 120 - (t_down - t_up)
    # energy: the deltas of the counters the daemon recorded (NVML total energy and RAPL), never less than zero
    first, last = (json.loads(x) for x in (path.read_text().splitlines()[1], path.read_text().splitlines()[-1]))
    counted = sum(last["energy_j"].values()) - sum(first["energy_j"].values())
    assert sum(t.energy_j for t in totals.values()) == pytest.approx(counted) and counted > 0
    assert totals["performance"].mean_power_w > 0 and all(s.load_pct is not None for s in series.samples[1:-1])
