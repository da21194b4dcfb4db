"""Model shards loaded on demand: the memory budget, idle TTLs and what a request may do.

A *shard* is one model the runtime can load (one GGUF, a split GGUF set, or one model of a
pipeline) with a memory estimate made from its real files when it was published (GGUF tensor
sizes plus the KV cache of its context, on the memory that counts on the host's platform: RAM,
GPU memory or Jetson unified memory). The policy's ``shards`` section lists them:

.. code-block:: yaml

    shards:
      mode: router                    # several shards: llama-server router mode behind the gate
      listen: "127.0.0.1:8080"        # the gate: where clients send requests
      runtime_url: "http://127.0.0.1:8081"   # llama-server --models-preset ... --no-models-autoload
      memory_budget_bytes: 3500000000
      memory_kind: unified            # ram | gpu | unified (what the budget is of; for reports)
      models:
        chat: {memory_bytes: 2100000000, ttl_s: 300, preload: true}
        draft: {memory_bytes: 600000000, ttl_s: 0}
        embed: {memory_bytes: 300000000, pinned: true}

``mode: sleep`` is the single-shard case: llama-server's own ``--sleep-idle-seconds`` unloads
the model after its TTL and reloads it on the next request; the daemon only watches ``/props``
(``is_sleeping``). ``mode: router`` puts the gate (:mod:`tierfleet_ops.gate`) in front of the
router, because the router counts models (``--models-max``), not bytes, has no unload TTL, never
keeps a model from eviction, and loads a model before anything could refuse it.

Everything here is pure (specs, states, decisions, parsers of the runtime's answers); the gate
does the I/O. Rules, in :func:`plan_admission` and :func:`expired`:

- a shard that holds memory (loading, loaded, unloading) counts its estimate against the budget;
  a sleeping one does not (llama-server freed its weights and KV cache);
- a request for a shard that is not loaded loads it if it fits; otherwise the least recently
  used idle shards that are neither pinned nor busy are unloaded first, as few as needed;
- memory that is already being given back is waited for, not evicted for again;
- a shard that cannot fit even with every unpinned shard gone is refused at once, with the
  figures, instead of evicting everything and failing anyway;
- a loaded shard idle for its ``ttl_s`` is unloaded (``0``: after each request; ``-1``: never);
  pinned shards are never unloaded.

>>> specs = {"a": ShardSpec("a", 600), "b": ShardSpec("b", 600), "p": ShardSpec("p", 300, pinned=True)}
>>> states = {n: ShardState(n) for n in specs}
>>> states["a"].state, states["a"].last_used = "loaded", 10.0
>>> states["p"].state = "loaded"
>>> plan_admission("b", specs, states, budget=1000)
Decision(action='evict', victims=('a',), reason='unload a (least recently used, idle) to make room for b')
>>> plan_admission("b", specs, states, budget=800).action
'refuse'
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, create_model

from .errors import ConfigError
from .settings import Section, boolean, checked, config_error, name, not_null, one_of

#: the states a shard is reported in
STATES = ("unloaded", "loading", "loaded", "sleeping", "unloading", "failed", "unknown")
#: states whose memory counts against the budget
HOLDS_MEMORY = frozenset({"loading", "loaded", "unloading"})
MODES = ("router", "sleep")
MEMORY_KINDS = ("ram", "gpu", "unified")
#: wake-up latency histogram buckets, seconds (the last is +Inf)
WAKE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)
#: the most shards one host may list
MAX_SHARDS = 64


# --- the policy section ------------------------------------------------------------------------

def _loopback_hostport(v: Any) -> str:
    """``127.0.0.1:PORT`` (or another loopback address): the gate listens on loopback only."""
    import ipaddress

    if not isinstance(v, str) or ":" not in v:
        raise ValueError(f"{v!r} is not HOST:PORT")
    host, _, port = v.rpartition(":")
    host = host.strip("[]")
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not a loopback address with a port 1..65535")
    return v


def _bytes(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 50:
        raise ValueError(f"{v!r} is not a byte count 0..2^50")
    return v


def _positive_bytes(v: Any) -> int:
    if _bytes(v) == 0:
        raise ValueError("0 is not a budget")
    return v


def _ttl(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v == -1 or 0 <= v <= 30 * 86400):
        raise ValueError(f"{v!r} is not -1 (never) or seconds 0..2592000")
    return float(v)


def _seconds(lo: float, hi: float):
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"{v!r} is not seconds {lo:g}..{hi:g}")
        return float(v)
    return check


def _file(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) != {"path", "size"}:
        raise ValueError(f"{v!r} is not {{path, size}}")
    p = v["path"]
    if not isinstance(p, str) or not p.startswith("/") or "\0" in p or "\n" in p:
        raise ValueError(f"{p!r} is not an absolute path")
    return {"path": p, "size": _bytes(v["size"])}


def _url(v: Any) -> str:
    from .policy import loopback_url

    return loopback_url(v)


class ShardModel(Section):
    """One shard of the policy's ``shards.models``."""

    memory_bytes: Annotated[int, checked(_bytes, "a byte count")] = Field(
        description="memory the loaded shard takes (weights + KV cache + compute buffers), bytes")
    ttl_s: Annotated[float, checked(_ttl, "-1 (never) or seconds 0..2592000", -1)] = Field(
        default=-1.0, description="unload after this many idle seconds; 0 after each request; -1 never")
    preload: Annotated[bool, checked(boolean, "true or false", False)] = Field(
        default=False, description="load when the runtime starts")
    pinned: Annotated[bool, checked(boolean, "true or false", False)] = Field(
        default=False, description="never unloaded, by TTL or to make room")
    files: Annotated[tuple[dict[str, Any], ...], checked(lambda v: _file_list(v), "a list of {path, size}", "[]")] \
        = Field(default=(), description="the shard's files and their published sizes (a failed load names "
                                        "the damaged one)")


