"""The tier deploy end to end on the lab's CPU server: converge, rerun, ops daemon, upgrade, rollback, and
each bad input (unknown tier, missing artifact, checksum mismatch, full disk, unreachable mirror) leaving the
previous release serving."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
HOST = "cpu-server"


@pytest.fixture(scope="module")
def store(lab, tmp_path_factory):
    """The lab's artifacts (runtime, ops wheels, tiny model 1) plus tiny-model versions 2 and 3 (3 corrupted)."""
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
    from tierfleet.artifacts.llama_build import cached_runtime
    from tierfleet.artifacts.manifest import publish
    from tierfleet.lab.artifacts import publish_lab_artifacts
    from tierfleet.lab.mirror import artifacts_dir

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no cached llama-server: `make runtime` builds it")
    publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda _: None)
    store = artifacts_dir(lab.root)
    work = tmp_path_factory.mktemp("models")
    for version, seed in (("2", 2), ("3", 3)):
        files = write_tiny_gguf(work / version / "tiny-q8_0.gguf", qtype="q8_0", seed=seed)
        publish(store, files, kind="model", name="tiny-llama-Q8_0", version=version, compress=False)
    bad = store / "tiny-llama-Q8_0" / "3" / "tiny-q8_0.gguf"
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    return store


@pytest.fixture(scope="module")
def inventory(lab):
    """The lab's own inventory: it carries every key the tier deploy needs."""
    return REPO / "inventory" / "lab.py"


def deploy(inventory: Path, *args: str, deploy_file: str = "deploys/tier_advanced.py"):
    run = subprocess.run([PYINFRA, "-y", str(inventory), deploy_file, "--limit", HOST, *args],
                         capture_output=True, text=True, cwd=REPO, timeout=300, env=os.environ.copy())
    return run.returncode, run.stdout + run.stderr


def grand_total(out: str) -> tuple[int, int, int]:
    """(success, error, no change) from pyinfra's results table."""
    line = next(ln for ln in out.splitlines() if "Grand total" in ln)
    cells = [c for c in line.split()[2:]]
    return tuple(0 if c == "-" else int(c) for c in cells[1:4])


def on_host(lab, command: str) -> str:
    return lab.exec(HOST, ["sh", "-c", command], capture=True).stdout.decode().strip()


def serving(lab) -> str:
    """The model file llama-server answers with (from a real completion)."""
    body = on_host(lab, "curl -fsS -d '{\"prompt\": \"Hello\", \"n_predict\": 4}' http://127.0.0.1:8080/completion")
    return json.loads(body)["model"]


