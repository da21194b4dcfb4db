"""The shard gate against the real llama-server router: loads on first request, LRU eviction within the
memory budget, pinned and busy shards kept, never-fitting requests refused, TTLs, a damaged file, the
runtime killed, and many clients at once. Real processes, real loopback HTTP, real GGUF files."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tierfleet.artifacts.gguf_tiny import write_sized_gguf
from tierfleet.lab.system import wait_until

from .conftest import complete, http, memory_of, needs_runtime, shard

pytestmark = needs_runtime


def test_first_request_loads_the_shard_and_reports_its_wake_up(router, gate):
    r = router()
    g = gate(r, {"a": {}, "b": {}, "c": {}}, budget=10**10)
    assert r.states() == {"a": "unloaded", "b": "unloaded", "c": "unloaded"}
    assert shard(g, "c")["state"] == "unloaded" and g.any_loaded() is False

    status, body = complete(g.url, "c")  # the split model: three files
    assert status == 200, body
    assert json.loads(body)["usage"]["completion_tokens"] > 0
    assert r.states()["c"] == "loaded" and r.states()["a"] == "unloaded"
    c = shard(g, "c")
    assert c["state"] == "loaded" and c["loads"] == 1 and c["wake_s"]["count"] == 1 and c["last_wake_s"] > 0
    assert c["last_used"] is not None and g.any_loaded() is True
    status, _ = complete(g.url, "c")
    assert status == 200 and shard(g, "c")["loads"] == 1  # loaded already: no second wake-up


def test_requests_that_name_no_shard_pass_through(router, gate):
    r = router()
    g = gate(r, {"a": {}}, budget=10**10)
    assert http(g.url + "/health")[0] == 200
    status, body = http(g.url + "/models")
    assert status == 200 and {m["id"] for m in json.loads(body)["data"]} == {"a", "b", "c"}
    status, body = complete(g.url, "nope")
    assert status == 400 and b"not found" in body  # the router's own answer
    status, body = http(g.url + "/v1/completions", {"prompt": "x"})
    assert status == 400 and b"model name is missing" in body


def test_streamed_answers_arrive_whole(router, gate):
    r = router()
    g = gate(r, {"a": {}}, budget=10**10)
    req = urllib.request.Request(g.url + "/v1/completions", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "a", "prompt": "the", "max_tokens": 16, "stream": True,
                                                  "ignore_eos": True}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [ln for ln in resp.read().decode().splitlines() if ln.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert sum(1 for e in events[:-1] if json.loads(e[6:])["choices"][0]["text"]) >= 15


def test_least_recently_used_idle_shard_makes_room(router, gate, tiny_models):
    r = router()
    two = 2 * max(memory_of(f) for f in tiny_models.values())
    g = gate(r, {"a": {}, "b": {}, "c": {}}, budget=two)
    for name in ("a", "b", "a"):
        assert complete(g.url, name)[0] == 200
    assert complete(g.url, "c")[0] == 200  # b is the least recently used
    assert r.states() == {"a": "loaded", "b": "unloaded", "c": "loaded"}
    assert shard(g, "b")["evictions"] == 1 and shard(g, "a")["evictions"] == 0
    held = sum(s["memory_bytes"] for s in g.snapshot() if s["state"] == "loaded")
    assert held <= two


def test_pinned_shard_is_preloaded_and_never_evicted(router, gate, tiny_models):
    r = router()
    one = max(memory_of(f) for f in tiny_models.values())
    g = gate(r, {"a": {"pinned": True}, "b": {}, "c": {}}, budget=2 * one)
    assert wait_until(lambda: r.states().get("a") == "loaded", timeout=30)  # preloaded without a request
    for name in ("b", "c", "b", "c"):
        assert complete(g.url, name)[0] == 200
        assert r.states()["a"] == "loaded"
    assert shard(g, "a")["evictions"] == 0 and shard(g, "b")["evictions"] == 2


def test_a_shard_that_can_never_fit_is_refused_at_once(router, gate, tiny_models):
    r = router()
    one = max(memory_of(f) for f in tiny_models.values())
    g = gate(r, {"a": {"pinned": True}, "b": {}, "c": {}}, budget=one + one // 2)
    assert wait_until(lambda: r.states().get("a") == "loaded", timeout=30)
    status, body = complete(g.url, "b")  # fits the budget alone, never beside the pinned shard
    err = json.loads(body)["error"]
    assert status == 507 and err["type"] == "insufficient_memory_error"
    assert "shard b needs" in err["message"] and "pinned shard(s) a" in err["message"]
    assert "can never be loaded" in err["message"]
    assert r.states()["b"] == "unloaded" and shard(g, "b")["loads"] == 0 and shard(g, "b")["refusals"] == 1
    assert r.states()["a"] == "loaded" and complete(g.url, "a")[0] == 200  # nothing was evicted for it


def test_idle_shards_unload_after_their_ttl_and_give_memory_back(router, gate):
    r = router()
    g = gate(r, {"a": {"ttl_s": 1}, "b": {"ttl_s": 0}, "c": {}}, budget=10**10)
    for name in ("a", "b", "c"):
        assert complete(g.url, name)[0] == 200
    child_a = r.child_of("a")
    assert child_a is not None
    # ttl 0: unloaded as soon as its request ended; ttl 1 s: a second later; c (ttl -1) stays
    assert wait_until(lambda: r.states()["b"] == "unloaded", timeout=20)
    assert wait_until(lambda: r.states()["a"] == "unloaded", timeout=20)
    assert not child_a.is_running()  # the whole process is gone, not asleep: its memory went back
    assert r.states()["c"] == "loaded"
    assert shard(g, "a")["unloads"] == 1 and shard(g, "b")["unloads"] == 1 and shard(g, "a")["evictions"] == 0
    assert complete(g.url, "a")[0] == 200 and shard(g, "a")["loads"] == 2  # and back on the next request


@pytest.mark.parametrize("via", ["gate", "runtime"])
def test_a_busy_shard_is_never_evicted(router, gate, tmp_path, via):
    """big streams an answer while small needs its room: small waits instead of cutting big off. Sent through the
    gate, big's request is in the gate's own count; sent to the router's own port (``runtime``), the gate never
    sees it and learns it from the child's GET /slots."""
    big = write_sized_gguf(tmp_path / "big" / "big.gguf", 60 * 10**6, seed=5)
    small = write_sized_gguf(tmp_path / "small" / "small.gguf", 20 * 10**6, seed=6)
    r = router({"big": [big], "small": [small]})
    g = gate(r, {"big": {}, "small": {}}, budget=memory_of([big]) + memory_of([small]) // 2)
    if via == "runtime":
        assert complete(g.url, "big")[0] == 200  # loaded through the gate
        assert wait_until(lambda: "big" in g._ports, timeout=10)
    req = urllib.request.Request((g.url if via == "gate" else r.url) + "/v1/completions",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "big", "prompt": "the", "max_tokens": 200, "stream": True,
                                                  "ignore_eos": True}).encode())
    second: list = []
    with urllib.request.urlopen(req, timeout=120) as resp:
        first_line = resp.readline()
        assert first_line.startswith(b"data: ")  # big is generating: busy
        t = threading.Thread(target=lambda: second.append(complete(g.url, "small")))
        t.start()
        assert wait_until(lambda: g.waiting >= 1, timeout=30)  # small waits for room instead of evicting big
        if via == "runtime":
            assert wait_until(lambda: shard(g, "big")["processing"] >= 1, timeout=10)
        assert r.states()["big"] == "loaded"
        rest = resp.read().decode()
    t.join(60)
    events = [ln for ln in (first_line.decode() + rest).splitlines() if ln.startswith("data: ")]
    assert events[-1] == "data: [DONE]"  # big's answer arrived whole: to its max_tokens, then the end mark
    assert [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events[:-1]][-1] == "length"
    assert second and second[0][0] == 200, second
    assert shard(g, "big")["evictions"] == 1 and r.states() == {"big": "unloaded", "small": "loaded"}


