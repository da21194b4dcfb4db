"""Shard decisions (pure), the runtime's answers parsed (hostile, null, truncated), the policy section."""

from __future__ import annotations

import json
import math

import pytest

from tierfleet_ops.errors import ConfigError
from tierfleet_ops.policy import EXAMPLE, parse_policy
from tierfleet_ops.shards import Histogram, ShardSpec, ShardState, check_files, expired, parse_event, \
    parse_models, parse_props_sleeping, parse_shards, plan_admission, request_model

MB = 10**6


def table(**shards):
    """``name=(memory MB, state, in_flight, last_used, pinned)`` -> specs, states."""
    specs, states = {}, {}
    for n, (mem, state, busy, last, pinned) in shards.items():
        specs[n] = ShardSpec(n, mem * MB, pinned=pinned)
        states[n] = ShardState(n, state=state, in_flight=busy, last_used=last)
    return specs, states


def test_a_loaded_or_loading_shard_is_admitted_whatever_the_budget():
    specs, states = table(a=(900, "loaded", 0, 1.0, False), b=(900, "loading", 0, 1.0, False))
    assert plan_admission("a", specs, states, 100 * MB).action == "admit"
    assert plan_admission("b", specs, states, 100 * MB).action == "admit"


def test_it_loads_when_it_fits_beside_what_is_held():
    specs, states = table(a=(300, "loaded", 0, 1.0, False), b=(300, "unloaded", 0, 0, False),
                          s=(900, "sleeping", 0, 1.0, False), f=(900, "failed", 0, 1.0, False))
    assert plan_admission("b", specs, states, 600 * MB) == plan_admission("b", specs, states, 600 * MB)
    assert plan_admission("b", specs, states, 600 * MB).action == "admit"  # sleeping/failed hold nothing
    assert plan_admission("b", specs, states, 599 * MB).action == "evict"


def test_eviction_takes_least_recently_used_idle_unpinned_shards_and_as_few_as_needed():
    specs, states = table(old=(300, "loaded", 0, 10.0, False), mid=(300, "loaded", 0, 20.0, False),
                          new=(300, "loaded", 0, 30.0, False), pin=(300, "loaded", 0, 1.0, True),
                          busy=(300, "loaded", 2, 0.0, False), want=(500, "unloaded", 0, 0, False))
    d = plan_admission("want", specs, states, 1500 * MB)  # 1500 held: 500 must go -> two of 300
    assert d.action == "evict" and d.victims == ("old", "mid")
    assert "least recently used" in d.reason


def test_a_shard_whose_child_reports_a_slot_processing_is_busy():
    """A request sent to the runtime's own port never passes the gate's count; the child's /slots shows it."""
    specs, states = table(old=(500, "loaded", 0, 10.0, False), new=(500, "loaded", 0, 20.0, False),
                          want=(500, "unloaded", 0, 0, False))
    states["old"].processing = 1
    d = plan_admission("want", specs, states, 1000 * MB)
    assert d.action == "evict" and d.victims == ("new",)
    states["new"].processing = 2
    d = plan_admission("want", specs, states, 1000 * MB)
    assert d.action == "wait" and "new, old" in d.reason


def test_memory_being_given_back_is_waited_for_not_evicted_for_again():
    specs, states = table(going=(500, "unloading", 0, 1.0, False), idle=(500, "loaded", 0, 0.5, False),
                          want=(500, "unloaded", 0, 0, False))
    assert plan_admission("want", specs, states, 1000 * MB).action == "wait"


def test_when_everything_else_is_busy_the_request_waits():
    specs, states = table(busy=(800, "loaded", 1, 0.0, False), want=(500, "unloaded", 0, 0, False))
    d = plan_admission("want", specs, states, 1000 * MB)
    assert d.action == "wait" and "busy" in d.reason and d.victims == ()


def test_never_fitting_is_refused_with_the_figures_before_anything_is_evicted():
    specs, states = table(pin=(600, "loaded", 0, 0.0, True), idle=(100, "loaded", 0, 0.0, False),
                          huge=(500, "unloaded", 0, 0, False))
    d = plan_admission("huge", specs, states, 1000 * MB)
    assert d.action == "refuse" and d.victims == ()
    assert "shard huge needs 477 MiB" in d.reason and "pinned shard(s) pin" in d.reason
    specs2, states2 = table(huge=(2000, "unloaded", 0, 0, False))
    assert "can never be loaded" in plan_admission("huge", specs2, states2, 1000 * MB).reason


