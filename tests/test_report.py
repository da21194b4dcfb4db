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
