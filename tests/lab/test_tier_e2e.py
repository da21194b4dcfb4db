"""The tier deploy end to end on the lab's CPU server: converge, rerun, ops daemon, upgrade, rollback, and
each bad input (unknown tier, missing artifact, checksum mismatch, full disk, unreachable mirror) leaving the
previous release serving."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tierfleet.lab.runner import grand_total, run_pyinfra
from tierfleet.lab.system import wait_until

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOST = "cpu-server"


@pytest.fixture(scope="module")
def store(lab, tmp_path_factory):
    """The lab's artifacts (runtime, ops wheels, tiny model 1) plus tiny-model versions 2 to 7: 3 is corrupted
    in the store, 4 is only ever tried on a full disk, 5 verifies but does not load, 6 is not signed, 7 is
    signed by a key the inventory does not pin."""
    from tests.gpgkeys import make_key
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
    from tierfleet.artifacts.llama_build import cached_runtime
    from tierfleet.artifacts.manifest import publish
    from tierfleet.artifacts.signing import sign_file
    from tierfleet.lab.artifacts import publish_lab_artifacts, sign_lab_store
    from tierfleet.lab.mirror import artifacts_dir

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no cached llama-server: `make runtime` builds it")
    publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda _: None)
    store = artifacts_dir(lab.root)
    work = tmp_path_factory.mktemp("models")
    for version, seed in (("2", 2), ("3", 3), ("4", 4)):
        files = write_tiny_gguf(work / version / "tiny-q8_0.gguf", qtype="q8_0", seed=seed)
        publish(store, files, kind="model", name="tiny-llama-Q8_0", version=version, compress=False)
    # version 5: checksums right, but not a model llama-server can load
    (work / "5").mkdir()
    (work / "5" / "tiny-q8_0.gguf").write_bytes(b"GGUF" + bytes(4096))
    publish(store, [work / "5" / "tiny-q8_0.gguf"], kind="model", name="tiny-llama-Q8_0", version="5", compress=False)
    bad = store / "tiny-llama-Q8_0" / "3" / "tiny-q8_0.gguf"
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    sign_lab_store(lab.root, log=lambda _: None, lab_cache=lab.cache)
    for version, seed in (("6", 6), ("7", 7)):  # after the lab signed its store
        files = write_tiny_gguf(work / version / "tiny-q8_0.gguf", qtype="q8_0", seed=seed)
        publish(store, files, kind="model", name="tiny-llama-Q8_0", version=version, compress=False)
    (store / "tiny-llama-Q8_0" / "6" / "manifest.json.sig").unlink(missing_ok=True)
    other, _, _ = make_key(work / "other-gnupg", "not the fleet <x@tierfleet.invalid>")
    sign_file(store / "tiny-llama-Q8_0" / "7" / "manifest.json", other)
    return store


@pytest.fixture(scope="module")
def inventory(lab):
    """The lab's own inventory: it carries every key the tier deploy needs."""
    return REPO / "inventory" / "lab.py"


def deploy(inventory: Path, *args: str, deploy_file: str = "deploys/tier_advanced.py"):
    run = run_pyinfra("-y", str(inventory), deploy_file, "--limit", HOST, *args)
    return run.returncode, run.stdout


def changed(out: str) -> tuple[int, int]:
    """(success, error) from pyinfra's results table: (0, 0) when nothing changed."""
    total = grand_total(out)
    return total["success"], total["error"]


def on_host(lab, command: str) -> str:
    return lab.exec(HOST, ["sh", "-c", command], capture=True).stdout.decode().strip()


def serving(lab) -> str:
    """The model release llama-server answers with (from a real completion: its model file's path)."""
    body = on_host(lab, "curl -fsS -d '{\"prompt\": \"Hello\", \"n_predict\": 4}' http://127.0.0.1:8080/completion")
    path = json.loads(body)["model"]
    assert path.startswith("/var/lib/tierfleet/models/releases/") and path.endswith("/tiny-q8_0.gguf"), path
    return path.split("/")[-2]


