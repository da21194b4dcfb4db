"""Preflight across a fleet through pyinfra's real API and CLI: ``@fake`` hosts replaying recorded facts,
``@local`` for this machine, and the ``tierfleet`` CLI through click's CliRunner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fleets import fake_inventory
from tierfleet.cli import make_cli
from tierfleet.exceptions import InventoryError
from tierfleet.fleet import load_fleet, preflight_fleet

ROOT = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))

FLEET = {
    "orin": ("orin-nano", {"tier": "basic"}),
    "nano-adv": ("nano", {"tier": "advanced"}),
    "t4": ("gpu-t4", {}),
    "small": ("cpu-small", {"tier": "auto"}),
}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return fake_inventory(tmp_path / "fleet.py", FLEET)


def run_cli(*args: str):
    return CliRunner().invoke(make_cli(), list(args), catch_exceptions=False)


def test_preflight_fleet_over_fake_connector(inventory, catalog):
    results = preflight_fleet(load_fleet(str(inventory)), catalog, str(inventory))
    got = {r.verdict.host: (r.verdict.fits, r.verdict.tier) for r in results}
    assert got == {
        "@fake/orin": (True, "basic"),
        "@fake/nano-adv": (False, "advanced"),
        "@fake/t4": (True, "advanced"),
        "@fake/small": (False, None),
    }


def test_limit_and_unknown_limit(inventory, catalog):
    results = preflight_fleet(load_fleet(str(inventory), limit=("@fake/t4",)), catalog)
    assert [r.verdict.host for r in results] == ["@fake/t4"]
    with pytest.raises(InventoryError, match="--limit: no host or group named nope"):
        load_fleet(str(inventory), limit=("nope",))


def test_cli_preflight_json(inventory):
    result = run_cli("preflight", "-i", str(inventory), "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    hosts = {h["host"]: h for h in report["hosts"]}
    assert hosts["@fake/nano-adv"]["reason"] == "unified memory: needs 5.5 GB, has 4.2 GB; cores: needs 8, has 4"
    assert hosts["@fake/t4"]["requested"] == "auto" and hosts["@fake/t4"]["tier"] == "advanced"
    assert hosts["@fake/t4"]["profile"]["gpu_names"] == ["Tesla T4"]
    checks = {c["name"]: c for c in hosts["@fake/orin"]["checks"]}
    assert checks["unified memory"] == {
        "name": "unified memory", "required": ">= 3.5 GB", "actual": "8.0 GB", "ok": True, "note": ""}


def test_cli_preflight_table_and_exit_status(inventory):
    result = run_cli("preflight", "-i", str(inventory))
    assert result.exit_code == 1
    assert "REFUSED" in result.output and "auto -> advanced" in result.output
    assert "2 of 4 hosts fit their tier." in result.output
    ok = run_cli("preflight", "-i", str(inventory), "--limit", "@fake/orin", "--limit", "@fake/t4")
    assert ok.exit_code == 0 and "2 of 2 hosts fit their tier." in ok.output


def test_cli_data_override_and_bad_value(inventory):
    result = run_cli("preflight", "-i", str(inventory), "--limit", "@fake/t4", "--data", "tier=enterprise", "--json")
    assert json.loads(result.output)["hosts"][0]["reason"] == "cores: needs 16, has 8"
    bad = subprocess.run(
        [sys.executable, "-m", "tierfleet", "preflight", "-i", str(inventory), "--data", "tier=gold"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "fleet.py: host @fake/orin: tier: unknown tier 'gold'; allowed: auto, basic, advanced, enterprise" in bad.stderr


def test_cli_missing_inventory_and_bad_option(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "tierfleet", "preflight", "-i", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "nope.py: (file): no such inventory file" in missing.stderr
    assert run_cli("preflight").exit_code == 2
    assert run_cli("preflight", "-i", "x.py", "--data", "novalue").exit_code == 2


def test_cli_bad_catalog_exit_code(tmp_path, inventory):
    bad = tmp_path / "tiers.yaml"
    bad.write_text("schema: 1\ntiers: {}\n")
    result = subprocess.run([sys.executable, "-m", "tierfleet", "tiers", "--catalog", str(bad)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "tiers.yaml: tiers: dictionary should have at least 1 item" in result.stderr


def test_cli_tiers():
    result = run_cli("tiers", "--json")
    assert [t["name"] for t in json.loads(result.output)["tiers"]] == ["basic", "advanced", "enterprise"]
    table = run_cli("tiers")
    assert "DeepSeek-R1-Distill-Qwen-7B Q6_K" in table.output


@pytest.mark.parametrize("name", ["edge", "servers", "gpu_nodes"])
def test_example_inventories_validate(name, catalog):
    from tierfleet.fleet import settings_for

    state = load_fleet(str(ROOT / "inventory" / f"{name}.py"))
    settings = settings_for(state, catalog, name)
    assert settings and all(s.tier in ("auto", *catalog.names) for s in settings.values())
    assert all(h.data.get("ssh_user") == "deploy" for h in state.inventory)


def _pyinfra(inventory: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYINFRA, "-y", str(inventory), str(ROOT / "deploys" / "preflight.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **(env or {})},
    )


def test_plain_pyinfra_preflight_deploy_refuses_unfit_hosts(inventory):
    run = _pyinfra(inventory)
    assert run.returncode == 1
    out = run.stdout + run.stderr
    assert re.search(r"\[@fake/nano-adv\]\s+tierfleet: preflight refused: unified memory: needs 5.5 GB, has 4.2 GB; "
                     r"cores: needs 8, has 4", out)
    assert re.search(r"\[@fake/small\]\s+tierfleet: preflight refused: no tier fits", out)
    assert not re.search(r"\[@fake/(orin|t4)\]\s+tierfleet: preflight refused", out)


def test_plain_pyinfra_preflight_deploy_passes_when_all_fit(inventory):
    run = _pyinfra(inventory, "--limit", "@fake/orin,@fake/t4")
    assert run.returncode == 0, run.stdout + run.stderr


def _tiny_catalog(tmp_path: Path, **requires) -> Path:
    """The packaged catalog with basic's requirements (and model size) shrunk to fit any machine."""
    import yaml

    data = yaml.safe_load((ROOT / "tierfleet" / "data" / "tiers.yaml").read_text())
    basic = data["tiers"]["basic"]
    basic["requires"] = {"gpu_memory_gb": 0.001, "cores": 1, "ram_gb": 0.001, "unified_memory_gb": 0.001,
                         "disk_gb": 0.000001, **requires}
    basic["model"]["size_gb"] = 0.000001
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_local_host_for_real(tmp_path):
    """@local runs the real fact commands on this machine and reads what the kernel reports."""
    inv = tmp_path / "local.py"
    inv.write_text('hosts = [("@local", {"tier": "auto"})]\n')
    report = json.loads(run_cli("preflight", "-i", str(inv), "--json").output)["hosts"][0]
    profile = report["profile"]
    online = len(os.sched_getaffinity(0)) if os.path.exists("/proc/self/status") else os.cpu_count()
    assert 1 <= profile["physical_cores"] <= profile["logical_cpus"] and profile["logical_cpus"] >= online
    with open("/proc/meminfo") as meminfo:
        assert profile["ram_bytes"] == int(meminfo.readline().split()[1]) * 1024
    assert profile["disk_free_bytes"] > 0 and profile["disk_path"] == "/var/lib/tierfleet/models"

    env = {"TIERFLEET_CATALOG": str(_tiny_catalog(tmp_path))}
    run = _pyinfra(inv, "--data", "tier=basic", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    env = {"TIERFLEET_CATALOG": str(_tiny_catalog(tmp_path, cores=100_000))}
    run = _pyinfra(inv, "--data", "tier=basic", env=env)
    assert run.returncode == 1
    assert re.search(r"\[@local\]\s+tierfleet: preflight refused: cores: needs 100000, has \d+", run.stdout + run.stderr)


def test_platform_refusal_with_a_fleet_catalog(tmp_path, inventory):
    import yaml

    data = yaml.safe_load((ROOT / "tierfleet" / "data" / "tiers.yaml").read_text())
    data["tiers"]["basic"]["platforms"] = ["jetson"]
    (tmp_path / "tiers.yaml").write_text(yaml.safe_dump(data))
    result = run_cli("preflight", "-i", str(inventory), "--limit", "@fake/t4", "--data", "tier=basic",
                     "--catalog", str(tmp_path / "tiers.yaml"), "--json")
    host = json.loads(result.output)["hosts"][0]
    assert result.exit_code == 1 and host["reason"] == "platform gpu is not one of jetson"


def test_unreachable_host_is_reported_not_raised(tmp_path):
    """A real SSH connection to a loopback port where nothing listens: the host is refused, others go on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inv = fake_inventory(tmp_path / "inv.py", {"orin": ("orin-nano", {})})
    inv.write_text(inv.read_text() + f'hosts.append(("127.0.0.1", {{"ssh_port": {port}, "ssh_user": "nobody"}}))\n')
    result = run_cli("preflight", "-i", str(inv), "--connect-timeout", "3", "--json")
    hosts = {h["host"]: h for h in json.loads(result.output)["hosts"]}
    assert result.exit_code == 1
    assert hosts["@fake/orin"]["fits"] is True
    assert hosts["127.0.0.1"]["fits"] is False and hosts["127.0.0.1"]["reason"].startswith("unreachable: ")
    assert hosts["127.0.0.1"]["profile"] is None


def test_failing_fact_command_marks_the_host(tmp_path, catalog):
    responses = {"cat /proc/meminfo": {"success": False, "stderr": "sudo: a password is required"}}
    inv = fake_inventory(tmp_path / "inv.py", {"orin": ("orin-nano", {})})
    inv.write_text(inv.read_text() + "hosts[0][1]['fake_responses'] = "
                   f"{{**hosts[0][1]['fake_responses'], **{responses!r}}}\n")
    [result] = preflight_fleet(load_fleet(str(inv)), catalog, "inv")
    assert not result.verdict.fits
    assert result.verdict.reason == "unreachable: commands failed while reading facts"


def test_auto_on_gpu_node_without_driver_refuses(tmp_path, catalog):
    inv = fake_inventory(tmp_path / "inv.py", {"new": ("gpu-nodriver", {})})
    [result] = preflight_fleet(load_fleet(str(inv)), catalog, "inv")
    assert not result.verdict.fits and result.verdict.tier is None
    assert "GPU memory unverified until the driver is installed" in result.verdict.warnings


def test_limit_globs_and_comma_lists(inventory, catalog):
    hosts = [r.verdict.host for r in preflight_fleet(load_fleet(str(inventory), limit=("@fake/n*,@fake/t4",)), catalog)]
    assert hosts == ["@fake/nano-adv", "@fake/t4"]


def test_upgrade_shard_versions_are_checked_before_any_host_is_touched(inventory, tmp_path):
    state = tmp_path / "state.json"
    bad = subprocess.run(
        [sys.executable, "-m", "tierfleet", "upgrade", "-i", str(inventory), "--shard-version", "chat=2",
         "--state", str(state)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2, bad.stderr
    assert ("fleet.py: host @fake/orin: shard_versions: no shard 'chat' on this host; its shards: none (the host "
            "serves one model: use model_version)") in bad.stderr
    assert not state.exists()  # nothing started
    for value in ("chat", "chat=2,code=3", "=2"):
        res = run_cli("upgrade", "-i", str(inventory), "--shard-version", value, "--state", str(state))
        assert res.exit_code == 2 and "--shard-version" in res.output, (value, res.output)
    res = run_cli("upgrade", "-i", str(inventory), "--shard-version", "a=1", "--shard-version", "a=2")
    assert res.exit_code == 2 and "shard 'a' is given twice" in res.output


def test_upgrade_dry_run_shows_each_shards_release(tmp_path, monkeypatch):
    """A router host's row lists every shard's release now and wanted: a shard that names no version follows
    --model-version, one with its own version stays."""
    import tierfleet.status
    from tierfleet.status import HostStatus

    tiny = {"name": "tiny", "quant": "Q8_0", "file": "t.gguf", "size_gb": 0.0002}
    inv = fake_inventory(tmp_path / "fleet.py", {
        "router": ("cpu-small", {"tier": "basic", "shards": [{"name": "a", "model": tiny},
                                                              {"name": "b", "model": tiny, "version": "1"}]}),
        "plain": ("cpu-small", {"tier": "basic"}),
    })
    now = {"router": HostStatus(host="@fake/router", reachable=True, tier="basic", runtime_release="0.3.36+x",
                                shard_releases={"a": "tiny-Q8_0-1", "b": "tiny-Q8_0-1"}),
           "plain": HostStatus(host="@fake/plain", reachable=True, tier="basic", runtime_release="0.3.36+x",
                               model_release="DeepSeek-R1-Distill-Qwen-1.5B-Q8_0-2")}
    monkeypatch.setattr(tierfleet.status, "gather_status",
                        lambda fleet, *a, **k: [now[h.name.split("/")[-1]] for h in fleet.inventory])
    monkeypatch.setenv("COLUMNS", "200")
    res = run_cli("upgrade", "-i", str(inv), "--model-version", "2", "--dry-run",
                  "--runtime-version", "0.3.36", "--state", str(tmp_path / "state.json"))
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.output.splitlines() if "│" in ln]
    router = next(i for i, ln in enumerate(rows) if "@fake/router" in ln)
    cells = [c.strip() for c in rows[router].split("│")]
    assert cells[3:5] == ["a=tiny-Q8_0-1", "a=tiny-Q8_0-2"] and cells[-2] == "yes"
    assert [c.strip() for c in rows[router + 1].split("│")][3:5] == ["b=tiny-Q8_0-1", "b=tiny-Q8_0-1"]
    plain = [c.strip() for c in next(ln for ln in rows if "@fake/plain" in ln).split("│")]
    assert plain[3] == plain[4] == "DeepSeek-R1-Distill-Qwen-1.5B-Q8_0-2" and plain[-2] == "no"
    assert not (tmp_path / "state.json").exists()
