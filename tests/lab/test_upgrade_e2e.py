"""``tierfleet upgrade`` end to end on the lab: batches, the health gate and rollback, the failure threshold, hosts
black-holed or stopped mid-batch, ``--resume`` after the CLI is killed, ``--retry-failed``.

In every case: no host is left without a working release, and the report tells the truth.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.lab

TIERFLEET = str(Path(sys.executable).with_name("tierfleet"))
INVENTORY = str(REPO / "inventory" / "lab.py")
HOSTS = ["cpu-server", "jetson-orin-nano", "gpu-node-t4", "gpu-node-a100"]
MODEL = "/var/lib/tierfleet/models"


@pytest.fixture(scope="module")
def versions(lab, tmp_path_factory):
    """The lab's artifacts, plus tiny-model versions 11, 12 and 13 (load) and 15 (verifies, does not load), signed."""
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
    from tierfleet.artifacts.llama_build import cached_runtime
    from tierfleet.artifacts.manifest import publish
    from tierfleet.lab.artifacts import publish_lab_artifacts, sign_lab_store
    from tierfleet.lab.mirror import artifacts_dir

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no cached llama-server: `make runtime` builds it")
    publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda _: None, lab_cache=lab.cache)
    store = artifacts_dir(lab.root)
    work = tmp_path_factory.mktemp("upgrade-models")
    for version, seed in (("11", 11), ("12", 12), ("13", 13)):
        files = write_tiny_gguf(work / version / "tiny-q8_0.gguf", qtype="q8_0", seed=seed)
        publish(store, files, kind="model", name="tiny-llama-Q8_0", version=version, compress=False)
    (work / "15").mkdir()
    (work / "15" / "tiny-q8_0.gguf").write_bytes(b"GGUF" + bytes(4096))
    publish(store, [work / "15" / "tiny-q8_0.gguf"], kind="model", name="tiny-llama-Q8_0", version="15")
    sign_lab_store(lab.root, log=lambda _: None, lab_cache=lab.cache)
    return store


def argv(state: Path, *args: str) -> list[str]:
    return [TIERFLEET, "upgrade", *args, "--state", str(state), "--report", str(state.with_suffix(".report.json")),
            "--json"]


def upgrade(state: Path, *args: str, timeout: float = 1500) -> tuple[int, dict]:
    run = subprocess.run(argv(state, *args), capture_output=True, text=True, cwd=REPO, timeout=timeout)
    report = json.loads(state.with_suffix(".report.json").read_text())
    return run.returncode, report


def new(*args: str) -> tuple[str, ...]:
    limit = [item for host in HOSTS for item in ("--limit", host)]
    return ("-i", INVENTORY, *limit, *args)


def serving(lab, host: str) -> str:
    return lab.exec(host, ["readlink", f"{MODEL}/current"], capture=True).stdout.decode().strip().split("/")[-1]


def healthy(lab, host: str) -> bool:
    res = lab.exec(host, ["curl", "-fsS", "-d", '{"prompt": "Hi", "n_predict": 2}',
                          "http://127.0.0.1:8080/completion"], capture=True)
    return res.returncode == 0 and b'"content"' in res.stdout


