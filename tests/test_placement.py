"""The llama-server unit's placement (control side, from facts) and the ops daemon's pinning (on the host,
from sysfs) come from one rule and agree, on recorded-shape sysfs trees of the parts that differ most."""

from __future__ import annotations

import subprocess

import pytest
from tierfleet_ops.sysfs import Sysfs, format_cpulist
from tierfleet_ops.topology import choose_cores, read_topology

from tests.ops import machines
from tierfleet.facts.cpu import CpuTopology
from tierfleet.placement import place


def fact_on_tree(root) -> dict:
    """Run the CpuTopology fact's own command against a sysfs tree (paths moved under ``root``) and parse it."""
    fact = CpuTopology()
    command = fact.command().replace(" /sys/", f" {root}/")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    return fact.process([line.replace(str(root), "/sys", 1) for line in out.splitlines()])


#: builder -> (inference CPUs, threads, reserved CPUs), the same on both sides
EXPECTED = {
    "intel_hybrid_6p8e": ("0-11", 6, "12-13"),  # P-cores only; E-cores 12-19 stay with the OS
    "intel_hybrid": ("0-15", 8, "16-17"),
    "big_little": ("4-7", 4, "0-1"),  # RK3588: the four A76s
    "big_first_little_last": ("0-3", 4, "4-5"),
    "tri_cluster": ("4-7", 4, "0-1"),
    "xeon_smt": ("2-7,10-15", 6, "0-1,8-9"),  # plain SMT server: one thread per physical core
    "old_kernel_smt": ("2-7,10-15", 6, "0-1,8-9"),
    "numa_2s": ("8-15,24-31", 8, "0-1,16-17"),
    "xeon16_h200_host": ("2-15", 14, "0-1"),
    "orin_agx": ("2-11", 10, "0-1"),
}


@pytest.mark.parametrize("builder", sorted(EXPECTED))
def test_unit_and_daemon_choose_the_same_cores_and_threads(tmp_path, builder):
    root = getattr(machines, builder)(tmp_path / "sys")
    unit = place(fact_on_tree(root), None)
    daemon = choose_cores(read_topology(Sysfs(root)))
    assert (format_cpulist(unit.cpus), unit.threads, format_cpulist(unit.reserved)) == EXPECTED[builder]
    assert (list(unit.cpus), unit.threads, list(unit.reserved)) == (daemon.inference, daemon.threads, daemon.reserved)


def test_jetson_nano_in_5w_mode_agrees(tmp_path):
    root = machines.jetson_nano_49(tmp_path / "sys", online=[0, 1])
    unit = place(fact_on_tree(root), None)
    daemon = choose_cores(read_topology(Sysfs(root)))
    assert (unit.cpus, unit.threads, unit.reserved) == ((1,), 1, (0,))
    assert (list(unit.cpus), list(unit.reserved)) == (daemon.inference, daemon.reserved)


def test_allowed_cpus_cut_both_sides_alike(tmp_path):
    root = machines.intel_hybrid_6p8e(tmp_path / "sys")
    allowed = [0, 1, 2, 3, 12, 13, 14, 15]
    unit = place(fact_on_tree(root), allowed)
    daemon = choose_cores(read_topology(Sysfs(root)), allowed=set(allowed))
    assert (unit.cpus, unit.threads) == ((0, 1, 2, 3), 2)
    assert list(unit.cpus) == daemon.inference and unit.warnings == tuple(daemon.warnings)


def test_no_usable_cpu_still_runs_one_thread_without_affinity(tmp_path):
    root = machines.xeon_smt(tmp_path / "sys")
    unit = place(fact_on_tree(root), [99])
    assert (unit.cpus, unit.threads, unit.reserved) == ((), 1, ())
    assert unit.warnings[-1] == "no usable CPUs"