class ShardsModel(Section):
    """The policy's ``shards`` section."""

    mode: Annotated[str, checked(one_of(MODES), ", ".join(MODES))]
    runtime_url: Annotated[str, checked(_url, "http://127.0.0.1:PORT")]
    listen: Annotated[str | None, checked(_loopback_hostport, "127.0.0.1:PORT")] = None
    memory_budget_bytes: Annotated[int | None, checked(_positive_bytes, "a byte count > 0")] = None
    memory_kind: Annotated[str, checked(one_of(MEMORY_KINDS), ", ".join(MEMORY_KINDS), "ram")] = "ram"
    load_timeout_s: Annotated[float, checked(_seconds(1, 3600), "seconds 1..3600", 300)] = 300.0
    wait_s: Annotated[float, checked(_seconds(0, 600), "seconds 0..600", 30)] = 30.0
    sync_s: Annotated[float, checked(_seconds(0.1, 60), "seconds 0.1..60", 2)] = 2.0
    retry_failed_s: Annotated[float, checked(_seconds(0, 86400), "seconds 0..86400", 60)] = 60.0
    models: Annotated[dict[Annotated[str, checked(name, "a shard name")], ShardModel],
                      BeforeValidator(not_null("a mapping of shard name to {memory_bytes, ttl_s, ...}"))]