def test_a_damaged_shard_file_is_named_and_the_others_keep_serving(router, gate, tiny_models, tmp_path):
    # a copy of b that the test damages (the session's models stay intact)
    bfile = tmp_path / "b-copy" / "b.gguf"
    bfile.parent.mkdir()
    good = tiny_models["b"][0].read_bytes()
    bfile.write_bytes(good)
    r = router({"a": tiny_models["a"], "b": [bfile]})
    g = gate(r, {"a": {}, "b": {}}, budget=10**10, retry_failed_s=3600)
    bfile.write_bytes(good[:100_000])  # torn on disk (a crash half-way, a bad sector)

    status, body = complete(g.url, "b")
    err = json.loads(body)["error"]
    assert status == 503 and err["type"] == "unavailable_error"
    assert f"shard b failed to load: {bfile}: 100000 bytes, published with {len(good)}" == err["message"]
    assert complete(g.url, "a")[0] == 200  # the others keep serving
    failures = shard(g, "b")["failures"]
    status, body = complete(g.url, "b")
    assert status == 503 and shard(g, "b")["failures"] == failures  # answered again without another load
    assert shard(g, "b")["state"] == "failed" and shard(g, "b")["error"] == err["message"]

    bfile.write_bytes(good)  # repaired: the changed file is tried again at once
    assert complete(g.url, "b")[0] == 200 and shard(g, "b")["state"] == "loaded" and shard(g, "b")["error"] is None