def eventually(lab, command: str, expected: str, timeout: float = 20.0) -> str:
    """Run ``command`` on the host until it prints ``expected`` (the daemon acts on its next tick)."""
    got = ""

    def done() -> bool:
        nonlocal got
        got = on_host(lab, command)
        return got == expected

    wait_until(done, timeout=timeout, interval=0.5)
    return got


def current(lab, root: str = "/var/lib/tierfleet/models") -> str:
    return on_host(lab, f"readlink {root}/current")


@pytest.fixture(scope="module")
def converged(lab, store, inventory):
    rc, out = deploy(inventory)
    assert rc == 0, out
    return out


def test_first_converge_serves_and_rerun_changes_nothing(lab, converged, inventory):
    success, error = changed(converged)
    assert success > 0 and error == 0
    assert on_host(lab, "curl -fsS http://127.0.0.1:8080/health") == '{"status":"ok"}'
    assert serving(lab) == "tiny-llama-Q8_0-1"
    assert current(lab) == "releases/tiny-llama-Q8_0-1"
    rc, out = deploy(inventory)
    assert rc == 0 and changed(out) == (0, 0), out


def test_service_is_unprivileged_hardened_and_pinned(lab, converged):
    user = on_host(lab, "ps -o user= -C llama-server")
    assert user.startswith("tierfleet")
    unit = on_host(lab, "systemctl show llama-server -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp")
    assert sorted(unit.splitlines()) == ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                                         "ProtectSystem=strict"]
    from tierfleet.facts._util import parse_cpu_list

    unit_cpus = on_host(lab, "systemctl show -p CPUAffinity --value llama-server").split()
    allowed = on_host(lab, "grep Cpus_allowed_list /proc/$(pgrep -o llama-server)/status").split()[-1]
    threads = int(re.search(r"--threads (\d+)", on_host(lab, "ps -o args= -C llama-server")).group(1))
    from tierfleet.facts.cpu import CpuTopology
    from tierfleet.placement import place

    topology = CpuTopology().process(on_host(lab, CpuTopology().command()).splitlines())
    kernel = parse_cpu_list(on_host(lab, "grep Cpus_allowed_list /proc/1/status").split()[-1])
    expected = place(topology, kernel)
    # the dressed 16-core topology cut down to the CPUs the kernel really gives the host
    assert unit_cpus and parse_cpu_list(allowed) == [int(c) for c in unit_cpus] == list(expected.cpus)
    assert threads == expected.threads and not set(expected.reserved) & set(expected.cpus)


def test_ops_daemon_applies_profiles_and_restores_on_stop(lab, converged):
    cli = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
    gov = "cat /sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    assert on_host(lab, "systemctl is-active tierfleet-ops") == "active"
    status = json.loads(on_host(lab, f"{cli} status --json"))
    assert status["pinning"]["threads"] > 0 and status["pinning"]["pids"]
    on_host(lab, f"{cli} profile hold performance")
    assert eventually(lab, gov, "performance") == "performance"
    # recorded (and persisted) before the daemon's first write to it
    original = json.loads(on_host(lab, f"{cli} status --json"))["originals"]
    assert original["cpufreq.policy0.scaling_governor"] in ("powersave", "performance")
    on_host(lab, f"{cli} profile hold eco")
    assert eventually(lab, gov, "powersave") == "powersave"
    # leave the governor at the value that differs from the original, so the restore is visible
    other = "performance" if original["cpufreq.policy0.scaling_governor"] == "powersave" else "eco"
    on_host(lab, f"{cli} profile hold {other}")
    assert eventually(lab, gov, "performance" if other == "performance" else "powersave") != \
        original["cpufreq.policy0.scaling_governor"]
    on_host(lab, "systemctl stop tierfleet-ops")
    try:
        assert on_host(lab, gov) == original["cpufreq.policy0.scaling_governor"]
    finally:
        on_host(lab, "systemctl start tierfleet-ops")