@pytest.mark.parametrize("spec,state,now,want", [
    (ShardSpec("a", 1, ttl_s=60), ShardState("a", "loaded", last_used=0.0), 60.0, True),
    (ShardSpec("a", 1, ttl_s=60), ShardState("a", "loaded", last_used=0.0), 59.9, False),
    (ShardSpec("a", 1, ttl_s=0), ShardState("a", "loaded", last_used=5.0), 5.0, True),
    (ShardSpec("a", 1, ttl_s=-1), ShardState("a", "loaded", last_used=0.0), 1e9, False),
    (ShardSpec("a", 1, ttl_s=60), ShardState("a", "loaded", in_flight=1, last_used=0.0), 1e9, False),
    (ShardSpec("a", 1, ttl_s=60, pinned=True), ShardState("a", "loaded", last_used=0.0), 1e9, False),
    (ShardSpec("a", 1, ttl_s=60), ShardState("a", "unloaded", last_used=0.0), 1e9, False),
])
def test_ttl(spec, state, now, want):
    assert expired(spec, state, now) is want


@pytest.mark.parametrize("text", ["", "null", "{}", '{"data": null}', '{"data": [null, 1, "x"]}', "[" * 100000,
                                  '{"data": [{"id": "a", "status": null}]}', '{"data": [{"id": "a"',
                                  '{"data": [{"id": ["a"], "status": {"value": "loaded"}}]}'])
def test_hostile_models_answers_give_no_state(text):
    out = parse_models(text)
    assert out in ({}, {"a": ("unknown", False)})


def test_models_answer_states():
    text = ('{"data": [{"id": "a", "status": {"value": "sleeping"}}, {"id": "b", "status": {"value": "weird"}},'
            '{"id": "c", "status": {"value": "unloaded", "failed": true, "exit_code": 1}}]}')
    assert parse_models(text) == {"a": ("sleeping", False), "b": ("unknown", False), "c": ("unloaded", True)}


@pytest.mark.parametrize("line", ["", "data:", "data: null", "data: [1]", "data: {", "event: x",
                                  'data: {"model": 1, "event": "status_change", "data": {"status": "loaded"}}',
                                  'data: {"model": "a", "event": "status_change", "data": {"status": 5}}',
                                  'data: {"model": "a", "event": "download_progress", "data": {}}',
                                  "data: " + "[" * 100000])
def test_hostile_event_lines_are_ignored(line):
    assert parse_event(line) is None


def test_event_exit_code_must_be_an_integer():
    assert parse_event('data: {"model":"a","event":"status_change","data":{"status":"unloaded","exit_code":"9"}}') \
        == ("a", "unloaded", None)


@pytest.mark.parametrize("method,query,body,want", [
    ("POST", {}, b'{"model": "a"}', "a"),
    ("POST", {"model": "q"}, b'{"model": "a"}', "a"),
    ("POST", {"model": "q"}, b'{"prompt": 1}', "q"),
    ("POST", {}, b'{"model": 5}', None),
    ("POST", {}, b'{"model": "a"' , None),
    ("POST", {}, b"[" * 100000, None),
    ("GET", {"model": ""}, b"", None),
    ("GET", {}, b'{"model": "a"}', None),
])
def test_request_model(method, query, body, want):
    assert request_model(method, query, body) == want


def test_props_sleeping():
    assert parse_props_sleeping('{"is_sleeping": false}') is False
    assert parse_props_sleeping(None) is None and parse_props_sleeping("{") is None
    assert parse_props_sleeping('{"is_sleeping": "yes"}') is None


def test_check_files_names_what_is_wrong(tmp_path):
    ok, short, d = tmp_path / "ok", tmp_path / "short", tmp_path / "dir"
    ok.write_bytes(b"x" * 10)
    short.write_bytes(b"x" * 3)
    d.mkdir()
    assert check_files(((str(ok), 10),)) is None
    msg = check_files(((str(ok), 10), (str(short), 10), (str(d), 1), (str(tmp_path / "gone"), 1)))
    assert msg == (f"{short}: 3 bytes, published with 10; {d}: not a regular file; {tmp_path / 'gone'}: missing")


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    h = Histogram()
    for v in (0.01, 0.3, 0.3, 7.0, 1e6):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum[0.05] == 1 and cum[0.5] == 3 and cum[10.0] == 4 and cum[math.inf] == 5 and h.count == 5


SECTION = """
shards:
  mode: router
  listen: "127.0.0.1:8080"
  runtime_url: "http://127.0.0.1:8081"
  memory_budget_bytes: 1000
  models:
    a: {memory_bytes: 400, ttl_s: 60}
    b: {memory_bytes: 500, pinned: true, files: [{path: /m/b.gguf, size: 10}]}
"""


def test_policy_with_shards():
    pol = parse_policy(EXAMPLE + SECTION, "p.yaml")
    assert pol.shards.models["b"].preload and pol.shards.models["b"].pinned  # pinned shards are preloaded
    assert pol.shards.models["b"].files == (("/m/b.gguf", 10),)
    assert parse_policy(EXAMPLE, "p.yaml").shards is None


