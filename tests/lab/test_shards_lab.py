"""Model shards deployed into lab hosts (real systemd, real SSH, the real llama-server and ops daemon):

- the CPU server serves three shards (one split into three files) in router mode behind the ops daemon's gate,
  with a budget for two: first-request loads, TTL unloads, LRU eviction, the pinned shard kept, every router
  child pinned by the unit's cgroup, the runtime SIGKILLed (systemd restarts it, the next request is served),
  a shard file damaged on the host (named in the answer; the others serve; the next deploy repairs it), a
  rerun that changes nothing, ``tierfleet status`` showing the shards, and a fleet energy policy rolled out
  that keeps them;
- the Jetson serves one shard with llama-server's own ``--sleep-idle-seconds``: it sleeps, wakes on the next
  request, and the daemon reports it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from tierfleet.lab.runner import grand_total, run_pyinfra
from tierfleet.lab.spec import address_block
from tierfleet.lab.system import wait_until

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CPU, JETSON = "cpu-server", "jetson-orin-nano"


def model(name: str, quant: str, file: str, size: int) -> dict:
    return {"name": name, "quant": quant, "file": file, "size_gb": size / 1e9}


@pytest.fixture(scope="module")
def shard_lab(tmp_path_factory):
    """A lab of a CPU server and a Jetson with the runtime, the ops daemon and three shard models published."""
    import os

    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
    from tierfleet.artifacts.llama_build import cached_runtime
    from tierfleet.artifacts.manifest import publish
    from tierfleet.lab.artifacts import publish_lab_artifacts, sign_lab_store
    from tierfleet.lab.fleet import Lab
    from tierfleet.lab.mirror import artifacts_dir

    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no cached llama-server: `make runtime` builds it")
    root = tmp_path_factory.mktemp("shard-lab")
    with address_block(180):
        lab = Lab(root)
        try:
            lab.up([(CPU, CPU), (JETSON, JETSON)])
            publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda _: None, lab_cache=lab.cache)
            store, work = artifacts_dir(lab.root), tmp_path_factory.mktemp("shard-models")
            files = {"a": write_tiny_gguf(work / "a" / "a.gguf", qtype="q8_0", seed=21),
                     "b": write_tiny_gguf(work / "b" / "b.gguf", qtype="f16", seed=22),
                     "c": write_tiny_gguf(work / "c" / "c.gguf", qtype="q8_0", seed=23, split_max_tensors=8)}
            models = {}
            for n, fs in files.items():
                quant = "F16" if n == "b" else "Q8_0"
                publish(store, fs, kind="model", name=f"shard-{n}-{quant}", version="1", compress=True, level=3)
                models[n] = model(f"shard-{n}", quant, fs[0].name, sum(f.stat().st_size for f in fs))
            # a's version 2 (other weights, same file name), for `tierfleet upgrade --shard-version a=2`
            publish(store, write_tiny_gguf(work / "a2" / "a.gguf", qtype="q8_0", seed=31), kind="model",
                    name="shard-a-Q8_0", version="2", compress=True, level=3)
            sign_lab_store(lab.root, log=lambda _: None, lab_cache=lab.cache)
            data = {
                # a's TTL is far longer than the test: it is evicted, never timed out (b's TTL 0 is the TTL case)
                CPU: {"shards": [{"name": "a", "model": models["a"], "ttl": "1h"},
                                 {"name": "b", "model": models["b"], "ttl": 0},
                                 {"name": "c", "model": models["c"], "pinned": True}],
                      # each tiny shard is estimated at ~70 MB with the advanced tier's context: room for two
                      "shard_memory_budget_gb": 0.15},
                JETSON: {"shards": [{"name": "solo", "model": models["a"], "ttl": "2s"}]},
            }
            inv = root / "inventory_shards.py"
            inv.write_text(INVENTORY.format(repo=str(REPO), data=data))
            yield lab, inv
        finally:
            lab.down()


INVENTORY = '''
import sys
sys.path.insert(0, {repo!r})
from tierfleet.lab.inventory import inventory_from_state
from tierfleet.lab.state import read_state_for_inventory

_root, _state = read_state_for_inventory()
_groups = inventory_from_state(_root, _state)
_data = {data!r}
cpu_servers = [(n, {{**d, **_data.get(n, {{}})}}) for n, d in _groups["cpu_servers"]]
jetson = [(n, {{**d, **_data.get(n, {{}})}}) for n, d in _groups["jetson"]]
'''


def deploy(lab, inv, host: str, tier: str) -> tuple[int, str]:
    run = run_pyinfra("-y", str(inv), f"deploys/tier_{tier}.py", "--limit", host, lab_dir=lab.root, timeout=600)
    return run.returncode, run.stdout


def sh(lab, host: str, command: str) -> str:
    return lab.exec(host, ["sh", "-c", command], capture=True).stdout.decode().strip()


def ask(lab, host: str, shard: str | None, path: str = "/v1/completions") -> tuple[int, dict]:
    body = json.dumps({"prompt": "the lab", "max_tokens": 4, **({"model": shard} if shard else {})})
    out = sh(lab, host, f"rm -f /tmp/answer; curl -s -m 120 -o /tmp/answer -w '%{{http_code}}' "
                        f"-H 'Content-Type: application/json' -d '{body}' http://127.0.0.1:8080{path}; "
                        "echo \" $?\"; cat /tmp/answer")
    first, _, text = out.partition("\n")
    code, curl_exit = first.split()
    return int(code), json.loads(text) if text.startswith("{") else {"curl_exit": int(curl_exit)}


def journal(lab, host: str) -> str:
    """The last lines of the runtime's and the ops daemon's journals (for failure messages)."""
    return sh(lab, host, "journalctl --no-pager -n 40 -u llama-server.service; "
                         "journalctl --no-pager -n 60 -u tierfleet-ops.service")


def daemon(lab, host: str) -> dict:
    return json.loads(sh(lab, host, "/opt/tierfleet-ops/venv/bin/tierfleet-ops status --json") or "{}")


def shards(lab, host: str) -> dict[str, dict]:
    return {s["name"]: s for s in daemon(lab, host).get("shards", [])}


def test_router_shards_on_the_cpu_server(shard_lab, tmp_path):
    lab, inv = shard_lab
    code, out = deploy(lab, inv, CPU, "advanced")
    assert code == 0, out[-5000:]
    unit = sh(lab, CPU, "systemctl cat llama-server.service")
    argv = shlex.split(next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))[len("ExecStart="):])
    assert argv[-6:] == ["--models-preset", "/etc/tierfleet/shards.ini", "--models-max", "3", "--no-models-autoload",
                         "--metrics"] and argv[argv.index("--port") + 1] == "8081"
    assert "[c]\nmodel = /var/lib/tierfleet/models/shards/c/current/c-00001-of-00003.gguf\nload-on-startup = true" \
        in sh(lab, CPU, "cat /etc/tierfleet/shards.ini")
    st = wait_until(lambda: (s := shards(lab, CPU)) and s["c"]["state"] == "loaded" and s, timeout=60)
    assert st["c"]["pinned"] and st["a"]["state"] == "unloaded"

    code, body = ask(lab, CPU, "a")
    assert code == 200 and body["usage"]["completion_tokens"] > 0
    code, body = ask(lab, CPU, "b")  # c is pinned: a (idle) makes room
    assert code == 200, body
    st = wait_until(lambda: (s := shards(lab, CPU)) and s["b"]["unloads"] >= 1 and s, timeout=60)  # ttl 0
    assert st["a"]["evictions"] == 1 and st["c"]["state"] == "loaded" and st["c"]["evictions"] == 0
    assert st["a"]["wake_s"]["count"] == 1 and st["a"]["loads"] == 1

    # every process and thread of the runtime, the router's children included, on the inference CPUs
    assert ask(lab, CPU, "a")[0] == 200
    want = daemon(lab, CPU)["placement"]["inference"]

    def pinned() -> bool:
        masks = sh(lab, CPU, "for p in $(systemctl show -p MainPID --value llama-server.service) "
                             "$(pgrep -P $(systemctl show -p MainPID --value llama-server.service)); do "
                             "for t in /proc/$p/task/*; do taskset -pc ${t##*/} | sed 's/.*: //'; done; done")
        return bool(masks) and set(masks.split()) == {want} and len(masks.split()) > 8

    assert wait_until(pinned, timeout=30), want

    # the runtime killed while shards are loaded: systemd restarts it, the next request is served
    sh(lab, CPU, "systemctl kill -s KILL llama-server.service")
    code, body = ask(lab, CPU, "a")
    assert code == 200, (code, body, journal(lab, CPU))
    assert wait_until(lambda: shards(lab, CPU).get("c", {}).get("state") == "loaded", timeout=60)

    # a shard file damaged on the host: named in the answer, the others keep serving
    path = "/var/lib/tierfleet/models/shards/b/current/b.gguf"
    size = int(sh(lab, CPU, f"stat -c %s {path}"))
    sh(lab, CPU, f"truncate -s 1000 {path}")
    code, body = ask(lab, CPU, "b")
    assert code == 503 and body["error"]["message"] == \
        f"shard b failed to load: {path}: 1000 bytes, published with {size}"
    assert ask(lab, CPU, "c")[0] == 200
    # the next deploy sees the release damaged, fetches it again, and b serves
    code, out = deploy(lab, inv, CPU, "advanced")
    assert code == 0, out[-4000:]
    assert ask(lab, CPU, "b")[0] == 200

    # converged: a rerun changes nothing
    code, out = deploy(lab, inv, CPU, "advanced")
    total = grand_total(out)
    assert code == 0 and total["success"] == 0 and total["error"] == 0 and total["no_change"] > 20, out[-4000:]

    # the control side's fleet status shows them
    status = run_pyinfra_status(lab, inv)
    row = next(h for h in status if h["host"] == CPU)
    assert {s["name"]: s["state"] for s in row["shards"]}["c"] == "loaded"

    # a fleet energy policy rolled out keeps the host's shards: the same section, the gate still serving
    before = yaml.safe_load(sh(lab, CPU, "cat /etc/tierfleet-ops/policy.yaml"))
    rc, report, out = policy_rollout(lab, inv, tmp_path)
    assert rc == 0 and report["hosts"][CPU]["status"] == "ok", out[-3000:]
    after = yaml.safe_load(sh(lab, CPU, "cat /etc/tierfleet-ops/policy.yaml"))
    assert after["shards"] == before["shards"] and "metrics_url" not in after["runtime"]
    assert daemon(lab, CPU)["policy"]["hash"] == report["hosts"][CPU]["after"]["policy"]
    assert ask(lab, CPU, "a")[0] == 200 and shards(lab, CPU)["c"]["state"] == "loaded"

    # one shard upgraded through the rollout: a moves to version 2, b and c stay where they are
    rc, report, out = upgrade(lab, inv, tmp_path, "--shard-version", "a=2")
    assert rc == 0 and report["hosts"][CPU]["status"] == "ok", out[-3000:]
    current = {n: sh(lab, CPU, f"readlink /var/lib/tierfleet/models/shards/{n}/current") for n in "abc"}
    assert [v.rsplit("/", 1)[-1] for v in current.values()] == ["shard-a-Q8_0-2", "shard-b-F16-1", "shard-c-Q8_0-1"]
    assert ask(lab, CPU, "a")[0] == 200 and ask(lab, CPU, "b")[0] == 200


def upgrade(lab, inv, tmp_path, *args: str) -> tuple[int, dict | None, str]:
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("tierfleet"))
    report = tmp_path / "upgrade.json"
    run = subprocess.run([exe, "upgrade", "-i", str(inv), "--limit", CPU, *args, "--state",
                          str(tmp_path / "upgrade-state.json"), "--report", str(report), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=900,
                         env=dict(os.environ, TIERFLEET_LAB_DIR=str(lab.root)))
    return run.returncode, json.loads(report.read_text()) if report.exists() else None, run.stdout + run.stderr


def policy_rollout(lab, inv, tmp_path) -> tuple[int, dict | None, str]:
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("tierfleet"))
    report = tmp_path / "report.json"
    run = subprocess.run([exe, "policy", "rollout", str(REPO / "inventory" / "policies" / "energy.yaml"), "-i",
                          str(inv), "--limit", CPU, "--state", str(tmp_path / "state.json"), "--report", str(report),
                          "--json"], capture_output=True, text=True, cwd=REPO, timeout=900,
                         env=dict(os.environ, TIERFLEET_LAB_DIR=str(lab.root)))
    return run.returncode, json.loads(report.read_text()) if report.exists() else None, run.stdout + run.stderr


def run_pyinfra_status(lab, inv) -> list[dict]:
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("tierfleet"))
    out = subprocess.run([exe, "status", "-i", str(inv), "--json", "--limit", CPU], capture_output=True, text=True,
                         env=dict(os.environ, TIERFLEET_LAB_DIR=str(lab.root)), timeout=120, cwd=REPO)
    return json.loads(out.stdout)["hosts"]


def test_one_shard_sleeps_with_llama_server_and_wakes_on_the_next_request(shard_lab):
    lab, inv = shard_lab
    code, out = deploy(lab, inv, JETSON, "basic")
    assert code == 0, out[-5000:]
    assert "--sleep-idle-seconds 2" in sh(lab, JETSON, "systemctl cat llama-server.service")
    assert ask(lab, JETSON, None, "/completion")[0] == 200

    def props_sleeping() -> bool:
        return json.loads(sh(lab, JETSON, "curl -s http://127.0.0.1:8080/props") or "{}").get("is_sleeping") is True

    assert wait_until(props_sleeping, timeout=30)
    st = wait_until(lambda: (s := shards(lab, JETSON)) and s["solo"]["state"] == "sleeping" and s, timeout=30)
    assert st["solo"]["unloads"] >= 1
    assert daemon(lab, JETSON)["signals"]["model_loaded"] is False  # asleep: the idle profile's signal
    assert ask(lab, JETSON, None, "/completion")[0] == 200  # wakes on the request
    assert wait_until(lambda: shards(lab, JETSON)["solo"]["loads"] >= 1, timeout=30)