def test_energy_report_reads_what_the_deployed_daemon_recorded(lab, converged, inventory, tmp_path):
    """The daemon the tier deploy installed writes its energy records in its state directory (inside its unit's
    sandbox); ``tierfleet report energy`` fetches them over SSH and finds a switch forced here in them."""
    from tierfleet.fleet import load_fleet
    from tierfleet.report import RECORDS, gather_records, summarise

    cli = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
    gov = "cat /sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    on_host(lab, f"{cli} profile hold eco")
    assert eventually(lab, gov, "powersave") == "powersave"
    on_host(lab, f"{cli} profile hold performance")
    assert eventually(lab, gov, "performance") == "performance"
    # the switch record, then at once the sample that opens the profile's time
    wait_until(lambda: '"profile":"performance"' in on_host(lab, f"tail -n 1 {RECORDS}"), timeout=20, interval=0.5)
    on_host(lab, f"{cli} profile release")
    assert on_host(lab, f"stat -c '%a %U' {RECORDS} $(dirname {RECORDS})") == "600 root\n700 root"

    [series] = gather_records(load_fleet(str(inventory), limit=(HOST,)))
    assert series.error is None and series.host == HOST
    held = [s for s in series.switches if s.reason == "held"]
    assert (held[-2].to_profile, held[-1].from_profile, held[-1].to_profile) == ("eco", "eco", "performance")
    starts = [s for s in series.switches if s.from_profile is None and s.reason == "start"]  # each daemon start
    assert starts
    after = [s for s in series.samples if s.t >= held[-1].t]
    assert after and after[0].profile == "performance"
    # the dressed host has RAPL: every sample carries its package energy counter, and its power from two
    # readings on (the first sample after a start has none yet)
    assert all(s.energy_j is not None for s in series.samples), series.samples[:5]
    assert sum(s.power_w is None for s in series.samples) <= len(starts), series.samples[:5]

    # the report charges each interval to its first sample's profile: wait for a sample after the one that opened
    # performance (the next periodic one, or the switch the release made), so performance has time to show
    def closed() -> bool:
        [now] = gather_records(load_fleet(str(inventory), limit=(HOST,)))
        return len([x for x in now.samples if x.t >= held[-1].t]) >= 2

    wait_until(closed, timeout=60, interval=2)
    [final] = gather_records(load_fleet(str(inventory), limit=(HOST,)))
    profiles = set(summarise(final))
    assert "performance" in profiles, final.samples[-5:]
    tierfleet = str(Path(sys.executable).with_name("tierfleet"))
    out = tmp_path / "energy.html"
    run = subprocess.run([tierfleet, "report", "energy", "-i", str(inventory), "--limit", HOST, "-o", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0 and f"{out}: 1 of 1 hosts had records" in run.stdout, run.stdout + run.stderr
    page = out.read_text()
    # one row per profile the records gave time to before the report ran (rows only ever grow)
    for profile in profiles:
        assert f"<td>{HOST}</td><td>{profile}</td>" in page, (profile, page[-2000:])


def test_dry_run_shows_the_plan_and_changes_nothing(lab, converged, inventory):
    before = current(lab)
    run = run_pyinfra("--dry", str(inventory), "deploys/tier_advanced.py", "--limit", HOST,
                      "--data", "model_version=2")
    out = run.stdout
    assert run.returncode == 0, out
    assert re.search(r"model tiny-llama-Q8_0 2\s+1 \(cpu-server\)", out), out
    assert current(lab) == before
    assert "tiny-llama-Q8_0-2" not in on_host(lab, "ls /var/lib/tierfleet/models/releases")


def test_upgrade_then_rollback(lab, converged, inventory):
    rc, out = deploy(inventory, "--data", "model_version=2")
    assert rc == 0, out
    assert current(lab) == "releases/tiny-llama-Q8_0-2"
    assert on_host(lab, "readlink /var/lib/tierfleet/models/previous") == "releases/tiny-llama-Q8_0-1"
    assert serving(lab) == "tiny-llama-Q8_0-2"
    rc, out = deploy(inventory, "--data", "model_version=2", deploy_file="deploys/rollback.py")
    assert rc == 0, out
    assert current(lab) == "releases/tiny-llama-Q8_0-1"
    assert serving(lab) == "tiny-llama-Q8_0-1"
    rc, out = deploy(inventory, "--data", "model_version=2", deploy_file="deploys/rollback.py")
    assert rc == 0 and changed(out) == (0, 0), out  # already rolled back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "model_version=9"), r"model manifest http://artifacts\.lab/artifacts/tiny-llama-Q8_0/9/manifest\.json: .*404"),
        (("--data", "model_version=3"), r"sha256"),
        (("--data", "artifact_store=http://artifacts.lab:81/artifacts"), r"runtime manifest http://artifacts\.lab:81/.*(refused|connect)"),
        (("--data", "model_version=6"),
         r"model manifest http://artifacts\.lab/artifacts/tiny-llama-Q8_0/6/manifest\.json: unsigned: no signature at "
         r"http://artifacts\.lab/artifacts/tiny-llama-Q8_0/6/manifest\.json\.sig"),
        (("--data", "model_version=7"),
         r"model manifest .*/7/manifest\.json: bad signature: .*/7/manifest\.json\.sig does not verify with the "
         r"pinned artifact_key"),
    ],
    ids=["missing-artifact", "checksum-mismatch", "unreachable-mirror", "unsigned", "signed-by-another-key"],
)
def test_bad_artifacts_fail_the_host_and_keep_the_release(lab, converged, inventory, args, message):
    before = current(lab)
    rc, out = deploy(inventory, *args)
    assert rc == 1
    assert re.search(message, out), out
    assert current(lab) == before
    assert serving(lab) == before.split("/")[-1]
    leftovers = on_host(lab, "ls /var/lib/tierfleet/models/releases; ls -A /var/lib/tierfleet/models/.staging 2>/dev/null")
    for version in ("3", "6", "7", "9"):
        assert f"tiny-llama-Q8_0-{version}" not in leftovers


