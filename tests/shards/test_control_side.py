"""Shards on the control side: durations, inventory and catalog data, GGUF figures in the signed manifest, the
memory estimate against what llama-server really takes, and what the deploy renders (preset, unit, policy)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import jinja2
import psutil
import pytest

from tierfleet.artifacts.gguf_tiny import write_sized_gguf
from tierfleet.artifacts.manifest import load_manifest, parse_manifest, publish
from tierfleet.catalog import load_catalog, parse_catalog
from tierfleet.deploys.shards import PRESET_PATH, shard_plan
from tierfleet.exceptions import ConfigError, InventoryError
from tierfleet.facts.ops import OpsPolicyShards
from tierfleet.fleet_policy import host_policy, read_fleet_policy
from tierfleet.lab.system import wait_until
from tierfleet.settings import host_settings
from tierfleet.shards import PresetShard, estimate_memory, gguf_info, parse_duration, render_preset
from tierfleet_ops.policy import parse_policy

from ..gpgkeys import make_key
from .conftest import RUNTIME, complete, free_port, needs_runtime

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
TINY = {"name": "tiny", "quant": "Q8_0", "file": "t.gguf", "size_gb": 0.0002}


@pytest.mark.parametrize("value,seconds", [
    ("5m", 300.0), ("1h30m", 5400.0), ("90s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (0, 0.0), ("0", 0.0),
    (-1, -1.0), ("-1", -1.0), ("-5m", -1.0), (120, 120.0), ("1.5h", 5400.0), (" 10m ", 600.0),
])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "m", "5 m", "5min", "1d", "inf", "nan", float("nan"), True, None, [5],
                                   "5m; reboot", "31d", 10**9])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_inventory_shards_errors_name_the_host_and_key():
    cat = load_catalog()
    ok = host_settings({"shards": [{"name": "chat", "model": TINY, "ttl": "10m", "preload": True},
                                   {"name": "embed", "model": TINY, "pinned": True}]}, cat, "inv.py: host a")
    assert [s.ttl_s for s in ok.shards] == [600.0, -1.0]
    assert host_settings({}, cat, "inv.py: host a").shards is None  # nothing opts in: one model as before
    for data, key, problem in [
        ([{"name": "a\n[x]", "model": TINY}], "shards.0.name", "is not a shard name"),
        ([{"name": "a", "model": TINY, "ttl": "soon"}], "shards.0.ttl", "is not a duration"),
        ([{"name": "a", "model": TINY, "pinned": True, "ttl": "5m"}], "shards.0", "pinned (never unloaded)"),
        ([{"name": "a", "model": TINY}, {"name": "a", "model": TINY}], "shards[1].name", "listed twice"),
        ([{"name": "a", "model": TINY, "context_size": 0}], "shards.0.context_size", "greater than 0"),
        ([{"name": "a"}], "shards.0.model", "missing"),
        ([{"name": "a", "model": TINY, "keep_alive": 1}], "shards.0.keep_alive", "extra inputs"),
        ([{"name": "a", "model": TINY, "warmup": "maybe"}], "shards.0.warmup", "valid boolean"),
        ([{"name": "a", "model": TINY, "repack": 2}], "shards.0.repack", "valid boolean"),
        ([{"name": "a", "model": {**TINY, "name": "m" * 120}, "version": "2026.11.1"}], "shards.0",
         "shard a: the release id <name>-<quant>-<version> is 135 characters"),
    ]:
        with pytest.raises(InventoryError) as err:
            host_settings({"shards": data}, cat, "inv.py: host a")
        assert (err.value.source, err.value.key) == ("inv.py: host a", key) and problem in err.value.problem
    with pytest.raises(InventoryError, match="shard_memory_budget_gb"):
        host_settings({"shard_memory_budget_gb": -1}, cat, "inv.py: host a")


def test_catalog_tier_shards():
    text = Path(load_catalog().source).read_text()
    cat = parse_catalog(text.replace("    reserved_cores: 2\n  advanced:", "    reserved_cores: 2\n    shards:\n"
                                     "      - {name: chat, model: {name: m, quant: Q8_0, file: m.gguf, size_gb: 1}}\n"
                                     "  advanced:", 1), "tiers.yaml")
    assert [s.name for s in cat.tier("basic").shards] == ["chat"] and cat.tier("advanced").shards == ()
    with pytest.raises(ConfigError, match="tiers.yaml: tiers.basic.shards: .*listed twice"):
        parse_catalog(text.replace("    reserved_cores: 2\n  advanced:", "    reserved_cores: 2\n    shards:\n"
                                   "      - {name: c, model: {name: m, quant: Q, file: m.gguf, size_gb: 1}}\n"
                                   "      - {name: c, model: {name: m, quant: Q, file: m.gguf, size_gb: 1}}\n"
                                   "  advanced:", 1), "tiers.yaml")


def test_gguf_figures_are_the_same_for_one_file_and_its_split(tiny_models, tmp_path):
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf

    one = gguf_info(write_tiny_gguf(tmp_path / "one.gguf", qtype="q8_0", seed=13))
    split_files = tiny_models["c"]
    split = gguf_info(list(reversed(split_files)))  # any order: the metadata is in the first file
    assert split["files"] == 3 and one["files"] == 1
    assert {k: v for k, v in split.items() if k != "files"} == {k: v for k, v in one.items() if k != "files"}
    assert split["n_layer"] == 2 and split["k_dim"] == 32 and split["n_vocab"] == 548
    assert one["tensor_bytes"] < sum(p.stat().st_size for p in split_files)  # headers and padding are not weights
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        gguf_info([Path(__file__)])


@pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("gpgv") is None, reason="needs gpg and gpgv")
def test_published_figures_are_signed_with_the_manifest(tiny_models, tmp_path):
    from tierfleet.artifacts.signing import sign_store, verify_file

    m = publish(tmp_path / "store", tiny_models["c"], kind="model", name="c-Q8_0", version="1")
    assert m.extra["gguf"] == gguf_info(tiny_models["c"])
    home, armored, fpr = make_key(tmp_path / "key")
    sign_store(tmp_path / "store", armored, gnupghome=home)
    path = tmp_path / "store/c-Q8_0/1/manifest.json"
    assert verify_file(path, armored) == fpr
    doc = json.loads(path.read_text())
    doc["extra"]["gguf"]["tensor_bytes"] = 1  # a smaller estimate, to squeeze a shard in
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="signature"):
        verify_file(path, armored)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    m2 = publish(tmp_path / "store", [broken], kind="model", name="broken", version="1")
    assert "gguf" not in m2.extra and "not a readable GGUF" in m2.extra["gguf_error"]


@needs_runtime
def test_the_estimate_covers_what_llama_server_really_takes(tmp_path):
    """A 60 MB model on CPU: the resident memory of a llama-server that loaded it and answered stays within the
    estimate, which is not wildly above it either."""
    import subprocess

    from .conftest import http

    model = write_sized_gguf(tmp_path / "m.gguf", 60 * 10**6, seed=7)
    est = estimate_memory(gguf_info([model]), 512, 1, "cpu", 0)
    port = free_port()
    proc = subprocess.Popen([str(RUNTIME.server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                             "-c", "512", "-np", "1", "-t", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: http(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200, timeout=60)
        assert http(f"http://127.0.0.1:{port}/v1/completions", {"prompt": "the fleet", "max_tokens": 32})[0] == 200
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(20)
    assert rss <= est.budget_bytes <= 3 * rss, (rss, est)


def test_preset_refuses_what_could_break_out_of_a_value():
    for bad in (PresetShard("a", "/m/a.gguf\n[evil]\nmodel = /etc/shadow"), PresetShard("a", "/m/a b.gguf"),
                PresetShard("a;b", "/m/a.gguf"), PresetShard("a", "/m/a.gguf;x")):
        with pytest.raises(ConfigError):
            render_preset([bad], threads=1, context_size=256, gpu_layers=0, parallel=1)
    with pytest.raises(ConfigError, match="unique"):
        render_preset([PresetShard("a", "/m/a.gguf"), PresetShard("a", "/m/b.gguf")], threads=1, context_size=256,
                      gpu_layers=0, parallel=1)


def _manifests(tiny_models, tmp_path):
    return {n: publish(tmp_path / "store", files, kind="model", name=f"{n}-Q8_0", version="1")
            for n, files in tiny_models.items()}


def test_plan_for_several_shards_is_the_router_behind_the_gate(tiny_models, tmp_path):
    cat = load_catalog()
    settings = host_settings({"shards": [{"name": "a", "model": TINY, "ttl": "90s", "warmup": True},
                                         {"name": "b", "model": TINY, "ttl": 0, "context_size": 16384},
                                         {"name": "c", "model": TINY, "pinned": True}]}, cat, "inv.py: host x")
    plan = shard_plan(settings.shards, _manifests(tiny_models, tmp_path), tier=cat.tier("basic"), platform="cpu",
                      model_root="/var/lib/tierfleet/models", runtime_port=8080, threads=4, mlock=False,
                      budget_gb=None, ram_bytes=8 * 2**30, gpu_memory_bytes=None, source="host x")
    assert plan.mode == "router" and plan.health_port == 8081 and plan.health_model == "c"
    assert plan.unit_args == {"models_preset": PRESET_PATH, "models_max": 3, "port": 8081}
    # on-demand shards load without llama.cpp's warm-up and repacking (a wake-up reads at disk speed) unless set;
    # a pinned one keeps both (it loads once, and decodes as fast as the CPU allows)
    assert "[b]\nmodel = /var/lib/tierfleet/models/shards/b/current/b.gguf\nctx-size = 16384\nwarmup = false\n" \
           "repack = false\n" in plan.preset
    assert "[a]\nmodel = /var/lib/tierfleet/models/shards/a/current/a.gguf\nrepack = false\n" in plan.preset
    assert "[c]\nmodel = /var/lib/tierfleet/models/shards/c/current/c-00001-of-00003.gguf\nload-on-startup = true\n" \
        "\n" in plan.preset + "\n"
    pol = plan.policy
    assert pol["listen"] == "127.0.0.1:8080" and pol["runtime_url"] == "http://127.0.0.1:8081"
    assert pol["memory_budget_bytes"] == 8 * 2**30 - 2 * 10**9 and pol["memory_kind"] == "ram"
    assert pol["models"]["b"]["memory_bytes"] > pol["models"]["a"]["memory_bytes"]  # 4x the tier's context
    assert [f["path"] for f in pol["models"]["c"]["files"]][-1].endswith("/shards/c/current/c-00003-of-00003.gguf")

    # the ops policy the deploy renders from it validates on the host, with the same figures
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    text = env.get_template("ops-policy.yaml.j2").render(ops_shards=pol)
    ops = parse_policy(text, "policy.yaml")
    assert ops.shards.models["c"].pinned and ops.shards.models["a"].ttl_s == 90.0
    assert ops.shards.memory_budget_bytes == pol["memory_budget_bytes"] and "metrics_url" not in text
    unit = env.get_template("llama-server.service.j2").render(
        {**dict(runtime_root="/opt/tierfleet/runtime", model_root="/var/lib/tierfleet/models", groups="", port=8080,
                threads=4, cpus="2 3", context_size=4096, gpu_layers=0, parallel=1, tier="basic",
                service_user="tierfleet", mlock=False), **plan.unit_args})
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert shlex.split(line[len("ExecStart="):]) == [
        "/opt/tierfleet/runtime/current/bin/llama-server", "--host", "127.0.0.1", "--port", "8081",
        "--models-preset", PRESET_PATH, "--models-max", "3", "--no-models-autoload", "--metrics"]
    assert "EnvironmentFile=" not in unit and "CPUAffinity=2 3" in unit


def test_a_policy_rollout_keeps_the_hosts_shards(tiny_models, tmp_path):
    """A fleet energy policy rolled onto a shard host keeps the section the tier deploy rendered (read back from
    the host's policy file), and adds no metrics_url: in router mode the runtime's port is the gate's."""
    cat = load_catalog()
    settings = host_settings({"shards": [{"name": "a", "model": TINY, "ttl": "90s"},
                                         {"name": "c", "model": TINY, "pinned": True}]}, cat, "inv.py: host x")
    plan = shard_plan(settings.shards, {n: m for n, m in _manifests(tiny_models, tmp_path).items() if n in "ac"},
                      tier=cat.tier("basic"), platform="cpu", model_root="/m", runtime_port=8080, threads=4,
                      mlock=False, budget_gb=None, ram_bytes=8 * 2**30, gpu_memory_bytes=None, source="host x")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    deployed = env.get_template("ops-policy.yaml.j2").render(ops_shards=plan.policy)
    running = OpsPolicyShards().process(deployed.splitlines())
    assert running["shards"]["mode"] == "router"

    raw, _ = read_fleet_policy(Path(__file__).resolve().parents[2] / "inventory" / "policies" / "energy.yaml")
    text, digest = host_policy(raw, "cpu", source="p: host x", shards=running["shards"])
    rolled = parse_policy(text, "rolled")
    assert rolled.hash == digest and rolled.shards == parse_policy(deployed, "deployed").shards
    assert "metrics_url" not in rolled.runtime or rolled.runtime["metrics_url"] is None
    assert "metrics_url: http" not in text and "slots_url: http" not in text
    # a host without shards: no section, and the runtime's own metrics
    text, _ = host_policy(raw, "cpu", source="p: host y", shards=None)
    assert parse_policy(text).shards is None and "metrics_url: http://127.0.0.1:8080/metrics" in text


@pytest.mark.parametrize(("where", "key"), [("", "shards"), ("platforms: {gpu: {shards: {}}}\n", "platforms.gpu.shards")])
def test_a_fleet_policy_may_not_set_shards(tmp_path, where, key):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\n" + (where or "shards: {mode: sleep}\n"))
    with pytest.raises(ConfigError) as info:
        read_fleet_policy(path)
    assert info.value.key == key and "each host's own data" in info.value.problem


@pytest.mark.parametrize(("lines", "problem"), [
    (["shards: !!python/object:os.system {}"], "not valid YAML"),
    (["shards: {a: 2026-01-01}"], "holds values no policy has"),
    (["shards: {memory_budget_bytes: .inf}"], "holds values no policy has"),
    (["shards: {1: x}"], "holds values no policy has"),
    (["shards: [router]"], "not a mapping"),
    (["- a"], "not a mapping"),
    (["shards: {a: [unclosed"], "not valid YAML"),
    (["[" * 5000], "not valid YAML"),
])
def test_the_hosts_shards_section_read_back_hostile(lines, problem):
    out = OpsPolicyShards().process(lines)
    assert problem in out["error"] and "shards" not in out


def test_the_hosts_shards_section_absent():
    assert OpsPolicyShards().process([]) == {"shards": None}
    assert OpsPolicyShards().process(["profiles: {}"]) == {"shards": None}
    assert "'/etc/x y'" in OpsPolicyShards().command("/etc/x y")


def test_plan_for_one_shard_is_llama_servers_own_sleep(tiny_models, tmp_path):
    cat = load_catalog()
    settings = host_settings({"shards": [{"name": "a", "model": TINY, "ttl": 0}]}, cat, "inv.py: host x")
    plan = shard_plan(settings.shards, {"a": _manifests(tiny_models, tmp_path)["a"]}, tier=cat.tier("basic"),
                      platform="jetson", model_root="/m", runtime_port=8080, threads=4, mlock=False, budget_gb=3.0,
                      ram_bytes=None, gpu_memory_bytes=None, source="host x")
    assert plan.mode == "sleep" and plan.preset is None and plan.health_port == 8080
    assert plan.unit_args["sleep_idle_seconds"] == 1  # 0 is refused by llama-server: the shortest it takes
    assert plan.policy["models"]["a"]["ttl_s"] == 1.0 and plan.policy["memory_kind"] == "unified"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    assert parse_policy(env.get_template("ops-policy.yaml.j2").render(ops_shards=plan.policy)).shards.mode == "sleep"
    base = dict(runtime_root="/r", model_root="/m", groups="", port=8080, threads=4, cpus="", context_size=4096,
                gpu_layers=0, parallel=1, tier="basic", service_user="tierfleet", mlock=False)
    unit = env.get_template("llama-server.service.j2").render({**base, **plan.unit_args})
    assert "--sleep-idle-seconds 1 --no-warmup --no-repack\n" in unit
    # a host that is not a shard host, or a shard loaded for good, keeps llama.cpp's defaults
    for args in ({}, {**plan.unit_args, "warmup": True, "repack": True}):
        assert "--no-warmup" not in env.get_template("llama-server.service.j2").render({**base, **args})


def test_a_shard_that_cannot_fit_the_host_fails_the_plan_with_the_figures(tiny_models, tmp_path):
    cat = load_catalog()
    settings = host_settings({"shards": [{"name": "a", "model": TINY}, {"name": "b", "model": TINY}]}, cat, "x")
    with pytest.raises(ConfigError) as err:
        shard_plan(settings.shards, _manifests(tiny_models, tmp_path), tier=cat.tier("basic"), platform="gpu",
                   model_root="/m", runtime_port=8080, threads=4, mlock=False, budget_gb=0.001, ram_bytes=None,
                   gpu_memory_bytes=None, source="host x")
    assert err.value.key == "shards.a" and "the host's shard budget is 977 KiB" in err.value.problem
    assert "KV cache" in err.value.problem and "gpu:" in err.value.problem
    bad = tmp_path / "bad" / "m.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGUF" + bytes(10))
    m = publish(tmp_path / "store2", [bad], kind="model", name="m", version="1")
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        shard_plan(settings.shards[:1], {"a": m}, tier=cat.tier("basic"), platform="cpu", model_root="/m",
                   runtime_port=8080, threads=4, mlock=False, budget_gb=None, ram_bytes=None, gpu_memory_bytes=None,
                   source="host x")