def _file_list(v: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{v!r} is not a list of {{path, size}}")
    return tuple(_file(x) for x in v)



@dataclass(frozen=True)
class ShardSpec:
    """One shard as the daemon uses it."""

    name: str
    memory_bytes: int
    ttl_s: float = -1.0
    preload: bool = False
    pinned: bool = False
    files: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ShardsConfig:
    """The validated ``shards`` section."""

    mode: str
    runtime_url: str
    models: dict[str, ShardSpec]
    listen: str | None = None
    memory_budget_bytes: int | None = None
    memory_kind: str = "ram"
    load_timeout_s: float = 300.0
    wait_s: float = 30.0
    sync_s: float = 2.0
    retry_failed_s: float = 60.0

    @property
    def listen_host_port(self) -> tuple[str, int]:
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def shards_field() -> tuple[Any, Any]:
    """The policy model's ``shards`` field: absent means no shard management (one model, always loaded)."""
    return Annotated[ShardsModel | None, BeforeValidator(not_null("a mapping with mode, runtime_url, models"))], None


def shards_config(model: ShardsModel | None, source: str) -> ShardsConfig | None:
    """Cross-check a validated section: names, budget, pinned + preloaded shards fit, one shard in sleep mode."""
    if model is None:
        return None
    models = model.models
    if not models:
        raise ConfigError(source, "shards.models", "must list at least one shard")
    if len(models) > MAX_SHARDS:
        raise ConfigError(source, "shards.models", f"{len(models)} shards; at most {MAX_SHARDS}")
    specs = {}
    for n, m in models.items():
        if m.pinned and m.ttl_s != -1:
            raise ConfigError(source, f"shards.models.{n}.ttl_s",
                              f"{m.ttl_s:g}: a pinned shard is never unloaded; leave ttl_s out (or -1)")
        specs[n] = ShardSpec(n, m.memory_bytes, m.ttl_s, m.preload or m.pinned, m.pinned,
                             tuple((f["path"], f["size"]) for f in m.files))
    budget = model.memory_budget_bytes
    if model.mode == "sleep":
        if len(specs) != 1:
            raise ConfigError(source, "shards.models", f"mode sleep serves one shard; {len(specs)} listed "
                              "(use mode: router for several)")
    else:
        if model.listen is None:
            raise ConfigError(source, "shards.listen", "required in mode router (the gate's 127.0.0.1:PORT)")
        if budget is None:
            raise ConfigError(source, "shards.memory_budget_bytes", "required in mode router")
        runtime = model.runtime_url.split("//", 1)[1].split("/", 1)[0]
        if runtime == model.listen:
            raise ConfigError(source, "shards.listen", f"{model.listen} is the runtime's own address; the gate "
                              "needs another port")
        for n, s in specs.items():
            if s.memory_bytes > budget:
                raise ConfigError(source, f"shards.models.{n}.memory_bytes",
                                  f"{s.memory_bytes} is more than the whole budget ({budget})")
        pinned = sum(s.memory_bytes for s in specs.values() if s.pinned)
        if pinned > budget:
            raise ConfigError(source, "shards.models", f"pinned shards need {pinned} bytes; the budget is {budget}")
        preload = sum(s.memory_bytes for s in specs.values() if s.preload)
        if preload > budget:
            raise ConfigError(source, "shards.models",
                              f"preloaded and pinned shards need {preload} bytes together; the budget is {budget}")
    return ShardsConfig(model.mode, model.runtime_url, specs, model.listen, budget, model.memory_kind,
                        model.load_timeout_s, model.wait_s, model.sync_s, model.retry_failed_s)


def parse_shards(raw: Any, source: str = "<policy>") -> ShardsConfig | None:
    """Validate a ``shards`` mapping on its own (the policy does the same inside the whole file).

    >>> cfg = parse_shards({"mode": "router", "listen": "127.0.0.1:8080", "runtime_url": "http://127.0.0.1:8081",
    ...                     "memory_budget_bytes": 1000, "models": {"a": {"memory_bytes": 400, "ttl_s": 60}}})
    >>> cfg.models["a"].ttl_s, cfg.listen_host_port
    (60.0, ('127.0.0.1', 8080))
    >>> parse_shards({"mode": "router", "listen": "0.0.0.0:8080", "runtime_url": "http://127.0.0.1:8081",
    ...               "memory_budget_bytes": 1000, "models": {}}, "p.yaml")
    Traceback (most recent call last):
    ...
    tierfleet_ops.errors.ConfigError: p.yaml: shards.listen: '0.0.0.0:8080' is not a loopback address with a port 1..65535; allowed: 127.0.0.1:PORT
    """
    model = create_model("Wrap", __base__=Section, shards=shards_field())
    try:
        parsed = model.model_validate({"shards": raw})
    except ValidationError as exc:
        raise config_error(exc, source, allowed_keys=allowed_keys) from None
    return shards_config(parsed.shards, source)  # type: ignore[attr-defined]


def allowed_keys(loc: tuple[Any, ...]) -> tuple[str, str]:
    """What kind of key lives at ``loc`` (inside ``shards``) and which are allowed."""
    if len(loc) >= 3 and loc[1] == "models":
        return "key", ", ".join(ShardModel.model_fields)
    return "key", ", ".join(ShardsModel.model_fields)


# --- state -------------------------------------------------------------------------------------

class Histogram:
    """Counts per bucket (upper bounds in seconds, the last +Inf), their sum and count.

    >>> h = Histogram((0.1, 1.0, math.inf)); h.observe(0.05); h.observe(0.5); h.observe(0.7)
    >>> h.cumulative(), h.count, round(h.sum, 2)
    ([(0.1, 1), (1.0, 3), (inf, 3)], 3, 1.25)
    """

    def __init__(self, buckets: tuple[float, ...] = WAKE_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break
        self.sum += v
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, n = [], 0
        for b, c in zip(self.buckets, self.counts):
            n += c
            out.append((b, n))
        return out


@dataclass
class ShardState:
    """What is known about one shard (times are ``time.monotonic()``; ``last_used_wall`` is epoch)."""

    name: str
    state: str = "unknown"
    in_flight: int = 0
    last_used: float = float("-inf")
    last_used_wall: float | None = None
    loads: int = 0
    unloads: int = 0
    evictions: int = 0
    refusals: int = 0
    failures: int = 0
    #: exit status of the runtime's child when a load ended without the shard loaded
    exit_code: int | None = None
    error: str | None = None
    failed_at: float | None = None
    #: (size, mtime) of the shard's files when its load failed: a repaired file is tried again at once
    failed_files: tuple[tuple[int, float], ...] | None = None
    wake: Histogram = field(default_factory=Histogram)
    last_wake_s: float | None = None
    rss_bytes: int | None = None
    #: slots the shard's child itself reported busy (``GET /slots``): requests that did not come through the gate
    processing: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.processing)

    def as_dict(self, spec: ShardSpec | None = None) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "in_flight": self.in_flight, "processing": self.processing,
            "memory_bytes": spec.memory_bytes if spec else None, "rss_bytes": self.rss_bytes,
            "ttl_s": spec.ttl_s if spec else None, "pinned": spec.pinned if spec else False,
            "preload": spec.preload if spec else False,
            "last_used": self.last_used_wall, "loads": self.loads, "unloads": self.unloads,
            "evictions": self.evictions, "refusals": self.refusals, "failures": self.failures,
            "error": self.error, "last_wake_s": self.last_wake_s,
            "wake_s": {"count": self.wake.count, "sum": self.wake.sum,
                       "buckets": [[("+Inf" if math.isinf(b) else b), n] for b, n in self.wake.cumulative()]},
        }


