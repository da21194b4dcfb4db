"""Rollout planning, state and engine: real worker processes (a stand-in worker), real files, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tierfleet.exceptions import ConfigError
from tierfleet.rollout import state as rstate
from tierfleet.rollout.engine import execute
from tierfleet.rollout.plan import batch_sizes, order_hosts, parse_serial, plan

FAKE = Path(__file__).with_name("rollout_fake_worker.py")


# --- planning --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("serial", "total", "sizes"), [
    ("1,10%,100%", 10, [1, 1, 8]),
    ("1,10%,100%", 3, [1, 1, 1]),          # a percentage is at least one host
    ("2", 5, [2, 2, 1]),                   # the last size repeats
    ("50%", 5, [2, 2, 1]),                 # rounded down, like Ansible
    ("100%", 7, [7]),
    ("1,5", 0, []),
])
def test_batch_sizes(serial, total, sizes):
    assert batch_sizes(total, parse_serial(serial)) == sizes


@pytest.mark.parametrize("bad", ["", "0", "101%", "-1", "1,,2", "a", "10 %", "1e3", "1%%"])
def test_bad_serial_is_refused_naming_it(bad):
    with pytest.raises(ConfigError, match="--serial: .*allowed: a comma list of host counts"):
        parse_serial(bad)


HOSTS = [("a1", ("edge",)), ("g1", ("gpu",)), ("a2", ("edge",)), ("s1", ("servers",)), ("g2", ("gpu",))]


def test_orders_and_canaries():
    assert plan(HOSTS, parse_serial("2")) == [["a1", "g1"], ["a2", "s1"], ["g2"]]
    assert plan(HOSTS, parse_serial("2"), "group") == [["a1", "a2"], ["g1", "g2"], ["s1"]]
    assert plan(HOSTS, parse_serial("100%"), "canary", ("g2",)) == [["g2"], ["a1", "g1", "a2", "s1"]]
    assert order_hosts(HOSTS, "inventory", ("edge",)) == (["a1", "a2"], ["g1", "s1", "g2"])
    with pytest.raises(ConfigError, match="--order: canary: needs --canary"):
        plan(HOSTS, parse_serial("1"), "canary")
    with pytest.raises(ConfigError, match="--canary: nope: names no host or group"):
        plan(HOSTS, parse_serial("1"), "inventory", ("nope",))


# --- the engine ------------------------------------------------------------------------------------

def new_state(batches, max_fail_pct=0.0, host_timeout=20.0):
    runs = {h: rstate.HostRun(host=h, batch=i) for i, b in enumerate(batches) for h in b}
    return rstate.RolloutState(kind="upgrade", inventory="inv.py", serial="1", order="inventory",
                               max_fail_pct=max_fail_pct, host_timeout=host_timeout, batches=batches, hosts=runs)


def argv(host: str, out: Path) -> list[str]:
    return [sys.executable, str(FAKE), host, str(out)]


@pytest.fixture
def worker_log(tmp_path, monkeypatch):
    log = tmp_path / "worker.log"
    log.touch()
    monkeypatch.setenv("FAKE_WORKER_LOG", str(log))
    return log


def test_all_batches_run_and_the_state_is_the_report(tmp_path, worker_log):
    st = new_state([["ok-1"], ["ok-2", "ok-3"]])
    execute(st, tmp_path / "state.json", argv, tmp_path / "run")
    assert st.summary()["ok"] == 3 and st.report()["ok"] and st.finished and st.stopped is None
    saved = rstate.load(tmp_path / "state.json")
    assert saved.hosts["ok-2"].after["model"] == "m-2" and saved.hosts["ok-2"].attempts == 1


def test_the_threshold_stops_the_rollout_and_leaves_later_hosts_untouched(tmp_path, worker_log):
    st = new_state([["ok-1"], ["fail-2", "ok-3"], ["ok-4"], ["ok-5"]], max_fail_pct=10)
    execute(st, tmp_path / "state.json", argv, tmp_path / "run")
    assert st.hosts["fail-2"].status == "failed" and st.hosts["fail-2"].rolled_back
    assert "health gate failed" in st.hosts["fail-2"].error
    assert st.hosts["ok-3"].status == "ok"  # already running in the same batch
    assert [st.hosts[h].status for h in ("ok-4", "ok-5")] == ["pending", "pending"]
    assert "stopped: 1 of 5 hosts failed (20% > max 10%): fail-2" == st.stopped
    assert "ok-4" not in worker_log.read_text()
    assert not st.report()["ok"]


def test_failures_within_the_threshold_go_on(tmp_path, worker_log):
    st = new_state([["fail-1"], ["ok-2", "ok-3", "ok-4"]], max_fail_pct=30)
    execute(st, tmp_path / "state.json", argv, tmp_path / "run")
    assert st.summary() == {"ok": 3, "failed": 1, "timeout": 0, "reverted": 0, "pending": 0, "running": 0}
    assert not st.stopped


def test_a_hung_host_is_stopped_at_its_time_limit_with_its_process_group(tmp_path, worker_log):
    st = new_state([["hang-1", "ok-2"]], max_fail_pct=100, host_timeout=3)
    execute(st, tmp_path / "state.json", argv, tmp_path / "run")
    assert st.hosts["hang-1"].status == "timeout" and "no result within 3s" in st.hosts["hang-1"].error
    assert st.hosts["ok-2"].status == "ok"
    pid = int(next(l for l in worker_log.read_text().splitlines() if l.startswith("hang-1")).split()[1])
    assert not Path(f"/proc/{pid}").exists()  # killed, not left running


def test_a_worker_without_a_result_fails_with_its_message(tmp_path, worker_log):
    st = new_state([["crash-1"]], max_fail_pct=100)
    execute(st, tmp_path / "state.json", argv, tmp_path / "run")
    assert st.hosts["crash-1"].status == "failed"
    assert st.hosts["crash-1"].error == "tierfleet: crashed before writing a result"


RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_rollout import argv
from tierfleet.rollout import state as rstate
from tierfleet.rollout.engine import execute
path = Path(sys.argv[1])
execute(rstate.load(path), path, argv, path.parent / "run")
"""