@needs_runtime
def test_the_router_accepts_the_rendered_preset_and_its_health_check(router, tiny_models):
    import subprocess

    from tierfleet.operations.runtime import wait_script

    r = router()
    out = subprocess.run(["sh", "-c", wait_script(r.port, 60, "c") + '; echo "ok=$ok"'], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip().endswith("ok=1") and r.states()["c"] == "loaded"
    assert complete(r.url, "a")[0] == 400  # autoload only where the health check asks for it


def test_shard_versions_follow_model_version_unless_named():
    """A shard that names no version follows the host's model_version (what `upgrade --model-version` sets);
    shard_versions (`upgrade --shard-version NAME=V`, or `--data shard_versions=a=3,b=4`) wins over both."""
    from tierfleet.deploys.shards import effective_shards

    cat = load_catalog()
    data = {"shards": [{"name": "a", "model": TINY}, {"name": "b", "model": TINY, "version": "7"}]}
    for extra, versions in [
        ({}, ["1", "7"]),
        ({"model_version": "2"}, ["2", "7"]),
        ({"model_version": "2", "shard_versions": "b=8"}, ["2", "8"]),
        ({"shard_versions": {"a": "3", "b": "4"}}, ["3", "4"]),
        ({"shard_versions": " a = 3 , "}, ["3", "7"]),
    ]:
        s = host_settings({**data, **extra}, cat, "inv.py: host a")
        shards = effective_shards(s.shards, cat.tier("basic"), s.model_version, s.shard_versions)
        assert [sh.version for sh in shards] == versions, extra
        assert [sh.name for sh in shards] == ["a", "b"]


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ({"shard_versions": "c=2"}, "shard_versions", "no shard 'c' on this host; its shards: a, b"),
        ({"shard_versions": "a"}, "shard_versions", "'a' is not NAME=VERSION"),
        ({"shard_versions": "a=2,a=3"}, "shard_versions", "shard 'a' is given twice"),
        ({"shard_versions": "a=2/../x"}, "shard_versions.a", "should match pattern"),
        ({"shard_versions": {"a": ""}}, "shard_versions.a", "should match pattern"),
        ({"shard_versions": {"a": ["2"]}}, "shard_versions.a", "valid string"),
        ({"model_version": "2026.11.1"}, "model_version", "shard a: the release id <name>-<quant>-<version> is 135"),
    ],
)
def test_bad_shard_versions_name_the_key(extra, key, problem):
    long = {**TINY, "name": "m" * 120}  # a valid release id at version 1, too long at 2026.11.1
    data = {"shards": [{"name": "a", "model": long}, {"name": "b", "model": TINY, "version": "7"}], **extra}
    with pytest.raises(InventoryError) as err:
        host_settings(data, load_catalog(), "inv.py: host a")
    assert (err.value.source, err.value.key) == ("inv.py: host a", key) and problem in err.value.problem, err.value


def test_shard_versions_on_a_host_without_shards_say_so():
    with pytest.raises(InventoryError, match="its shards: none \\(the host serves one model: use model_version\\)"):
        host_settings({"shard_versions": "a=2"}, load_catalog(), "inv.py: host a")
