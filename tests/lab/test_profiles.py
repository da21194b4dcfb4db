"""Profiles and the /proc, /sys dressing (pure; no lab needed)."""

from __future__ import annotations

import doctest

import pytest

from tierfleet.exceptions import ConfigError
from tierfleet.lab import dress, jetson, profiles, spec, status
from tierfleet.lab.dress import cpulist, dress_tree, topology
from tierfleet.lab.profiles import PROFILES, get_profile

#: the tier minima from the issue: GPU GB, physical cores, RAM GB (unified on Jetsons), disk GB
TIERS = {
    "basic": {"cores": 4, "ram_gb": 8, "unified_gb": 3.5, "disk_gb": 1.5},
    "advanced": {"cores": 8, "ram_gb": 16, "unified_gb": 5.5, "disk_gb": 3},
    "enterprise": {"cores": 16, "ram_gb": 32, "unified_gb": 9.5, "disk_gb": 6},
}


def fits(profile, tier: str) -> bool:
    t = TIERS[tier]
    mem_gb = profile.mem_total_kib * 1024 / 1e9
    need = t["unified_gb"] if profile.unified_memory else t["ram_gb"]
    disk_gb = profile.disk_gib * 1024 ** 3 / 1e9 * 0.95  # ext4 overhead
    return profile.physical_cores >= t["cores"] and mem_gb >= need * 0.95 and disk_gb >= t["disk_gb"]


@pytest.mark.parametrize("module", [dress, jetson, profiles, spec, status])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_issue_sizes():
    p = PROFILES
    assert (p["jetson-nano"].physical_cores, round(p["jetson-nano"].mem_total_kib / 2 ** 20, 1)) == (4, 3.9)
    assert (p["jetson-orin-nano"].physical_cores, round(p["jetson-orin-nano"].mem_total_kib / 2 ** 20, 1)) == (6, 7.4)
    assert (p["cpu-server"].physical_cores, p["cpu-server"].logical_cpus) == (16, 32)
    assert (p["gpu-node-t4"].physical_cores, p["gpu-node-t4"].logical_cpus) == (8, 16)
    assert p["gpu-node-a100"].physical_cores == 32
    assert p["gpu-node-h200"].logical_cpus == 16 and p["gpu-node-h200"].gpus[0].memory_mib == 143771
    assert (p["cpu-small"].physical_cores, round(p["cpu-small"].mem_total_kib / 2 ** 20)) == (2, 4)


def test_tiers_and_preflight_failures():
    expected = {"jetson-orin-nano": "basic", "jetson-nano": "basic", "cpu-server": "advanced",
                "gpu-node-t4": "advanced", "gpu-node-a100": "enterprise", "gpu-node-h200": "enterprise",
                "cpu-small": "basic"}
    assert {n: p.tier for n, p in PROFILES.items()} == expected
    # every tier has a profile that fails it
    assert not fits(PROFILES["cpu-small"], "basic")
    assert not fits(PROFILES["jetson-nano"], "advanced")
    assert not fits(PROFILES["gpu-node-t4"], "enterprise")
    # and the intended ones fit their own tier
    for name in ("jetson-orin-nano", "jetson-nano", "cpu-server", "gpu-node-a100", "gpu-node-h200"):
        assert fits(PROFILES[name], PROFILES[name].tier), name


def test_unknown_profile_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        get_profile("jetson-xavier", "spec.txt")
    assert "spec.txt: profile:" in str(err.value) and "jetson-nano" in str(err.value)


def test_topology_smt_siblings_and_numa():
    cpus = topology(PROFILES["gpu-node-a100"])
    assert len(cpus) == 64
    assert cpus[0].siblings == (0, 32) and cpus[32].siblings == (0, 32)
    assert {c.package for c in cpus if c.node == 1} == {1}
    tree = dress_tree(PROFILES["gpu-node-a100"])
    assert tree["sys/devices/system/node/node1/cpulist"] == "16-31,48-63\n"
    assert tree["sys/devices/system/cpu/cpu17/topology/core_cpus_list"] == "17,49\n"
    assert tree["sys/devices/system/cpu/cpu17/topology/physical_package_id"] == "1\n"


def test_cpufreq_flavours():
    server = dress_tree(PROFILES["cpu-server"])
    pol = "sys/devices/system/cpu/cpufreq/policy5"
    assert server[f"{pol}/scaling_driver"] == "intel_pstate\n"
    assert server[f"{pol}/energy_performance_preference"] == "balance_performance\n"
    assert "power" in server[f"{pol}/energy_performance_available_preferences"].split()
    assert server["sys/devices/system/cpu/intel_pstate/status"] == "active\n"
    assert server["sys/devices/system/cpu/cpu5/cpufreq"].target == "../cpufreq/policy5"
    t4 = dress_tree(PROFILES["gpu-node-t4"])
    assert t4["sys/devices/system/cpu/cpufreq/policy0/scaling_driver"] == "acpi-cpufreq\n"
    h200 = dress_tree(PROFILES["gpu-node-h200"])
    assert not any(k.startswith("sys/devices/system/cpu/cpufreq/policy") for k in h200)
    orin = dress_tree(PROFILES["jetson-orin-nano"])
    assert orin["sys/devices/system/cpu/cpufreq/policy4/related_cpus"] == "4 5\n"
    assert orin["sys/devices/system/cpu/cpu5/cpufreq"].target == "../cpufreq/policy4"


