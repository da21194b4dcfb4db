"""Jetson backend against stand-in nvpmodel/jetson_clocks processes and an Orin-shaped sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.backends.jetson import (JetsonBackend, parse_nvpmodel_conf,
                                           parse_nvpmodel_modes, read_rails)
from tierfleet_ops.runner import Runner
from tierfleet_ops.settings import validate_section
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import Sysfs
from tierfleet_ops.topology import choose_cores, read_topology

from . import machines

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture
def orin(tmp_path, data_dir, monkeypatch):
    root = machines.jetson_agx_orin(tmp_path / "host" / "sys")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("NVPM_CONF", str(data_dir / "orin_agx_nvpmodel.conf"))
    monkeypatch.setenv("NVPM_STATE", str(tmp_path / "nvpm.state"))
    monkeypatch.setenv("NVPM_SYSROOT", str(root))
    monkeypatch.setenv("NVPM_LOG", str(log))
    ctx = HostContext(sysfs=Sysfs(root), runner=Runner(path=str(STANDINS)), state_dir=str(tmp_path / "state"))
    be = JetsonBackend.detect(ctx)
    assert be is not None
    return be, root, log, ctx


def settings(**kw):
    return validate_section(kw, JetsonBackend.SETTINGS, "t.yaml", "profiles.x.jetson")


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


def test_detect_reads_model_and_finds_gpu_devfreq(orin):
    be, root, log, _ = orin
    assert be.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert be.gpu == "17000000.ga10b"
    assert be.modes() == {"MAXN": 0, "15W": 1, "30W": 2}


def test_not_a_jetson(tmp_path):
    ctx = HostContext(sysfs=Sysfs(machines.xeon_smt(tmp_path / "sys")), runner=Runner(path=str(tmp_path)))
    assert JetsonBackend.detect(ctx) is None


def test_mode_switch_by_name_in_the_safe_order(orin):
    be, root, log, _ = orin
    ap = Applier(StateStore(None))
    out = ap.apply(be.plan(settings(jetson_clocks=True))[0])
    assert [o.status for o in out] == ["changed"]
    assert (root / "class/devfreq/17000000.ga10b/min_freq").read_text().strip() == "1300500000"
    log.write_text("")
    out = ap.apply(be.plan(settings(nvpmodel="MAXN", jetson_clocks=True))[0])
    assert [(o.name, o.want, o.status) for o in out] == [
        ("jetson.jetson_clocks", "off", "changed"), ("jetson.nvpmodel", "MAXN", "changed"),
        ("jetson.jetson_clocks", "on", "changed")]
    cl = calls(log)
    off, mode, on = cl.index(next(c for c in cl if c.startswith("jetson_clocks --restore"))), \
        cl.index("nvpmodel -m 0"), len(cl) - 1 - cl[::-1].index("jetson_clocks")
    assert off < mode < on
    assert ap.state.originals["jetson.nvpmodel"] == "30W"
    # the second run changes nothing
    assert {o.status for o in ap.apply(be.plan(settings(nvpmodel="MAXN", jetson_clocks=True))[0])} == {"unchanged"}


def test_store_happens_once_before_the_first_change_and_restore_on_stop(orin):
    be, root, log, _ = orin
    ap = Applier(StateStore(None))
    ap.apply(be.plan(settings(jetson_clocks=True))[0])
    ap.apply(be.plan(settings(jetson_clocks=False))[0])
    ap.apply(be.plan(settings(jetson_clocks=True))[0])
    cl = calls(log)
    assert sum(c.startswith("jetson_clocks --store") for c in cl) == 1
    assert cl[0].startswith("jetson_clocks --store")
    out = ap.restore(be.knobs())
    assert [o.status for o in out] == ["changed"]
    assert calls(log)[-1].startswith("jetson_clocks --restore")
    assert (root / "class/devfreq/17000000.ga10b/min_freq").read_text().strip() == "306000000"


def test_unknown_mode_is_skipped_with_the_board_names(orin):
    be, *_ = orin
    changes, skipped = be.plan(settings(nvpmodel="MAXN_SUPER"))
    assert changes == []
    assert skipped[0].reason == "no mode 'MAXN_SUPER'; have ['15W', '30W', 'MAXN']"


def test_mode_change_takes_cpus_offline_and_pinning_is_recomputed(orin):
    be, root, log, ctx = orin
    before = choose_cores(read_topology(ctx.sysfs))
    assert before.inference == list(range(2, 12))
    Applier(StateStore(None)).apply(be.plan(settings(nvpmodel="15W"))[0])
    assert (root / "devices/system/cpu/online").read_text().strip() == "0-3"
    after = choose_cores(read_topology(ctx.sysfs))
    assert (after.reserved, after.inference) == ([0, 1], [2, 3])


def test_gpu_devfreq_min_max_through_the_allowlisted_class_path(orin):
    be, root, log, _ = orin
    out = Applier(StateStore(None)).apply(be.plan(settings(gpu_max_freq_pct=50, gpu_min_freq_pct=0))[0])
    assert {o.name: o.after for o in out} == {"jetson.gpu.min_freq": "306000000", "jetson.gpu.max_freq": "816000000"}
    # raising min above the current max writes max first
    out = Applier(StateStore(None)).apply(be.plan(settings(gpu_min_freq_pct=100, gpu_max_freq_pct=100))[0])
    assert [o.name for o in out] == ["jetson.gpu.max_freq", "jetson.gpu.min_freq"]


def test_rails_and_gpu_load(orin, tmp_path):
    be, root, *_ = orin
    r = be.readings()
    assert r["rail_VDD_GPU_SOC_w"] == pytest.approx(5.008 * 1.196)
    assert r["gpu_util_pct"] == 41.2
    assert "board_power_w" not in r  # AGX Orin has no VDD_IN rail
    nano = machines.jetson_nano_jp4_rails(tmp_path / "nano")
    assert read_rails(Sysfs(nano)) == {"POM_5V_IN": 3.964, "POM_5V_GPU": 1.204, "POM_5V_CPU": 0.803}


def test_missing_tools_make_knobs_unavailable(tmp_path):
    root = machines.jetson_agx_orin(tmp_path / "host" / "sys")
    ctx = HostContext(sysfs=Sysfs(root), runner=Runner(path=str(tmp_path / "empty")))
    be = JetsonBackend.detect(ctx)
    knobs = be.knobs()
    assert knobs["jetson.nvpmodel"].read() is None and knobs["jetson.jetson_clocks"].read() is None
    changes, skipped = be.plan(settings(nvpmodel="MAXN", jetson_clocks=True))
    assert changes == [] and {s.name for s in skipped} == {"jetson.nvpmodel", "jetson.jetson_clocks"}


def test_parsers_on_recorded_formats(data_dir):
    conf = parse_nvpmodel_conf((data_dir / "orin_agx_nvpmodel.conf").read_text())
    assert conf[1]["name"] == "15W" and conf[1]["cpu_offline"] == list(range(4, 12))
    assert parse_nvpmodel_modes("NVPM VERB: POWER_MODEL: ID=2 NAME=MAXN_SUPER\n") == {"MAXN_SUPER": 2}


def test_daemon_recomputes_placement_after_a_mode_switch(orin, tmp_path):
    from tierfleet_ops.daemon import Daemon, DaemonConfig

    be, root, log, ctx = orin
    pol = tmp_path / "p.yaml"
    pol.write_text("profiles:\n  eco: {jetson: {nvpmodel: '15W'}}\n  performance: {jetson: {nvpmodel: MAXN}}\n"
                   "default_profile: performance\npinning: {enabled: false}\n")
    d = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "s.json"), socket_path=None,
                            metrics_port=None, ctx=ctx, backends=["jetson"], allowed_cpus=set(range(12))))
    d.start()
    try:
        assert d.placement.inference == list(range(2, 12))
        d.hold("eco")
        assert (root / "devices/system/cpu/online").read_text().strip() == "0-3"
        assert d.placement.inference == [2, 3]
    finally:
        out = d.stop()
    assert [(o.name, o.after) for o in out] == [("jetson.nvpmodel", "30W")]
    assert (root / "devices/system/cpu/online").read_text().strip() == "0-7"


def test_a_switch_that_wants_a_reboot_is_declined_and_reported(orin, monkeypatch):
    be, root, log, _ = orin
    monkeypatch.setenv("NVPM_REBOOT_MODES", "0")
    out = Applier(StateStore(None)).apply(be.plan(settings(nvpmodel="MAXN"))[0])
    assert [(o.name, o.before, o.after, o.status) for o in out] == [("jetson.nvpmodel", "30W", "30W", "failed")]
    assert "mode MAXN needs a reboot; declined" in out[0].note
    assert "nvpmodel -m 0" in calls(log)