@dataclass(frozen=True)
class Decision:
    """What a request for a shard may do now: ``admit`` (it is loaded, or load it), ``evict``
    ``victims`` first, ``wait`` for memory being given back or a busy shard, or ``refuse``."""

    action: str
    victims: tuple[str, ...] = ()
    reason: str = ""


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``, ``5 B``.

    >>> fmt_bytes(1536 * 2**20), fmt_bytes(300 * 2**20), fmt_bytes(5)
    ('1.5 GiB', '300 MiB', '5 B')
    """
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.1f} {unit}" if v < 10 and unit == "GiB" else f"{v:.0f} {unit}"
    return f"{int(n)} B"


def plan_admission(name: str, specs: dict[str, ShardSpec], states: dict[str, ShardState], budget: int) -> Decision:
    """What a request for shard ``name`` may do, given every shard's state and the budget (pure)."""
    spec = specs[name]
    if states[name].state in ("loaded", "loading"):
        return Decision("admit", reason="loaded")
    pinned = {n: s.memory_bytes for n, s in specs.items() if s.pinned and n != name}
    if spec.memory_bytes + sum(pinned.values()) > budget:
        held = f" with {fmt_bytes(sum(pinned.values()))} held by pinned shard(s) {', '.join(sorted(pinned))}" \
            if pinned else ""
        return Decision("refuse", reason=f"shard {name} needs {fmt_bytes(spec.memory_bytes)}; the memory budget is "
                                         f"{fmt_bytes(budget)}{held}: it can never be loaded on this host")
    holding = {n: specs[n].memory_bytes for n, st in states.items() if st.state in HOLDS_MEMORY and n != name}
    free = budget - sum(holding.values())
    if spec.memory_bytes <= free:
        return Decision("admit", reason="fits")
    leaving = sum(specs[n].memory_bytes for n, st in states.items() if st.state == "unloading" and n != name)
    if spec.memory_bytes <= free + leaving:
        return Decision("wait", reason="memory is being given back")
    idle = sorted((st.last_used, n) for n, st in states.items()
                  if n != name and st.state == "loaded" and not st.busy and not specs[n].pinned)
    victims, room = [], free + leaving
    for last, n in idle:
        victims.append(n)
        room += specs[n].memory_bytes
        if spec.memory_bytes <= room:
            return Decision("evict", tuple(victims),
                            f"unload {', '.join(victims)} (least recently used, idle) to make room for {name}")
    busy = sorted(n for n, st in states.items() if n != name and st.state in HOLDS_MEMORY and st.busy)
    return Decision("wait", reason=f"no room for {name} ({fmt_bytes(spec.memory_bytes)}) until a busy shard is "
                                   f"idle: {', '.join(busy) or 'none'}")


