"""Core choice on recorded topologies and on this host's own (real) topology and affinity."""

from __future__ import annotations

import os
import shutil

import pytest

from tierfleet_ops.sysfs import Sysfs, format_cpulist
from tierfleet_ops.topology import choose_cores, read_topology

from . import machines


def place(builder, tmp_path, **kw):
    return choose_cores(read_topology(Sysfs(builder(tmp_path))), **kw).as_dict()


def test_smt_reserves_both_siblings_of_the_two_lowest_cores(tmp_path):
    p = place(machines.xeon_smt, tmp_path)
    assert p["reserved"] == "0-1,8-9"
    assert p["inference"] == "2-7,10-15"
    assert p["warnings"] == []


def test_h200_host_xeon16_reserves_cpus_0_1(tmp_path):
    p = place(machines.xeon16_h200_host, tmp_path)
    assert (p["reserved"], p["inference"]) == ("0-1", "2-15")


def test_orin_three_clusters(tmp_path):
    p = place(machines.orin_agx, tmp_path)
    assert (p["reserved"], p["inference"]) == ("0-1", "2-11")


def test_orin_after_mode_switch_took_cpus_offline(tmp_path):
    # Orin 15 W mode: cores 4-11 offline
    topo = read_topology(Sysfs(machines.orin_agx(tmp_path, online=[0, 1, 2, 3])))
    p = choose_cores(topo).as_dict()
    assert (p["reserved"], p["inference"]) == ("0-1", "2-3")


def test_big_little_gives_the_os_little_cores_and_inference_only_big_ones(tmp_path):
    p = place(machines.big_little, tmp_path)
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == ("0-1", "4-7", "0-3", 4)


def test_little_cores_are_found_by_capacity_not_by_number(tmp_path):
    # big cores 0-3, LITTLE 4-7: the OS gets LITTLE cores although they are the high-numbered ones
    p = place(machines.big_first_little_last, tmp_path)
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == ("4-5", "0-3", "4-7", 4)


def test_three_clusters_keep_the_class_with_the_most_speed_in_step(tmp_path):
    # 1 x 1024 < 4 x 825 (X2 + A710s) > 8 x 325: the A510s go to the OS side
    p = place(machines.tri_cluster, tmp_path)
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == ("0-1", "4-7", "0-3", 4)


def test_intel_hybrid_gives_the_os_e_cores_and_inference_only_p_cores(tmp_path):
    p = place(machines.intel_hybrid, tmp_path)
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == ("16-17", "0-15", "16-19", 8)


def test_intel_hybrid_6p8e_threads_are_the_fast_physical_cores(tmp_path):
    topo = read_topology(Sysfs(machines.intel_hybrid_6p8e(tmp_path)))
    assert [c for c in topo.online if topo.cpus[c].efficiency] == list(range(12, 20))
    p = choose_cores(topo).as_dict()
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == ("12-13", "0-11", "12-19", 6)


def test_low_power_e_cores_outside_cpu_core_are_slow_too(tmp_path):
    # a CPU in neither hybrid list while cpu_core lists the P-cores (an LP E-core with its own PMU)
    root = machines.intel_hybrid_6p8e(tmp_path)
    (root / "devices/cpu_atom/cpus").write_text("12-17\n")
    topo = read_topology(Sysfs(root))
    assert [c for c in topo.online if topo.cpus[c].efficiency] == list(range(12, 20))
    (root / "devices/cpu_atom/cpus").unlink()
    (root / "devices/cpu_core/cpus").unlink()
    topo = read_topology(Sysfs(root))
    assert not any(cpu.efficiency for cpu in topo.cpus.values())


def test_e_cores_are_found_from_cpu_atom_alone(tmp_path):
    # a kernel (or container view) with the cpu_atom PMU's list but no cpu_core list: cpu_atom alone names them
    root = machines.intel_hybrid_6p8e(tmp_path)
    (root / "devices/cpu_core/cpus").unlink()
    topo = read_topology(Sysfs(root))
    assert [c for c in topo.online if topo.cpus[c].efficiency] == list(range(12, 20))
    p = choose_cores(topo).as_dict()
    assert (p["reserved"], p["inference"], p["threads"]) == ("12-13", "0-11", 6)


def test_only_e_cores_allowed_still_serves(tmp_path):
    topo = read_topology(Sysfs(machines.intel_hybrid_6p8e(tmp_path)))
    p = choose_cores(topo, allowed=set(range(12, 20))).as_dict()
    assert (p["reserved"], p["inference"], p["threads"]) == ("12-13", "14-19", 6)


def test_two_socket_numa_reserves_in_node0_and_keeps_inference_in_one_node(tmp_path):
    p = place(machines.numa_2s, tmp_path)
    assert p["reserved"] == "0-1,16-17"
    assert p["inference"] == "8-15,24-31"  # node 1 has more CPUs left than node 0
    assert p["os"] == "0-7,16-23"
    assert "inference kept inside node 1" in p["warnings"][0]
    p_all = place(machines.numa_2s, tmp_path, numa="all")
    assert p_all["inference"] == "2-15,18-31"


