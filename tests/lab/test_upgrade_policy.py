"""``tierfleet policy rollout`` end to end on the lab: a mixed fleet (CPU server, two Jetson boards, a GPU node)
gets one policy file, each host its own modes and limits; a bad policy is refused before any host; a policy
naming a Jetson mode one board lacks fails that host and its batch goes back to the previous policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, pyinfra

pytestmark = pytest.mark.lab

TIERFLEET = str(Path(sys.executable).with_name("tierfleet"))
INVENTORY = str(REPO / "inventory" / "lab.py")
EXAMPLE = REPO / "inventory" / "policies" / "energy.yaml"
HOSTS = ["cpu-server", "jetson-orin-nano", "jetson-nano", "gpu-node-t4"]
CLI = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
ECO_MODE = {"jetson-orin-nano": "7W", "jetson-nano": "5W"}


def in_host(lab, host: str, *argv: str) -> str:
    run = subprocess.run(lab.host(host).exec_argv(list(argv)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (host, argv, run.stdout, run.stderr)
    return run.stdout.strip()


def running_policy(lab, host: str) -> str:
    return json.loads(in_host(lab, host, CLI, "status", "--json"))["policy"]["hash"]


@pytest.fixture(scope="module")
def converged(lab):
    from tierfleet.artifacts.llama_build import cached_runtime

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no cached llama-server: `make runtime` builds it")
    lab.publish(REPO / ".cache" / "runtime")
    limit = [item for host in HOSTS for item in ("--limit", host)]
    run = pyinfra(lab, "deploys/tier_basic.py", *limit, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:]


def rollout(tmp_path: Path, policy: Path, *args: str) -> tuple[int, dict | None, str]:
    state = tmp_path / "state.json"
    limit = [item for host in HOSTS for item in ("--limit", host)]
    run = subprocess.run([TIERFLEET, "policy", "rollout", str(policy), "-i", INVENTORY, *limit, "--state", str(state),
                          "--report", str(tmp_path / "report.json"), "--json", *args],
                         capture_output=True, text=True, cwd=REPO, timeout=1500)
    report = json.loads((tmp_path / "report.json").read_text()) if (tmp_path / "report.json").exists() else None
    return run.returncode, report, run.stdout + run.stderr


def test_one_policy_fits_the_mixed_fleet(lab, converged, tmp_path):
    rc, report, out = rollout(tmp_path, EXAMPLE, "--canary", "cpu-server", "--order", "canary", "--serial", "100%")
    assert rc == 0 and report["ok"], out[-3000:]
    assert report["batches"][0] == ["cpu-server"]
    for host in HOSTS:
        run = report["hosts"][host]
        assert run["status"] == "ok" and run["after"]["policy"] == running_policy(lab, host)
    for host, mode in ECO_MODE.items():  # each Jetson runs its own board's mode for eco
        policy = yaml.safe_load(in_host(lab, host, "cat", "/etc/tierfleet-ops/policy.yaml"))
        assert policy["profiles"]["eco"]["jetson"]["nvpmodel"] == mode
    t4 = yaml.safe_load(in_host(lab, "gpu-node-t4", "cat", "/etc/tierfleet-ops/policy.yaml"))
    assert t4["profiles"]["eco"]["nvml"]["power_limit_w"] == 60  # inside the T4's 60..70 W constraints


def test_a_bad_policy_is_refused_before_any_host_is_touched(lab, converged, tmp_path):
    before = {host: running_policy(lab, host) for host in HOSTS}
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["switching"]["down"]["performance"] = 90
    bad.write_text(yaml.safe_dump(doc))
    rc, report, out = rollout(tmp_path, bad)
    assert rc == 2 and report is None and not (tmp_path / "state.json").exists()
    assert "switching.down.performance: must be below switching.up.performance" in out
    assert {host: running_policy(lab, host) for host in HOSTS} == before


def test_a_jetson_mode_one_board_lacks_fails_that_host_and_its_batch_goes_back(lab, converged, tmp_path):
    before = {host: running_policy(lab, host) for host in HOSTS}
    odd = tmp_path / "odd.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["platforms"]["jetson"]["profiles"]["eco"]["jetson"]["nvpmodel"] = "5W"  # a Jetson Nano mode only
    odd.write_text(yaml.safe_dump(doc))
    rc, report, out = rollout(tmp_path, odd, "--serial", "100%", "--max-fail-pct", "50")
    assert rc == 1, out[-3000:]
    orin = report["hosts"]["jetson-orin-nano"]
    assert orin["status"] == "failed" and "mode '5W' does not exist on this board" in orin["error"]
    for host in ("cpu-server", "jetson-nano", "gpu-node-t4"):
        run = report["hosts"][host]
        assert run["status"] == "reverted", (host, run.get("error"), run)
    assert {host: running_policy(lab, host) for host in HOSTS} == before  # no host left on the new policy