def expired(spec: ShardSpec, st: ShardState, now: float) -> bool:
    """True when a loaded, unpinned shard with no request through the gate has passed its TTL (the gate reads
    the child's slots before it unloads it).

    >>> st = ShardState("a", state="loaded", last_used=100.0)
    >>> expired(ShardSpec("a", 1, ttl_s=60), st, 170.0), expired(ShardSpec("a", 1, ttl_s=-1), st, 1e9)
    (True, False)
    """
    return (st.state == "loaded" and st.in_flight == 0 and not spec.pinned and spec.ttl_s >= 0
            and now - st.last_used >= spec.ttl_s)


# --- the runtime's answers ---------------------------------------------------------------------

#: llama-server router status values -> shard states
ROUTER_STATES = {"unloaded": "unloaded", "loading": "loading", "loaded": "loaded", "sleeping": "sleeping",
                 "downloading": "loading"}


def parse_models(text: str) -> dict[str, tuple[str, bool]]:
    """``{model id: (state, failed)}`` from the router's ``GET /models``; ``{}`` for anything else.

    >>> parse_models('{"data":[{"id":"a","status":{"value":"loaded"}},'
    ...              '{"id":"b","status":{"value":"unloaded","failed":true,"exit_code":1}}]}')
    {'a': ('loaded', False), 'b': ('unloaded', True)}
    >>> parse_models('[1, 2]'), parse_models('{"data": [{"id": 3}]}'), parse_models('not json')
    ({}, {}, {})
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    data = doc.get("data") if isinstance(doc, dict) else None
    out: dict[str, tuple[str, bool]] = {}
    for m in data if isinstance(data, list) else []:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        status = m.get("status") if isinstance(m.get("status"), dict) else {}
        value = status.get("value")
        out[m["id"]] = (ROUTER_STATES.get(value, "unknown") if isinstance(value, str) else "unknown",
                        status.get("failed") is True)
    return out


def child_ports(text: str) -> dict[str, int]:
    """``{model id: port}`` of every loaded model's child, from the router's ``GET /models`` (the ``--port``
    in its ``status.args``: the router starts each child on a free port of 127.0.0.1); models whose port
    is missing or not a port are left out.

    >>> child_ports('{"data":[{"id":"a","status":{"value":"loaded","args":["llama-server","--port","41234"]}},'
    ...             '{"id":"b","status":{"value":"unloaded","args":["x","--port","5"]}},'
    ...             '{"id":"c","status":{"value":"loaded","args":["x","--port","99999"]}},'
    ...             '{"id":"d","status":{"value":"loaded","args":["x","--port"]}}]}')
    {'a': 41234}
    >>> child_ports('not json'), child_ports('{"data":[{"id":"a","status":{"value":"loaded","args":"--port 1"}}]}')
    ({}, {})
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    data = doc.get("data") if isinstance(doc, dict) else None
    out: dict[str, int] = {}
    for m in data if isinstance(data, list) else []:
        status = m.get("status") if isinstance(m, dict) else None
        if not isinstance(status, dict) or status.get("value") != "loaded" or not isinstance(m.get("id"), str):
            continue
        args = status.get("args")
        if not isinstance(args, list) or "--port" not in args[:-1]:
            continue
        port = args[args.index("--port") + 1]
        if isinstance(port, str) and port.isdigit() and 0 < int(port) < 65536:
            out[m["id"]] = int(port)
    return out