def test_the_runtime_killed_while_a_shard_is_loaded(router, gate, tiny_models):
    """The router and its children SIGKILLed while a is loaded, the next request sent at once, and the router
    started again 2 s later (systemd's Restart=on-failure, RestartSec=2): it is served, three times over."""
    r = router({"a": tiny_models["a"], "c": tiny_models["c"]})
    r.preset.write_text(r.preset.read_text().replace("[c]\n", "[c]\nload-on-startup = true\n"))
    r.stop()
    r.start()  # c comes up with the router: its own load runs while the gate asks for a
    g = gate(r, {"a": {}, "c": {"pinned": True}}, budget=10**10)
    for round_ in range(3):
        assert complete(g.url, "a")[0] == 200
        r.kill()  # the router and its children, as the OOM killer would
        restart = threading.Timer(2.0, r.start)
        restart.start()
        status, body = complete(g.url, "a")  # waits for the runtime (wait_s), loads a again, answers
        restart.join()
        assert status == 200, (round_, body)
        assert r.states()["a"] == "loaded" and shard(g, "a")["loads"] == round_ + 2
    assert wait_until(lambda: r.states().get("c") == "loaded" and shard(g, "c")["state"] == "loaded", timeout=30)


def test_a_loaded_shard_is_served_by_its_child_directly(router, gate):
    """The router closes the connection after every answer it relays and adds a hop, so the gate sends a loaded
    shard's requests to the shard's child itself, at the port the router lists for it. Shown with the router
    frozen (SIGSTOP): the loaded shard still answers at once. After its child is killed and the shard loaded
    again, on another port, the gate follows the new child."""
    r = router()
    g = gate(r, {"a": {}, "b": {}}, budget=10**10)
    for round_ in range(2):
        assert complete(g.url, "a")[0] == 200
        port = int(r.child_of("a").cmdline()[r.child_of("a").cmdline().index("--port") + 1])
        assert wait_until(lambda: g._ports.get("a") == port, timeout=10)  # learnt from GET /models after the load
        r.proc.send_signal(signal.SIGSTOP)
        try:
            status, body = complete(g.url, "a", timeout=10)
        finally:
            r.proc.send_signal(signal.SIGCONT)
        assert status == 200 and json.loads(body)["usage"]["completion_tokens"] > 0, (round_, body)
        r.child_of("a").kill()
        status, body = complete(g.url, "a")  # the old port is refused: through the router, which reloads it
        assert status == 200, body
    # the router's own paths, and shards that are not loaded, still go to the router
    assert "b" not in g._ports and complete(g.url, "b")[0] == 200
    assert {m["id"] for m in json.loads(http(g.url + "/models")[1])["data"]} == {"a", "b", "c"}


def test_a_runtime_child_killed_under_a_loaded_shard(router, gate):
    """The child serving a is SIGKILLed and the next request sent at once: the router answers "proxy error" or
    "model is not loaded" until it notices; the gate waits for that, loads a again and sends the request."""
    r = router()
    g = gate(r, {"a": {}}, budget=10**10)
    for round_ in range(3):
        assert complete(g.url, "a")[0] == 200
        r.child_of("a").kill()
        status, body = complete(g.url, "a")
        assert status == 200, (round_, body)
        assert shard(g, "a")["loads"] == round_ + 2 and r.states()["a"] == "loaded"


def test_many_clients_while_shards_load_unload_and_are_evicted(router, gate, tiny_models):
    """120 requests from 8 clients over 3 shards, 2 of which fit: loads, TTL unloads (0 and 1 s) and
    evictions all happen, and no request fails (nothing here can never fit, so nothing is refused)."""
    r = router()
    two = 2 * max(memory_of(f) for f in tiny_models.values())
    g = gate(r, {"a": {"ttl_s": 1}, "b": {"ttl_s": 0}, "c": {}}, budget=two, wait_s=120)
    order = ["a", "b", "c", "a", "c", "b", "b", "a", "c", "c", "a", "b"]

    def client(i: int) -> list[tuple[str, int | None, bytes]]:
        out = []
        for j in range(15):
            name = order[(i * 5 + j) % len(order)]
            status, body = complete(g.url, name, tokens=2)
            out.append((name, status, body))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [x for chunk in pool.map(client, range(8)) for x in chunk]
    failed = [(n, s, b[:200]) for n, s, b in results if s != 200]
    assert len(results) == 120 and not failed, failed
    snap = {s["name"]: s for s in g.snapshot()}
    assert sum(s["evictions"] for s in snap.values()) > 0
    assert snap["b"]["unloads"] > 0 and sum(s["loads"] for s in snap.values()) > 3
    assert all(s["in_flight"] == 0 for s in snap.values()) and g.waiting == 0, (g.waiting, snap)
    assert sum(s["refusals"] for s in snap.values()) == 0
