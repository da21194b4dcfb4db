"""Pinning real processes' real threads on this host, finding runtimes, thread-count checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

import psutil

from tierfleet_ops.pinning import Pinner, RuntimeMatch, SliceCpus, cgroup_matches, find_runtime, parse_cgroup
from tierfleet_ops.runner import Runner

CHILD = textwrap.dedent("""
    import sys, threading, time
    stop = threading.Event()
    def work():
        while not stop.is_set():
            time.sleep(0.01)
    threads = [threading.Thread(target=work) for _ in range(int(sys.argv[1]))]
    for t in threads: t.start()
    print("ready", flush=True)
    for line in sys.stdin:            # each line starts one more thread
        if line.strip() == "more":
            t = threading.Thread(target=work); t.start(); threads.append(t)
            print("more", flush=True)
    stop.set()
""")

needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


@pytest.fixture
def runtime(tmp_path):
    procs = []

    def start(nthreads: int, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(nthreads), *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stdin.close()
        p.wait(timeout=10)


def masks(pid):
    return {t.id: os.sched_getaffinity(t.id) for t in psutil.Process(pid).threads()}


@needs_two_cpus
def test_every_thread_is_pinned_and_new_threads_are_caught(runtime, tmp_path):
    target = sorted(os.sched_getaffinity(0))[-1:]
    proc = runtime(4, "-t", "4")
    pidfile = tmp_path / "rt.pid"
    pidfile.write_text(f"{proc.pid}\n")
    pinner = Pinner(RuntimeMatch(pidfile=str(pidfile)))
    rep = pinner.pin(target)
    assert rep.pids == [proc.pid]
    assert rep.threads == 5 and rep.newly_pinned == 5
    assert set(map(frozenset, masks(proc.pid).values())) == {frozenset(target)}
    assert rep.thread_mismatch == {proc.pid: 4}  # -t 4 but one inference CPU

    again = pinner.pin(target)
    assert (again.threads, again.newly_pinned) == (5, 0)

    # a thread the runtime starts later inherits its creator's mask: force a mask on the main
    # thread first so the new one differs, then the periodic re-check must catch it
    os.sched_setaffinity(proc.pid, os.sched_getaffinity(0))
    proc.stdin.write("more\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "more"
    rep3 = pinner.pin(target)
    assert rep3.threads == 6 and rep3.newly_pinned == 2
    assert all(m == set(target) for m in masks(proc.pid).values())

    assert pinner.unpin() >= 5
    assert all(m == os.sched_getaffinity(0) for m in masks(proc.pid).values())


@needs_two_cpus
def test_the_thread_count_is_compared_with_the_placement_not_the_cpu_count(runtime, tmp_path):
    """On an SMT host the unit runs one thread per physical core: two CPUs, one core, one thread is right."""
    proc = runtime(1, "-t", "1")
    pidfile = tmp_path / "rt.pid"
    pidfile.write_text(f"{proc.pid}\n")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    assert Pinner(RuntimeMatch(pidfile=str(pidfile))).pin(cpus, threads=1).thread_mismatch == {}
    assert Pinner(RuntimeMatch(pidfile=str(pidfile))).pin(cpus, threads=2).thread_mismatch == {proc.pid: 1}


@needs_two_cpus
def test_find_by_executable_name_skips_other_processes(runtime, tmp_path):
    link = tmp_path / "llama-server"
    link.symlink_to(sys.executable)
    p = subprocess.Popen([str(link), "-c", CHILD, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        other = runtime(1)
        pids = find_runtime(RuntimeMatch(name="llama-server"))
        assert p.pid in pids and other.pid not in pids
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_no_matching_runtime_pins_nothing(tmp_path):
    rep = Pinner(RuntimeMatch(pidfile=str(tmp_path / "missing.pid"))).pin([0])
    assert (rep.pids, rep.threads) == ([], 0)


def test_find_by_unit_in_a_recorded_procfs(tmp_path, monkeypatch):
    # a proc tree laid out as the kernel does, for psutil's movable root: each process's stat line
    # (in the real format, taken from this host) and its cgroup file, and /proc/stat with btime
    real_stat = open(f"/proc/{os.getpid()}/stat").read()
    rest = real_stat[real_stat.rindex(")") + 1:]
    (tmp_path / "stat").write_text(open("/proc/stat").read())
    for pid, cg in ((100, "0::/system.slice/llama-server.service\n"),
                    (101, "0::/system.slice/llama-server.service.d\n"),
                    (102, "0::/system.slice/docker-4f2a9c.scope\n")):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(cg)
        (d / "stat").write_text(f"{pid} (x){rest}")
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    assert find_runtime(RuntimeMatch(unit="llama-server.service")) == [100]
    assert find_runtime(RuntimeMatch(container="4f2a9c")) == [102]


def test_this_hosts_cgroup_file_parses(data_dir):
    paths = parse_cgroup((data_dir / "host_proc_self_cgroup.txt").read_text())
    assert "/" in paths and len(paths) >= 2
    assert not cgroup_matches(paths, "llama-server.service", None)


SYSTEMCTL = """#!/bin/sh
# stand-in for systemctl show/set-property: values kept in files, every call logged
printf '%s\\n' "$*" >> "$STATE/calls"
case "$1" in
  show) cat "$STATE/$4" 2>/dev/null || echo ;;
  set-property) printf '%s\\n' "${4#AllowedCPUs=}" > "$STATE/$3" ;;
  *) exit 1 ;;