def wait_for(predicate, timeout: float = 600, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_rolling_upgrade_in_batches(lab, versions, tmp_path):
    rc, report = upgrade(tmp_path / "state.json", *new("--model-version", "11", "--serial", "1,50%"))
    assert rc == 0 and report["ok"], json.dumps(report, indent=1)[-3000:]
    assert [len(b) for b in report["batches"]] == [1, 2, 1]  # 1, then 50% of 4, then the last size again
    assert sorted(h for b in report["batches"] for h in b) == sorted(HOSTS)
    for host in HOSTS:
        run = report["hosts"][host]
        assert run["status"] == "ok" and run["after"]["model"] == "tiny-llama-Q8_0-11"
        assert serving(lab, host) == "tiny-llama-Q8_0-11" and healthy(lab, host)
    status = subprocess.run([TIERFLEET, "status", "-i", INVENTORY, "--limit", report["batches"][0][0], "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=180)
    last = json.loads(status.stdout)["hosts"][0]["last_rollout"]
    assert last["kind"] == "upgrade" and last["result"] == "ok" and last["after"]["model"] == "tiny-llama-Q8_0-11"


def test_a_failed_gate_rolls_the_host_back_and_the_threshold_stops_the_rollout(lab, versions, tmp_path):
    rc, report = upgrade(tmp_path / "state.json", *new("--model-version", "15", "--serial", "1",
                                                       "--data", "health_timeout=8"))
    assert rc == 1 and not report["ok"]
    order = [b[0] for b in report["batches"]]
    first = report["hosts"][order[0]]
    assert first["status"] == "failed" and first["rolled_back"] is True
    assert "health gate failed" in first["error"]
    assert report["stopped"].startswith(f"stopped: 1 of {len(HOSTS)} hosts failed")
    assert [report["hosts"][h]["status"] for h in order[1:]] == ["pending"] * 3  # untouched
    for host in HOSTS:
        assert serving(lab, host) == "tiny-llama-Q8_0-11" and healthy(lab, host), host


def test_hosts_blackholed_or_stopped_mid_batch_fail_in_time_and_retry_failed_finishes(lab, versions, tmp_path):
    state = tmp_path / "state.json"
    holed, stopped = HOSTS[1], HOSTS[2]
    proc = subprocess.Popen(argv(state, *new("--model-version", "12", "--serial", "100%", "--max-fail-pct", "60",
                                             "--host-timeout", "90")),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def started(host: str) -> bool:
            logs = list((tmp_path / "rollouts").glob(f"*/{host}.log"))
            return bool(logs) and "connected, deploying" in logs[0].read_text(errors="replace")

        wait_for(lambda: started(holed) and started(stopped), what="the workers to connect")
        lab.fault("blackhole", holed)
        lab.fault("stop", stopped)
        assert proc.wait(timeout=900) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        lab.clear()
    report = json.loads(state.with_suffix(".report.json").read_text())
    assert report["hosts"][holed]["status"] in ("timeout", "failed") and report["hosts"][holed]["error"]
    assert report["hosts"][stopped]["status"] in ("timeout", "failed") and report["hosts"][stopped]["error"]
    for host in (HOSTS[0], HOSTS[3]):
        assert report["hosts"][host]["status"] == "ok" and serving(lab, host) == "tiny-llama-Q8_0-12"
    first_ok = HOSTS[0]
    for host in (holed, stopped):  # back from their faults, each serves a whole release
        wait_for(lambda h=host: healthy(lab, h), timeout=300, what=f"{host} to serve again")
        assert serving(lab, host) in ("tiny-llama-Q8_0-11", "tiny-llama-Q8_0-12")

    rc, report = upgrade(state, "--retry-failed")
    assert rc == 0 and report["ok"], json.dumps(report, indent=1)[-3000:]
    assert report["hosts"][holed]["attempts"] == 2 and report["hosts"][first_ok]["attempts"] == 1
    for host in HOSTS:
        assert serving(lab, host) == "tiny-llama-Q8_0-12" and healthy(lab, host), host


def test_resume_after_the_cli_is_killed(lab, versions, tmp_path):
    state = tmp_path / "state.json"
    proc = subprocess.Popen(argv(state, *new("--model-version", "11", "--serial", "1")), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(state.exists, what="the state file")
    order = [b[0] for b in json.loads(state.read_text())["batches"]]
    wait_for(lambda: bool(list((tmp_path / "rollouts").glob(f"*/{order[1]}.log"))), what="the second host to start")
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI dies mid-batch; its workers die with it (PR_SET_PDEATHSIG)
    proc.wait()
    killed = json.loads(state.read_text())
    assert killed["hosts"][order[0]]["status"] == "ok" and killed["hosts"][order[1]]["status"] == "running"
    assert killed["finished"] is None

    rc, report = upgrade(state, "--resume")
    assert rc == 0 and report["ok"], json.dumps(report, indent=1)[-3000:]
    assert report["hosts"][order[0]]["attempts"] == 1 and report["hosts"][order[1]]["attempts"] == 2
    for host in HOSTS:
        assert serving(lab, host) == "tiny-llama-Q8_0-11" and healthy(lab, host), host


def test_a_model_the_mirror_corrupts_fails_its_host_before_anything_switches(lab, versions, tmp_path):
    before = {host: serving(lab, host) for host in HOSTS}
    # the model file only: its signed manifest arrives intact, so the host's own sha256 check must catch it
    lab.fault("mirror", mode="corrupt", prefix="/artifacts/tiny-llama-Q8_0/13/tiny-q8_0.gguf")
    try:
        rc, report = upgrade(tmp_path / "state.json", *new("--model-version", "13", "--serial", "1"))
    finally:
        lab.clear()
    assert rc == 1 and not report["ok"]
    first = report["hosts"][report["batches"][0][0]]
    assert first["status"] == "failed" and "sha256 mismatch" in first["error"]
    assert first["after"]["model"] == first["before"]["model"]  # nothing was switched
    assert sum(run["status"] == "pending" for run in report["hosts"].values()) == len(HOSTS) - 1
    for host in HOSTS:
        assert serving(lab, host) == before[host] and healthy(lab, host), host
