"""molecule verify: what the tier deploy promises on every host that fits, checked over the lab's SSH.

testinfra runs these once per host of molecule's inventory (the scenario's platforms).
"""

import json

RUNTIME_ROOT = "/opt/tierfleet/runtime"
MODEL_ROOT = "/var/lib/tierfleet/models"
OPS_ROOT = "/opt/tierfleet/ops"
OPS_CLI = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"


def test_llama_server_unit_is_active_and_enabled(host):
    unit = host.service("llama-server")
    assert unit.is_running
    assert unit.is_enabled


def test_health_endpoint_answers_ok(host):
    out = host.check_output("curl -sf http://127.0.0.1:8080/health")
    assert json.loads(out)["status"] == "ok"


def test_a_completion_is_served(host):
    body = json.dumps({"prompt": "The lab", "n_predict": 4})
    out = host.check_output("curl -sf -X POST -H 'Content-Type: application/json' -d %s "
                            "http://127.0.0.1:8080/completion", body)
    assert json.loads(out)["tokens_predicted"] > 0


def test_current_links_point_at_installed_releases(host):
    for root in (RUNTIME_ROOT, MODEL_ROOT, OPS_ROOT):
        current = host.file(f"{root}/current")
        assert current.is_symlink, root
        target = current.linked_to
        assert target.startswith(f"{root}/releases/"), (root, target)
        assert host.file(f"{target}/manifest.json").is_file, target


def test_the_running_server_uses_the_current_releases(host):
    pid = host.check_output("systemctl show -p MainPID --value llama-server")
    exe = host.check_output("readlink -f /proc/%s/exe", pid)
    assert exe.startswith(host.file(f"{RUNTIME_ROOT}/current").linked_to + "/"), exe
    environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid).splitlines()
    model = next(line.split("=", 1)[1] for line in environ if line.startswith("LLAMA_ARG_MODEL="))
    assert model.startswith(host.file(f"{MODEL_ROOT}/current").linked_to + "/"), model


def test_ops_daemon_is_active_and_reports_its_policy(host):
    assert host.service("tierfleet-ops").is_running
    status = json.loads(host.check_output(f"{OPS_CLI} status --json"))
    assert status["policy"]["error"] is None
    assert len(status["policy"]["hash"]) == 12
    assert status["profile"] in ("eco", "balanced", "performance")
    assert status["pinning"]["threads"] > 0