@pytest.mark.parametrize("change,key,problem", [
    (("a: {memory_bytes: 400, ttl_s: 60}", "a: {memory_bytes: 600, pinned: true}"), "shards.models",
     "pinned shards need 1100 bytes"),
    (("memory_bytes: 500,", "memory_bytes: 1001,"), "shards.models.b.memory_bytes", "more than the whole budget"),
    (("ttl_s: 60", "ttl_s: 1e9"), "shards.models.a.ttl_s", "-1 (never) or seconds"),
    (("ttl_s: 60", "ttl_s: true"), "shards.models.a.ttl_s", "True is not"),
    (("ttl_s: 60", "ttl_s:"), "shards.models.a.ttl_s", "null is not a value"),
    (('"127.0.0.1:8080"', '"10.0.0.1:8080"'), "shards.listen", "loopback"),
    (('"127.0.0.1:8080"', '"127.0.0.1:8081"'), "shards.listen", "the runtime's own address"),
    (('"http://127.0.0.1:8081"', '"http://example.com:8081"'), "shards.runtime_url", "127.0.0.0/8"),
    (("memory_budget_bytes: 1000", "memory_budget_bytes: 0"), "shards.memory_budget_bytes", "budget"),
    (("  memory_budget_bytes: 1000\n", ""), "shards.memory_budget_bytes", "required in mode router"),
    (("mode: router", "mode: proxy"), "shards.mode", "router, sleep"),
    (("size: 10", "size: ten"), "shards.models.b.files", "'ten' is not a byte count"),
    (("path: /m/b.gguf", "path: m/b.gguf"), "shards.models.b.files", "not an absolute path"),
    (("    a: {", "    'a b': {"), "shards.models.a b", "not a name"),
    (("    a: {memory_bytes: 400, ttl_s: 60}", "    a: null"), "shards.models.a", "mapping"),
])
def test_bad_shard_sections_name_the_key(change, key, problem):
    with pytest.raises(ConfigError) as err:
        parse_policy(EXAMPLE + SECTION.replace(*change), "p.yaml")
    assert err.value.source == "p.yaml" and err.value.key == key, str(err.value)
    assert problem in err.value.problem


def test_sleep_mode_is_one_shard_without_a_gate():
    cfg = parse_shards({"mode": "sleep", "runtime_url": "http://127.0.0.1:8080",
                        "models": {"m": {"memory_bytes": 5, "ttl_s": 300}}}, "p.yaml")
    assert cfg.listen is None and cfg.models["m"].ttl_s == 300
    with pytest.raises(ConfigError, match="shards: null is not a value"):
        parse_shards(None, "p.yaml")


def test_a_daemon_without_shards_never_imports_the_http_library():
    """aiohttp (the gate) is imported only by a policy with shards: single-model hosts keep their memory."""
    import subprocess
    import sys

    code = ("import sys, tierfleet_ops.cli, tierfleet_ops.daemon, tierfleet_ops.metrics, tierfleet_ops.control, "
            "tierfleet_ops.policy, tierfleet_ops.shards\n"
            "from tierfleet_ops.policy import EXAMPLE, parse_policy\nparse_policy(EXAMPLE)\n"
            "print('aiohttp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_gate_takes_a_childs_port_only_from_a_list_newer_than_what_it_knows():
    """A shard's requests go to the port the router's list gives its child; a list read before the shard started
    loading or unloading again, or before the runtime's last event for it, could name a child that is gone (and
    a port another child now has), so it gives no port; a list without the shard loaded takes the port away."""
    from tierfleet_ops.gate import Gate

    cfg = parse_shards({"mode": "router", "listen": "127.0.0.1:1", "runtime_url": "http://127.0.0.1:2",
                        "memory_budget_bytes": 10**9, "models": {"a": {"memory_bytes": 1}, "b": {"memory_bytes": 1}}})
    g = Gate(cfg)
    listing = json.dumps({"data": [{"id": n, "status": {"value": "loaded", "args": ["x", "--port", str(p)]}}
                                   for n, p in (("a", 41001), ("b", 41002))]})
    for n in ("a", "b"):
        g.states[n].state = "loaded"
    gen, issued = dict(g._generation), 100.0
    g._news["b"] = 100.5  # the runtime reported on b after the list was asked for
    g._learn_ports(listing, gen, issued)
    assert g._ports == {"a": 41001}
    g._begin_load("a")  # a reloads: its old child's port is forgotten at once
    assert g._ports == {} and g.states["a"].state == "loading"
    g.states["a"].state = "loaded"
    g._pending.pop("a")
    g._learn_ports(listing, gen, issued)  # the same old list: a's generation moved on since
    assert g._ports == {}
    g._learn_ports(listing, dict(g._generation), 101.0)
    assert g._ports == {"a": 41001, "b": 41002}
    g.states["b"].processing = 2
    g._learn_ports(json.dumps({"data": [{"id": "a", "status": {"value": "loaded", "args": ["--port", "41001"]}}]}),
                   dict(g._generation), 102.0)
    assert g._ports == {"a": 41001} and g.states["b"].processing == 0  # b is no longer listed loaded