def processing_slots(text: str) -> int | None:
    """How many slots of a llama-server are processing a request, from its ``GET /slots``; ``None`` for
    anything else (slots endpoint off, an error, not JSON).

    >>> processing_slots('[{"id":0,"is_processing":true},{"id":1,"is_processing":false}]')
    1
    >>> processing_slots('{"error":{"code":501}}'), processing_slots('[1, {"is_processing": "yes"}]'), processing_slots('x')
    (None, 0, None)
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, list):
        return None
    return sum(1 for slot in doc if isinstance(slot, dict) and slot.get("is_processing") is True)


def parse_event(line: str) -> tuple[str, str, int | None] | None:
    """``(model, state, exit_code)`` from one line of the router's ``GET /models/sse`` stream, or
    ``None`` for lines that are not a model status event.

    >>> parse_event('data: {"model":"a","event":"status_change","data":{"status":"unloaded","exit_code":1}}')
    ('a', 'unloaded', 1)
    >>> parse_event('data: {"model":"a","event":"model_status","data":{"status":"loading"}}')
    ('a', 'loading', None)
    >>> parse_event(': keep-alive'), parse_event('data: {"model":"*","event":"models_reload"}')
    (None, None)
    """
    if not line.startswith("data:"):
        return None
    try:
        ev = json.loads(line[5:].strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(ev, dict) or ev.get("event") not in ("status_change", "model_status"):
        return None
    model, data = ev.get("model"), ev.get("data")
    if not isinstance(model, str) or not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    code = data.get("exit_code")
    return model, ROUTER_STATES.get(data["status"], "unknown"), code if isinstance(code, int) else None


def request_model(method: str, query: dict[str, str], body: bytes) -> str | None:
    """The model a request names: the ``model`` field of a JSON body (POST), else the ``model``
    query parameter, as llama-server's router reads them; ``None`` when it names none.

    >>> request_model("POST", {}, b'{"model": "a", "prompt": "x"}'), request_model("GET", {"model": "b"}, b"")
    ('a', 'b')
    >>> request_model("POST", {}, b'{"prompt": "x"}'), request_model("POST", {}, b'\\xff{'), request_model("POST", {}, b'[1]')
    (None, None, None)
    """
    if method == "POST" and body:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("model"), str):
            return str(doc["model"])
    m = query.get("model")
    return m if isinstance(m, str) and m else None


def file_marks(files: tuple[tuple[str, int], ...]) -> tuple[tuple[int, float], ...]:
    """``(size, mtime)`` of each file, ``(-1, 0)`` for one that cannot be read: what changes when a file
    is repaired or replaced."""
    out = []
    for path, _ in files:
        try:
            st = os.stat(path)
            out.append((st.st_size, st.st_mtime))
        except OSError:
            out.append((-1, 0.0))
    return tuple(out)


def check_files(files: tuple[tuple[str, int], ...]) -> str | None:
    """Why a shard's files cannot be what was published (missing, not a file, wrong size), or ``None``.

    >>> check_files((("/nonexistent/x.gguf", 10),))
    '/nonexistent/x.gguf: missing'
    """
    problems = []
    for path, size in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot be read: {exc.strerror}")
            continue
        import stat as stat_mod

        if not stat_mod.S_ISREG(st.st_mode):
            problems.append(f"{path}: not a regular file")
        elif st.st_size != size:
            problems.append(f"{path}: {st.st_size} bytes, published with {size}")
    return "; ".join(problems) or None


# --- the single-shard case: llama-server --sleep-idle-seconds ----------------------------------

def parse_props_sleeping(text: str | None) -> bool | None:
    """``is_sleeping`` from llama-server ``GET /props`` (``None``: no answer or no such field).

    >>> parse_props_sleeping('{"is_sleeping": true, "model_path": "/m.gguf"}'), parse_props_sleeping('{}')
    (True, None)
    """
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    v = doc.get("is_sleeping") if isinstance(doc, dict) else None
    return v if isinstance(v, bool) else None


class SleepWatch:
    """One shard served by a plain llama-server with ``--sleep-idle-seconds``: its state from
    ``/props`` once per tick (``/props`` does not wake it), a load counted on each sleeping ->
    awake change. There is no layer in the request path, so no wake-up latency is measured here
    (``bench/shards.py`` measures it)."""

    def __init__(self, cfg: ShardsConfig) -> None:
        from .signals import Endpoint

        self.cfg = cfg
        [self.spec] = cfg.models.values()
        self.st = ShardState(self.spec.name)
        self.props = Endpoint(cfg.runtime_url.rstrip("/") + "/props")

    def tick(self, now: float, wall: float) -> None:
        sleeping = parse_props_sleeping(self.props.get())
        new = "unknown" if sleeping is None else ("sleeping" if sleeping else "loaded")
        old = self.st.state
        if new == "loaded" and old in ("sleeping", "unknown", "unloaded"):
            self.st.loads += old == "sleeping"
            self.st.last_used, self.st.last_used_wall = now, wall
        elif new == "sleeping" and old == "loaded":
            self.st.unloads += 1
        self.st.state = new

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.st.as_dict(self.spec)]

    def any_loaded(self) -> bool | None:
        return None if self.st.state == "unknown" else self.st.state == "loaded"

    def queue(self) -> int | None:
        return None

    def close(self) -> None:
        self.props.close()
