"""Fleet energy policies: validated for every platform before any host, rendered per host from its facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tierfleet_ops.policy import parse_policy

from tierfleet.exceptions import ConfigError
from tierfleet.fleet_policy import check_fleet_policy, for_platform, host_policy, read_fleet_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "inventory" / "policies" / "energy.yaml"


def test_the_example_policy_is_valid_for_every_platform():
    raw, digest = read_fleet_policy(EXAMPLE)
    assert set(check_fleet_policy(raw, str(EXAMPLE))) == {"jetson", "gpu", "cpu"} and len(digest) == 64


def test_platform_sections_merge_over_the_base():
    raw, _ = read_fleet_policy(EXAMPLE)
    jetson = for_platform(raw, "jetson")
    assert jetson["profiles"]["eco"]["jetson"]["nvpmodel"] == "eco"
    assert jetson["profiles"]["eco"]["cpufreq"]["max_freq_pct"] == 60  # the base is kept beside it
    assert "nvml" not in for_platform(raw, "jetson")["profiles"]["eco"] and "platforms" not in jetson
    assert "jetson" not in for_platform(raw, "cpu")["profiles"]["eco"]


def test_levels_become_the_hosts_own_modes_and_limits():
    raw, _ = read_fleet_policy(EXAMPLE)
    text, digest = host_policy(raw, "jetson", source="p: host nano", jetson_modes={
        "eco": "5W", "balanced": "MAXN", "performance": "MAXN"}, board_modes=["MAXN", "5W"], runtime_port=8081,
        reserve=1)
    doc = yaml.safe_load(text)
    assert [doc["profiles"][p]["jetson"]["nvpmodel"] for p in ("eco", "balanced", "performance")] == \
        ["5W", "MAXN", "MAXN"]
    assert doc["runtime"]["metrics_url"] == "http://127.0.0.1:8081/metrics" and doc["pinning"]["reserve_cores"] == 1
    assert digest == parse_policy(text).hash  # what the host's daemon will report
    text, _ = host_policy(raw, "gpu", source="p: host h200", gpu_power_w={"eco": 420, "balanced": 560},
                          gpu_range_w=(200, 700))
    assert yaml.safe_load(text)["profiles"]["eco"]["nvml"]["power_limit_w"] == 420


def test_a_mode_the_board_lacks_and_a_limit_the_gpu_refuses_are_refused_for_that_host():
    raw, _ = read_fleet_policy(EXAMPLE)
    raw["platforms"]["jetson"]["profiles"]["eco"]["jetson"]["nvpmodel"] = "5W"
    with pytest.raises(ConfigError, match=r"p: host orin: profiles.eco.jetson.nvpmodel: mode '5W' does not exist "
                                          r"on this board; its modes: 15W, 7W"):
        host_policy(raw, "jetson", source="p: host orin", jetson_modes={"eco": "7W", "balanced": "15W",
                                                                        "performance": "15W"},
                    board_modes=["15W", "7W"])
    raw["platforms"]["gpu"]["profiles"]["eco"]["nvml"]["power_limit_w"] = 150
    with pytest.raises(ConfigError, match=r"power_limit_w: 150 W is outside what this host's GPUs accept "
                                          r"\(200..700 W\)"):
        host_policy(raw, "gpu", source="p: host h200", gpu_power_w={"eco": 420, "balanced": 560},
                    gpu_range_w=(200, 700))
    raw["platforms"]["gpu"]["profiles"]["eco"]["nvml"]["power_limit_w"] = "eco"
    with pytest.raises(ConfigError, match="no limit for that level on this host"):
        host_policy(raw, "gpu", source="p: host x", gpu_power_w={})


@pytest.mark.parametrize(("content", "key", "problem"), [
    (b"\xff\xfe", "<file>", "not UTF-8 text"),
    (b"[" * 20000 + b"]" * 20000, "<document>", "nested too deeply"),
    (b"- a\n- b\n", "<document>", "must be a mapping"),
    (b"x" * (2 << 20), "<file>", "larger than"),
    (b"version: 1\nplatforms: {windows: {}}\n", "platforms.windows", "unknown platform; allowed: jetson, gpu, cpu"),
    (b"version: 1\nplatforms: [jetson]\n", "platforms", "must be a mapping"),
    (b"a: [unclosed\n", "<document>", "not valid YAML"),
])
def test_a_hostile_or_broken_file_is_refused_naming_file_and_key(tmp_path, content, key, problem):
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_fleet_policy(path)
    assert (info.value.source, info.value.key) == (str(path), key) and problem in info.value.problem


def test_a_bad_policy_is_refused_before_any_host(tmp_path):
    raw, _ = read_fleet_policy(EXAMPLE)
    raw["switching"]["down"]["performance"] = 90  # above its 'up': no hysteresis
    with pytest.raises(ConfigError, match=r"switching.down.performance: must be below switching.up.performance"):
        check_fleet_policy(raw, "p.yaml")
    raw, _ = read_fleet_policy(EXAMPLE)
    raw["platforms"]["gpu"]["profiles"]["eco"]["nvml"]["power_limt_w"] = 5  # a typo only GPU hosts see
    with pytest.raises(ConfigError, match=r"p.yaml \(for gpu\): profiles.eco.nvml"):
        check_fleet_policy(raw, "p.yaml")


def test_a_policy_that_finds_the_runtime_by_container_label_gets_no_unit():
    raw, _ = read_fleet_policy(EXAMPLE)
    raw = {**raw, "runtime": {"container_label": "tierfleet.runtime=llama-server"}}
    doc = yaml.safe_load(host_policy(raw, "cpu", source="p: host cpu")[0])
    assert doc["runtime"]["container_label"] == "tierfleet.runtime=llama-server" and "unit" not in doc["runtime"]
    doc = yaml.safe_load(host_policy({**raw, "runtime": {}}, "cpu", source="p: host cpu")[0])
    assert doc["runtime"]["unit"] == "llama-server.service"