def test_resume_after_the_cli_is_killed_runs_each_host_to_the_end_once(tmp_path, worker_log):
    path = tmp_path / "state.json"
    rstate.save(new_state([["ok-1"], ["slow-2"], ["ok-3"]]), path)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(tests=str(Path(__file__).parent)), str(path)])
    deadline = time.monotonic() + 60
    while "slow-2" not in worker_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the CLI dies mid-batch
    proc.wait()
    killed = rstate.load(path)
    assert killed.hosts["ok-1"].status == "ok" and killed.hosts["slow-2"].status == "running"
    assert killed.hosts["ok-3"].status == "pending" and not killed.finished

    resumed = execute(rstate.load(path), path, argv, tmp_path / "run")
    assert resumed.summary()["ok"] == 3
    assert resumed.hosts["slow-2"].attempts == 2 and resumed.hosts["ok-1"].attempts == 1
    starts = [l.split()[0] for l in worker_log.read_text().splitlines() if l.endswith("start")]
    assert starts.count("ok-1") == 1 and starts.count("ok-3") == 1


def test_retry_failed_runs_only_the_failed_hosts(tmp_path, worker_log):
    path = tmp_path / "state.json"
    st = execute(new_state([["ok-1", "fail-2"], ["ok-3"]], max_fail_pct=100), path, argv, tmp_path / "run")
    assert st.failed() == ["fail-2"]
    for name in st.failed():
        st.hosts[name].status = "pending"
    st.finished = None
    worker_log.write_text("")
    execute(st, path, argv, tmp_path / "run")
    assert [l.split()[0] for l in worker_log.read_text().splitlines() if l.endswith("start")] == ["fail-2"]


def test_a_truncated_or_foreign_state_file_is_refused(tmp_path):
    path = tmp_path / "state.json"
    rstate.save(new_state([["ok-1"]]), path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match="not a rollout state"):
        rstate.load(path)
    path.write_text(json.dumps({"kind": "upgrade"}))
    with pytest.raises(ConfigError, match=f"{path}: inventory: required key is missing"):
        rstate.load(path)


def test_a_batch_with_a_failed_host_is_reverted_as_a_whole(tmp_path, worker_log):
    st = new_state([["ok-1"], ["ok-2", "fail-3", "ok-4"], ["ok-5"]], max_fail_pct=50)
    reverted = []

    def revert(host, out):
        reverted.append(host)
        return argv(host, out)  # the stand-in worker: an ok-* host's revert succeeds

    execute(st, tmp_path / "state.json", argv, tmp_path / "run", revert_for=revert)
    assert sorted(reverted) == ["ok-2", "ok-4"]  # the failed batch's hosts that had the change; not batch 1
    assert [st.hosts[h].status for h in ("ok-1", "ok-2", "fail-3", "ok-4", "ok-5")] == \
        ["ok", "reverted", "failed", "reverted", "ok"]
    assert st.hosts["ok-2"].error == "reverted: another host of its batch failed" and not st.report()["ok"]
