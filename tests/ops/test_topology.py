"""Core choice on recorded topologies and on this host's own (real) topology and affinity."""

from __future__ import annotations

import os

import pytest

from tierfleet_ops.sysfs import Sysfs
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


def test_big_little_gives_the_os_little_cores(tmp_path):
    p = place(machines.big_little, tmp_path)
    assert (p["reserved"], p["inference"], p["os"]) == ("0-1", "2-7", "0-1")


def test_intel_hybrid_gives_the_os_e_cores(tmp_path):
    p = place(machines.intel_hybrid, tmp_path)
    assert p["reserved"] == "16-17"
    assert p["inference"] == "0-15,18-19"


def test_two_socket_numa_reserves_in_node0_and_keeps_inference_in_one_node(tmp_path):
    p = place(machines.numa_2s, tmp_path)
    assert p["reserved"] == "0-1,16-17"
    assert p["inference"] == "8-15,24-31"  # node 1 has more CPUs left than node 0
    assert p["os"] == "0-7,16-23"
    assert "inference kept inside node 1" in p["warnings"][0]
    p_all = place(machines.numa_2s, tmp_path, numa="all")
    assert p_all["inference"] == "2-15,18-31"


@pytest.mark.parametrize("cores, reserved, inference, warn", [
    ([(0,), (1,), (2,)], "0", "1-2", "only 3 physical core(s): reserving 1"),
    ([(0, 1)], "0", "1", "single core: the OS gets one SMT sibling"),
    ([(0,)], "", "0", "a single CPU: nothing reserved"),
])
def test_too_few_cores_degrade_with_a_warning(tmp_path, cores, reserved, inference, warn):
    p = choose_cores(read_topology(Sysfs(machines.topology(tmp_path, cores)))).as_dict()
    assert (p["reserved"], p["inference"]) == (reserved, inference)
    assert any(w.startswith(warn) for w in p["warnings"]), p["warnings"]


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


def test_live_host_topology_matches_the_kernel():
    topo = read_topology(Sysfs("/sys"))
    assert set(topo.online) >= os.sched_getaffinity(0)
    p = choose_cores(topo, allowed=os.sched_getaffinity(0))
    assert set(p.inference) | set(p.os_side) == os.sched_getaffinity(0)


def test_choice_matches_the_best_configuration_of_the_recorded_decode_benchmark(tmp_path, data_dir):
    """On the 16-CPU Xeon, llama.cpp decode under OS noise only kept full speed with 14 threads
    pinned to CPUs 2-15 (recording in data/); the rule picks exactly that set."""
    import json

    from tierfleet_ops.pinning import parse_thread_count
    from tierfleet_ops.sysfs import format_cpulist

    rec = json.loads((data_dir / "xeon16_llamacpp_decode_noise.json").read_text())
    best = max(rec["summary"], key=lambda k: rec["summary"][k]["median_tok_s"] if k.startswith("C") else -1)
    row = next(r for r in rec["rows"] if r["config"] == best)
    p = choose_cores(read_topology(Sysfs(machines.xeon16_h200_host(tmp_path))))
    assert format_cpulist(p.inference) == row["cpus"] == "2-15"
    assert len(p.inference) == row["threads"] == 14
    collapsed = [r for r in rec["rows"] if r["threads"] == 16 and r["config"].startswith(("B", "E"))]
    assert all(r["tok_s"] == 0.0 for r in collapsed)  # 16 threads on 16 CPUs under noise: collapse
    assert parse_thread_count(["llama-server", "-t", "16"], {}) != len(p.inference)