def test_cpuinfo_formats():
    nano = dress.cpuinfo(PROFILES["jetson-nano"])
    assert nano.count("processor\t:") == 4 and "Features\t: fp asimd" in nano and "CPU part\t: 0xd07" in nano
    server = dress.cpuinfo(PROFILES["cpu-server"])
    assert server.count("processor\t:") == 32
    assert "cpu cores\t: 16" in server and "siblings\t: 32" in server and " avx512f " in server
    h200 = dress.cpuinfo(PROFILES["gpu-node-h200"])
    assert " amx_tile " in h200 and "hypervisor" in h200


def test_meminfo_memtotal_first():
    text = dress.meminfo(PROFILES["jetson-orin-nano"])
    assert text.splitlines()[0].split() == ["MemTotal:", "7759460", "kB"]
    assert "MemAvailable:" in text


def test_jetson_identity_files():
    nano = dress_tree(PROFILES["jetson-nano"])
    assert nano["sys/firmware/devicetree/base/model"] == "NVIDIA Jetson Nano Developer Kit\0"
    orin = dress_tree(PROFILES["jetson-orin-nano"])
    assert orin["sys/firmware/devicetree/base/compatible"].split("\0")[-2] == "nvidia,tegra234"
    assert orin["sys/class/devfreq/17000000.ga10b/device/of_node/name"] == "ga10b\0"
    assert orin["sys/class/hwmon/hwmon1/in1_label"] == "VDD_IN\n"
    rel = jetson.nv_tegra_release(PROFILES["jetson-nano"].jetson)
    assert rel.startswith("# R32 (release), REVISION: 7.6, GCID: ")


def test_binds_per_kind():
    dests = {n: [b.dest for b in dress.binds(p)] for n, p in PROFILES.items()}
    assert "/sys/firmware" in dests["jetson-nano"] and "/proc/driver" not in dests["jetson-nano"]
    assert "/proc/driver" in dests["gpu-node-t4"] and "/sys/firmware" not in dests["gpu-node-t4"]
    assert "/sys/class" in dests["cpu-server"]  # RAPL
    assert "/sys/class" not in dests["gpu-node-h200"]  # a VM: no RAPL, no cpufreq


def test_write_tree_links_real_classes_but_not_net(tmp_path):
    fake_class = tmp_path / "realclass"
    (fake_class / "net").mkdir(parents=True)
    (fake_class / "net" / "eth0").symlink_to("../../devices/virtual/net/eth0")
    (fake_class / "tty").mkdir()
    (fake_class / "tty" / "tty0").symlink_to("../../devices/virtual/tty/tty0")
    dress.write_tree(tmp_path / "out", dress_tree(PROFILES["cpu-server"]), real_sys_class=fake_class)
    out = tmp_path / "out" / "sys/class"
    assert (out / "powercap/intel-rapl:0/energy_uj").read_text().strip().isdigit()
    assert (out / "tty/tty0").is_symlink() and not (out / "net").exists()


def test_cpulist_roundtrip():
    assert cpulist([5, 1, 2, 3, 7]) == "1-3,5,7"


def test_fleet_specs():
    assert spec.parse_hosts("x:cpu-small") == [("x", "cpu-small")]
    with pytest.raises(ConfigError, match="expected name:profile"):
        spec.parse_hosts("x")
    with pytest.raises(ConfigError, match="given twice"):
        spec.parse_hosts("x:cpu-small,x:cpu-server")
    with pytest.raises(ConfigError, match="host names"):
        spec.parse_hosts("X;rm -rf:cpu-small")
    assert [n for n, _ in spec.cycle_spec(9)][-1] == "lab-09"
    assert spec.cycle_spec(8)[7][1] == spec.cycle_spec(1)[0][1]


def test_addresses_stay_on_loopback(monkeypatch):
    monkeypatch.setenv("TIERFLEET_LAB_ADDR_BASE", "127.0.0.100")
    assert spec.addresses(2) == ["127.0.0.101", "127.0.0.102"]
    monkeypatch.setenv("TIERFLEET_LAB_ADDR_BASE", "10.0.0.1")
    with pytest.raises(ConfigError, match="TIERFLEET_LAB_ADDR_BASE"):
        spec.addresses(1)


@pytest.mark.parametrize(("base", "expected"), [(None, "127.0.0.200"), ("127.0.5.10", "127.0.5.200"),
                                                ("10.0.0.1", "127.0.0.200"), ("junk", "127.0.0.200")])
def test_block_address_keeps_to_the_checkouts_block(monkeypatch, base, expected):
    if base is None:
        monkeypatch.delenv("TIERFLEET_LAB_ADDR_BASE", raising=False)
    else:
        monkeypatch.setenv("TIERFLEET_LAB_ADDR_BASE", base)
    assert spec.block_address(200) == expected