@pytest.mark.parametrize("cores, reserved, inference, os_side, threads, warn", [
    ([(0,), (1,), (2,)], "0", "1-2", "0", 2, "only 3 physical core(s): reserving 1"),
    ([(0, 1)], "0", "1", "0", 1, "single core: the OS gets one SMT sibling"),
    ([(0,)], "", "0", "0", 1, "a single CPU: nothing reserved"),
])
def test_too_few_cores_degrade_with_a_warning(tmp_path, cores, reserved, inference, os_side, threads, warn):
    p = choose_cores(read_topology(Sysfs(machines.topology(tmp_path, cores)))).as_dict()
    assert (p["reserved"], p["inference"], p["os"], p["threads"]) == (reserved, inference, os_side, threads)
    assert any(w.startswith(warn) for w in p["warnings"]), p["warnings"]


@pytest.mark.parametrize("reserve, reserved, inference, threads", [
    (0, "", "0-15", 8),
    (1, "0,8", "1-7,9-15", 7),
    (2, "0-1,8-9", "2-7,10-15", 6),
])
def test_reserve_counts_whole_cores_and_zero_reserves_nothing(tmp_path, reserve, reserved, inference, threads):
    p = choose_cores(read_topology(Sysfs(machines.xeon_smt(tmp_path))), reserve=reserve).as_dict()
    assert (p["reserved"], p["inference"], p["threads"], p["warnings"]) == (reserved, inference, threads, [])


def test_one_allowed_cpu_is_shared_by_the_os_and_inference(tmp_path):
    p = choose_cores(read_topology(Sysfs(machines.xeon16_h200_host(tmp_path))), allowed={5})
    assert (p.reserved, p.inference, p.os_side, p.threads) == ([], [5], [5], 1)
    assert p.warnings[-1].startswith("a single CPU: nothing reserved")


def test_no_usable_cpu_gives_nothing(tmp_path):
    p = choose_cores(read_topology(Sysfs(machines.xeon16_h200_host(tmp_path))), allowed={99})
    assert (p.reserved, p.inference, p.os_side, p.threads) == ([], [], [], 0)
    assert p.warnings[-1] == "no usable CPUs"


# --- reading older and partial sysfs trees ----------------------------------------------------

def test_siblings_come_from_thread_siblings_list_on_older_kernels(tmp_path):
    topo = read_topology(Sysfs(machines.old_kernel_smt(tmp_path)))
    assert topo.cores() == [(i, i + 8) for i in range(8)]
    assert choose_cores(topo).as_dict()["reserved"] == "0-1,8-9"


def test_jetson_nano_kernel_49_in_its_5w_mode(tmp_path):
    topo = read_topology(Sysfs(machines.jetson_nano_49(tmp_path, online=[0, 1])))
    assert sorted(topo.cpus) == [0, 1, 2, 3] and topo.online == [0, 1]
    assert topo.cores() == [(0,), (1,)] and {c.capacity for c in topo.cpus.values()} == {1024}
    p = choose_cores(topo)
    assert (p.reserved, p.inference, p.threads) == ([0], [1], 1)


def test_missing_online_means_every_present_cpu(tmp_path):
    topo = read_topology(Sysfs(machines.topology(tmp_path, [(i,) for i in range(4)], omit=("online",))))
    assert topo.online == [0, 1, 2, 3]


def test_missing_present_falls_back_to_possible_then_to_cpu0(tmp_path):
    root = machines.topology(tmp_path / "a", [(i,) for i in range(4)], online=[0, 1], omit=("present",))
    topo = read_topology(Sysfs(root))
    assert sorted(topo.cpus) == [0, 1, 2, 3] and topo.online == [0, 1]
    root = machines.topology(tmp_path / "b", [(i,) for i in range(4)], omit=("present", "possible", "online"))
    topo = read_topology(Sysfs(root))
    assert sorted(topo.cpus) == [0] and topo.online == [0]


def test_packages_nodes_and_their_fallbacks(tmp_path):
    topo = read_topology(Sysfs(machines.numa_2s(tmp_path / "a")))
    assert [(topo.cpus[c].package, topo.cpus[c].node) for c in (0, 8, 16, 31)] == [(0, 0), (1, 1), (0, 0), (1, 1)]
    root = machines.topology(tmp_path / "b", [(i,) for i in range(4)], packages={2: 1},
                             omit=("physical_package_id",))
    shutil.rmtree(root / "devices/system/node")
    topo = read_topology(Sysfs(root))
    assert {(cpu.package, cpu.node) for cpu in topo.cpus.values()} == {(0, 0)}
    # older arm64 kernels report -1 (unknown): one package
    root = machines.topology(tmp_path / "c", [(i,) for i in range(4)], packages={i: -1 for i in range(4)})
    assert {cpu.package for cpu in read_topology(Sysfs(root)).cpus.values()} == {0}