esac
"""


def test_slice_cpus_are_knobs_with_saved_originals(tmp_path, monkeypatch):
    from tierfleet_ops.apply import Applier
    from tierfleet_ops.state import StateStore

    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("STATE", str(tmp_path))
    sc = SliceCpus(Runner(path=str(bindir)), cgroup_root=str(cg))
    assert sc.available()
    state = StateStore(tmp_path / "state.json")
    out = Applier(state).apply(sc.changes([0, 1]))
    assert [o.status for o in out] == ["changed", "changed"]
    assert (tmp_path / "system.slice").read_text().strip() == "0-1"
    assert state.originals == {"systemd.system.slice.AllowedCPUs": "", "systemd.user.slice.AllowedCPUs": ""}
    # a new process (after SIGKILL) restores from the state file
    out = Applier(StateStore(tmp_path / "state.json")).restore(sc.knobs())
    assert [o.status for o in out] == ["changed", "changed"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "set-property --runtime system.slice AllowedCPUs=0-1" in calls
    assert calls[-1] == "show --property=AllowedCPUs --value system.slice"
    assert "set-property --runtime system.slice AllowedCPUs=" in calls
    assert (tmp_path / "system.slice").read_text().strip() == ""


def test_slice_cpus_unavailable_without_cgroup_v2_cpuset(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert not SliceCpus(Runner(), cgroup_root=str(tmp_path)).available()
    assert not SliceCpus(Runner(), cgroup_root=str(tmp_path / "v1-has-no-such-file")).available()


def test_other_power_managers_are_found_among_real_processes(tmp_path):
    from tierfleet_ops.daemon import detect_power_managers, process_names

    exe = tmp_path / "tuned"
    exe.symlink_to(sys.executable)
    p = subprocess.Popen([str(exe), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        import time
        for _ in range(100):  # until the child has exec'd
            if psutil.Process(p.pid).cmdline()[:1] == [str(exe)]:
                break
            time.sleep(0.01)
        assert "tuned" in detect_power_managers(process_names())
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    assert "tuned" not in detect_power_managers(process_names())


def test_daemon_moves_os_slices_and_restores_them(tmp_path, monkeypatch):
    from tierfleet_ops.backends.base import HostContext
    from tierfleet_ops.daemon import Daemon, DaemonConfig
    from tierfleet_ops.sysfs import Sysfs

    from . import machines

    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("STATE", str(tmp_path))
    pol = tmp_path / "p.yaml"
    pol.write_text("profiles: {eco: {}}\npinning: {move_os_slices: true, reserve_cores: 2}\n")
    ctx = HostContext(sysfs=Sysfs(machines.xeon_smt(tmp_path / "sys")), runner=Runner(path=str(bindir)))
    d = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "s.json"), socket_path=None,
                            metrics_port=None, ctx=ctx, cgroup_root=str(cg), allowed_cpus=set(range(16))))
    d.start()
    assert (tmp_path / "system.slice").read_text().strip() == "0-1,8-9"
    assert (tmp_path / "user.slice").read_text().strip() == "0-1,8-9"
    out = d.stop()
    assert {o.name for o in out} == {"systemd.system.slice.AllowedCPUs", "systemd.user.slice.AllowedCPUs"}
    assert (tmp_path / "system.slice").read_text().strip() == ""


def test_a_second_daemon_does_not_steal_a_live_socket(tmp_path):
    from tierfleet_ops.control import ControlServer
    from tierfleet_ops.errors import ControlError

    path = str(tmp_path / "ops.sock")
    first = ControlServer(object(), path)
    first.start()
    try:
        with pytest.raises(ControlError, match="another daemon is answering"):
            ControlServer(object(), path).start()
    finally:
        first.stop()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody answers on, as a SIGKILLed daemon leaves it
    second = ControlServer(object(), path)
    second.start()
    second.stop()


@needs_two_cpus
def test_dry_run_pinning_counts_and_changes_nothing(runtime, tmp_path):
    proc = runtime(2)
    pidfile = tmp_path / "rt.pid"
    pidfile.write_text(f"{proc.pid}\n")
    before = masks(proc.pid)
    pinner = Pinner(RuntimeMatch(pidfile=str(pidfile)))
    rep = pinner.pin(sorted(os.sched_getaffinity(0))[-1:], dry_run=True)
    assert (rep.threads, rep.newly_pinned) == (3, 3)
    assert masks(proc.pid) == before and pinner.state.pins == {} and pinner.pinned_total == 0


def test_control_socket_is_0660_and_group_owned(tmp_path):
    import grp
    import stat

    from tierfleet_ops.control import ControlServer

    group = next((g for g in ("nogroup", "daemon", "users") if g in {e.gr_name for e in grp.getgrall()}), None)
    if group is None or os.geteuid() != 0:
        pytest.skip("needs root and a spare system group")
    srv = ControlServer(object(), str(tmp_path / "ops.sock"), group)
    srv.start()
    try:
        st = os.stat(tmp_path / "ops.sock")
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(group).gr_gid
    finally:
        srv.stop()
    assert not (tmp_path / "ops.sock").exists()