def test_full_disk_fails_the_host_and_keeps_the_release(lab, converged, inventory):
    before = current(lab)
    lab.fault("fill-disk", HOST)
    try:
        rc, out = deploy(inventory, "--data", "model_version=4")
    finally:
        lab.clear()
    assert rc == 1
    assert re.search(r"(disk|space)", out, re.I), out
    assert current(lab) == before
    assert on_host(lab, "curl -fsS http://127.0.0.1:8080/health") == '{"status":"ok"}'


def test_model_that_does_not_load_is_rolled_back_by_the_health_gate(lab, converged, inventory):
    before = current(lab)
    rc, out = deploy(inventory, "--data", "model_version=5", "--data", "health_timeout=8")
    assert rc == 1
    assert "tierfleet: health gate failed" in out, out
    assert current(lab) == before
    assert serving(lab) == before.split("/")[-1]
    assert on_host(lab, "readlink /opt/tierfleet/runtime/current").startswith("releases/0.3.36+")


def test_unknown_tier_is_refused_before_anything_runs(lab, converged, inventory):
    rc, out = deploy(inventory, "--data", "tier=gold", deploy_file="deploys/preflight.py")
    assert rc == 1
    assert "tier: unknown tier 'gold'; allowed: auto, basic, advanced, enterprise" in out


def status(inventory: Path, *args: str) -> tuple[int, dict]:
    tierfleet = str(Path(sys.executable).with_name("tierfleet"))
    run = subprocess.run([tierfleet, "status", "-i", str(inventory), "--limit", HOST, "--json", *args],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    return run.returncode, json.loads(run.stdout)


def test_status_shows_the_converged_host(lab, converged, inventory):
    rc, data = status(inventory)
    [host] = data["hosts"]
    assert rc == 0 and data["ok"], data
    assert host["healthy"] and host["runtime_health"] == "ok" and host["platform"] == "cpu"
    assert host["model_release"] == current(lab).split("/")[-1]
    assert host["runtime_release"].startswith("0.3.36+")
    assert host["profile"] in ("eco", "balanced", "performance") and re.fullmatch(r"[0-9a-f]{12}", host["policy"])


def test_status_reports_a_blackholed_host_within_its_time_limit(lab, converged, inventory):
    lab.fault("blackhole", HOST)
    try:
        rc, data = status(inventory, "--timeout", "5")
    finally:
        lab.clear()
    [host] = data["hosts"]
    assert rc == 1 and not data["ok"]
    assert not host["reachable"] and not host["healthy"] and host["error"], host
