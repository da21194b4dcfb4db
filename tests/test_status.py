"""Fleet status: the per-host script run for real on this machine (sh), and its pure parser on hostile output."""

from __future__ import annotations

import json
import subprocess

from tierfleet.catalog import load_catalog
from tierfleet.settings import HostSettings
from tierfleet.status import MARK, parse_status, split_parts, status_parts, status_script


def test_the_script_runs_here_and_parses_into_a_status(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    settings = HostSettings(model_dir=str(tmp_path / "models"), runtime_port=max(free, 1024))
    out = subprocess.run(["sh", "-c", status_script(status_parts(settings))], capture_output=True, text=True,
                         timeout=60)
    st = parse_status("here", out.stdout, settings, load_catalog())
    assert st.reachable and st.platform == "cpu"
    assert st.runtime_health == "down" and not st.healthy  # nothing listens there
    assert st.model_release is None and st.runtime_release is None
    assert "ops daemon: no ops daemon" in st.notes


def test_every_part_is_found_by_its_marker():
    settings = HostSettings()
    parts = status_parts(settings)
    script = status_script({key: f"echo {key}-out" for key in parts})
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert split_parts(out) == {key: [f"{key}-out"] for key in parts}


def _output(**parts):
    return "".join(f"\n{MARK} {k}\n" + "\n".join(v) + "\n" for k, v in parts.items())


def test_daemon_readings_and_rollout_record_are_read():
    daemon = {"profile": "eco", "policy": {"hash": "abc123def456", "error": None},
              "readings": {"gpu_power_w": 79.5, "cpu_package_power_w": 20.0, "rail_VDD_IN_w": 5.0,
                           "gpu_energy_j": 3600.0, "gpu_util_pct": 3.0},
              "shards": [{"name": "m", "state": "loaded"}, "junk"]}
    out = _output(health=["ok"], daemon=[json.dumps(daemon)],
                  rollout=[json.dumps({"kind": "upgrade", "result": "ok", "finished": "2026-11-29T12:00:00"})])
    st = parse_status("h", out, HostSettings(), load_catalog())
    assert (st.runtime_health, st.profile, st.policy) == ("ok", "eco", "abc123def456")
    assert st.power_w == 99.5 and st.energy_j == 3600.0  # rails are parts of the board total, not added
    assert st.shards == [{"name": "m", "state": "loaded"}]
    assert st.last_rollout["result"] == "ok"


def test_hostile_output_never_raises():
    nested = "[" * 100000 + "]" * 100000
    for junk in ([""], [nested], ["\x00\xff"], ['{"profile": 5, "policy": "x", "readings": {"a_power_w": "9"}}'],
                 ["²²"], ["null"]):
        out = _output(health=junk, daemon=junk, rollout=junk, model_releases=junk, topology=junk, meminfo=junk)
        st = parse_status("h", out, HostSettings(), load_catalog())
        assert st.reachable and st.runtime_health in ("unknown", "ok", "down")
        assert st.power_w is None and st.profile is None
    truncated = _output(daemon=['{"profile": "eco", "policy": {"ha'])
    assert parse_status("h", truncated, HostSettings(), load_catalog()).profile is None