@pytest.mark.parametrize("stray", ["nodeX", "node", "node1a", "zone1"])
def test_only_node_directories_name_numa_nodes(tmp_path, stray):
    # entries beside node<N> (has_cpu, online, possible, power, ...) are not nodes, even holding a cpulist;
    # listed after node0 and node1, so a stray one read as a node would overwrite their CPUs
    root = machines.numa_2s(tmp_path)
    (root / "devices/system/node" / stray).mkdir()
    (root / "devices/system/node" / stray / "cpulist").write_text("0-31\n")
    topo = read_topology(Sysfs(root))
    assert [topo.cpus[c].node for c in (0, 8, 16, 24, 31)] == [0, 1, 0, 1, 1]


def test_numa_tie_keeps_inference_in_the_lower_node(tmp_path):
    p = choose_cores(read_topology(Sysfs(machines.numa_2s(tmp_path))), reserve=0)
    assert format_cpulist(p.inference) == "0-7,16-23" and p.threads == 8


def test_equal_speed_in_step_prefers_the_fewer_faster_cores(tmp_path):
    # 2 x 1024 == 4 x 512: the two big cores alone, so no thread waits on a slow one
    root = machines.topology(tmp_path, [(i,) for i in range(4)], capacity={0: 512, 1: 512, 2: 1024, 3: 1024})
    p = choose_cores(read_topology(Sysfs(root)), reserve=0)
    assert (p.inference, p.os_side, p.threads) == ([2, 3], [0, 1], 2)


@pytest.mark.parametrize("text", ["", "garbage", "1e3", "\ufffd", "0"])
def test_unreadable_capacity_counts_as_full_speed(tmp_path, text):
    root = machines.topology(tmp_path, [(i,) for i in range(4)], capacity={i: 1024 for i in range(4)})
    (root / "devices/system/cpu/cpu3/cpu_capacity").write_text(text + "\n")
    topo = read_topology(Sysfs(root))
    assert topo.cpus[3].capacity == 1024
    assert choose_cores(topo).inference == [2, 3]


def test_recorded_16_cpu_topology_is_cut_to_what_the_kernel_allows(tmp_path):
    allowed = os.sched_getaffinity(0)  # this host: 2 CPUs
    topo = read_topology(Sysfs(machines.xeon16_h200_host(tmp_path)))
    p = choose_cores(topo, allowed=allowed)
    assert set(p.inference) <= allowed and set(p.reserved) <= allowed
    assert p.inference and not set(p.inference) & set(p.reserved)
    assert "not allowed here" in p.warnings[0]


def test_this_hosts_recorded_topology(data_dir):
    topo = read_topology(Sysfs(data_dir / "host_sys"))
    assert topo.online == [0, 1]
    assert topo.cores() == [(0,), (1,)]
    p = choose_cores(topo)
    assert (p.reserved, p.inference) == ([0], [1])


def test_live_host_topology_matches_lscpu():
    """This host's real /sys, read by read_topology, against util-linux's own reading of it."""
    import shutil
    import subprocess

    if shutil.which("lscpu") is None:
        pytest.skip("lscpu (util-linux) not installed")
    rows = [line.split(",") for line in subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET,NODE,ONLINE", "-a"],
                                                       capture_output=True, text=True, check=True).stdout.splitlines()
            if not line.startswith("#")]
    online = sorted(int(r[0]) for r in rows if r[4] == "Y")
    by_core: dict[tuple[str, str], list[int]] = {}
    for cpu, core, socket, _node, on in rows:
        if on == "Y":
            by_core.setdefault((socket, core), []).append(int(cpu))
    topo = read_topology(Sysfs("/sys"))
    assert topo.online == online
    assert topo.cores() == sorted((tuple(sorted(v)) for v in by_core.values()), key=min)
    allowed = os.sched_getaffinity(0)
    p = choose_cores(topo, allowed=allowed)
    assert p.inference and set(p.inference) <= allowed and not set(p.inference) & set(p.reserved)
    assert p.threads == len({k for k, v in by_core.items() if set(v) & set(p.inference)})


def test_choice_matches_the_best_configuration_of_the_recorded_decode_benchmark(tmp_path, data_dir):
    """On the 16-CPU Xeon under OS noise, llama.cpp decode kept full speed only with 14 threads pinned
    to CPUs 2-15 (recording in data/): of the configurations run under noise, the rule picks the best."""
    import json

    rec = json.loads((data_dir / "xeon16_llamacpp_decode_noise.json").read_text())
    noisy = [r for r in rec["rows"] if "noise" in r["config"]]
    best = max({r["config"] for r in noisy}, key=lambda k: rec["summary"][k]["median_tok_s"])
    row = next(r for r in noisy if r["config"] == best)
    p = choose_cores(read_topology(Sysfs(machines.xeon16_h200_host(tmp_path))))
    assert (format_cpulist(p.inference), p.threads) == (row["cpus"], row["threads"])