def eventually(lab, command: str, expected: str, timeout: float = 20.0) -> str:
    """Run ``command`` on the host until it prints ``expected`` (the daemon acts on its next tick)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = on_host(lab, command)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def current(lab, root: str = "/var/lib/tierfleet/models") -> str:
    return on_host(lab, f"readlink {root}/current")


@pytest.fixture(scope="module")
def converged(lab, store, inventory):
    rc, out = deploy(inventory)
    assert rc == 0, out
    return out


def test_first_converge_serves_and_rerun_changes_nothing(lab, converged, inventory):
    success, error, _ = grand_total(converged)
    assert success > 0 and error == 0
    assert on_host(lab, "curl -fsS http://127.0.0.1:8080/health") == '{"status":"ok"}'
    assert serving(lab) == "/var/lib/tierfleet/models/current/tiny-q8_0.gguf"
    assert current(lab) == "releases/tiny-llama-Q8_0-1"
    rc, out = deploy(inventory)
    assert rc == 0 and grand_total(out)[:2] == (0, 0), out


def test_service_is_unprivileged_hardened_and_pinned(lab, converged):
    user = on_host(lab, "ps -o user= -C llama-server")
    assert user.startswith("tierfleet")
    unit = on_host(lab, "systemctl show llama-server -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp")
    assert sorted(unit.splitlines()) == ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                                         "ProtectSystem=strict"]
    allowed = on_host(lab, "grep Cpus_allowed_list /proc/$(pgrep -o llama-server)/status")
    threads = re.search(r"--threads (\d+)", on_host(lab, "ps -o args= -C llama-server")).group(1)
    # the lab host's kernel has this machine's CPUs; the OS keeps the lowest one
    assert allowed.split()[-1] != "0" and int(threads) >= 1


def test_ops_daemon_applies_profiles_and_restores_on_stop(lab, converged):
    cli = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
    gov = "cat /sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    assert on_host(lab, "systemctl is-active tierfleet-ops") == "active"
    status = json.loads(on_host(lab, f"{cli} status --json"))
    assert status["pinning"]["threads"] > 0 and status["pinning"]["pids"]
    on_host(lab, f"{cli} profile hold performance")
    assert eventually(lab, gov, "performance") == "performance"
    # recorded (and persisted) before the first write: the dressed intel_pstate default
    original = json.loads(on_host(lab, f"{cli} status --json"))["originals"]
    assert original["cpufreq.policy0.scaling_governor"] == "powersave"
    on_host(lab, f"{cli} profile hold eco")
    assert eventually(lab, gov, "powersave") == "powersave"
    on_host(lab, "systemctl stop tierfleet-ops")
    try:
        key = "cpufreq.policy0.scaling_governor"
        assert on_host(lab, gov) == original[key]
    finally:
        on_host(lab, "systemctl start tierfleet-ops")


def test_dry_run_shows_the_plan_and_changes_nothing(lab, converged, inventory):
    before = current(lab)
    run = subprocess.run([PYINFRA, "--dry", str(inventory), "deploys/tier_advanced.py", "--limit", HOST,
                          "--data", "model_version=2"], capture_output=True, text=True, cwd=REPO, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert re.search(r"model tiny-llama-Q8_0 2\s+1 \(cpu-server\)", out), out
    assert current(lab) == before
    assert "tiny-llama-Q8_0-2" not in on_host(lab, "ls /var/lib/tierfleet/models/releases")


def test_upgrade_then_rollback(lab, converged, inventory):
    rc, out = deploy(inventory, "--data", "model_version=2")
    assert rc == 0, out
    assert current(lab) == "releases/tiny-llama-Q8_0-2"
    assert on_host(lab, "readlink /var/lib/tierfleet/models/previous") == "releases/tiny-llama-Q8_0-1"
    assert serving(lab).endswith("tiny-q8_0.gguf")
    rc, out = deploy(inventory, "--data", "model_version=2", deploy_file="deploys/rollback.py")
    assert rc == 0, out
    assert current(lab) == "releases/tiny-llama-Q8_0-1"
    assert on_host(lab, "curl -fsS http://127.0.0.1:8080/health") == '{"status":"ok"}'
    rc, out = deploy(inventory, "--data", "model_version=2", deploy_file="deploys/rollback.py")
    assert rc == 0 and grand_total(out)[:2] == (0, 0), out  # already rolled back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "model_version=9"), r"model manifest http://artifacts\.lab/artifacts/tiny-llama-Q8_0/9/manifest\.json: .*404"),
        (("--data", "model_version=3"), r"sha256"),
        (("--data", "artifact_store=http://artifacts.lab:81/artifacts"), r"runtime manifest http://artifacts\.lab:81/.*(refused|connect)"),
    ],
    ids=["missing-artifact", "checksum-mismatch", "unreachable-mirror"],
)
def test_bad_artifacts_fail_the_host_and_keep_the_release(lab, converged, inventory, args, message):
    before = current(lab)
    rc, out = deploy(inventory, *args)
    assert rc == 1
    assert re.search(message, out), out
    assert current(lab) == before
    assert serving(lab) == "/var/lib/tierfleet/models/current/tiny-q8_0.gguf"
    leftovers = on_host(lab, "ls /var/lib/tierfleet/models/releases; ls -A /var/lib/tierfleet/models/.staging 2>/dev/null")
    assert "tiny-llama-Q8_0-3" not in leftovers and "tiny-llama-Q8_0-9" not in leftovers


def test_full_disk_fails_the_host_and_keeps_the_release(lab, converged, inventory):
    before = current(lab)
    lab.fault("fill-disk", HOST)
    try:
        rc, out = deploy(inventory, "--data", "model_version=2", "--data", "keep_releases=2")
    finally:
        lab.clear()
    assert rc == 1
    assert re.search(r"(disk|space)", out, re.I), out
    assert current(lab) == before
    assert on_host(lab, "curl -fsS http://127.0.0.1:8080/health") == '{"status":"ok"}'


def test_unknown_tier_is_refused_before_anything_runs(lab, converged, inventory):
    rc, out = deploy(inventory, "--data", "tier=gold", deploy_file="deploys/preflight.py")
    assert rc == 1
    assert "tier: unknown tier 'gold'; allowed: auto, basic, advanced, enterprise" in out
