"""What the tier deploy renders for a host that serves model shards (pure: no pyinfra I/O here).

:func:`shard_plan` turns the host's shards, their verified manifests (whose signed ``extra.gguf`` holds the
files' figures), its tier and platform into everything the deploy writes: release roots, the router's
preset or the single shard's ``--sleep-idle-seconds``, the unit's arguments and the ops policy's
``shards`` section. Bad data (a shard that can never fit the budget, pinned shards that together do not, a
manifest without GGUF figures) is a :class:`~tierfleet.exceptions.ConfigError` that names the shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tierfleet.artifacts.manifest import Manifest
from tierfleet.catalog import GB, Tier
from tierfleet.exceptions import ConfigError
from tierfleet.settings import HostSettings
from tierfleet.shards import PresetShard, ShardSpec, default_budget, estimate_memory, info_from_manifest, \
    render_preset, shard_version, sleep_seconds
from tierfleet_ops.shards import fmt_bytes as _fmt

#: where the router's preset lives on a host
PRESET_PATH = "/etc/tierfleet/shards.ini"
MEMORY_KIND = {"cpu": "ram", "gpu": "gpu", "jetson": "unified"}


def effective_shards(host_shards: tuple[ShardSpec, ...] | None, tier: Tier, model_version: str = "1",
                     versions: dict[str, str] | None = None) -> tuple[ShardSpec, ...]:
    """The host's own ``shards`` data when set (``[]`` turns the tier's off), else the tier's, each at the version
    :func:`tierfleet.shards.shard_version` gives it.

    >>> from tierfleet.catalog import load_catalog
    >>> m = load_catalog().tier("basic").model
    >>> own, bare = ShardSpec(name="a", model=m, version="3"), ShardSpec(name="b", model=m)
    >>> [s.version for s in effective_shards((own, bare), load_catalog().tier("basic"), "2")]
    ['3', '2']
    >>> [s.version for s in effective_shards((own, bare), load_catalog().tier("basic"), "2", {"a": "4"})]
    ['4', '2']
    """
    shards = tuple(host_shards) if host_shards is not None else tuple(tier.shards)
    out = []
    for sh in shards:
        version, _ = shard_version(sh, model_version, versions)
        out.append(sh if version == sh.version else sh.model_copy(update={"version": version}))
    return tuple(out)


def wanted_models(settings: HostSettings, tier: Tier) -> dict[str, str]:
    """The model releases a deploy of ``tier`` gives the host: ``{"model": id}`` for one model (or one shard, which
    lives in the model's own root), else ``{shard name: id}`` (router mode: each shard in its own root).

    >>> from tierfleet.catalog import load_catalog
    >>> basic = load_catalog().tier("basic")
    >>> wanted_models(HostSettings(model_version="2"), basic)
    {'model': 'DeepSeek-R1-Distill-Qwen-1.5B-Q8_0-2'}
    """
    shards = effective_shards(settings.shards, tier, settings.model_version, settings.shard_versions)
    if len(shards) > 1:
        return {s.name: shard_release_id(s) for s in shards}
    if shards:
        return {"model": shard_release_id(shards[0])}
    model = settings.model or tier.model
    return {"model": f"{model.name}-{model.quant}-{settings.model_version}"}


def shard_root(model_root: str, name: str) -> str:
    """A shard's release root (its own ``releases/`` and ``current``).

    >>> shard_root("/var/lib/tierfleet/models/", "chat")
    '/var/lib/tierfleet/models/shards/chat'
    """
    return f"{model_root.rstrip('/')}/shards/{name}"


def shard_release_id(shard: ShardSpec) -> str:
    return f"{shard.model.name}-{shard.model.quant}-{shard.version}"


@dataclass
class ShardPlan:
    """Everything a shard host's deploy writes."""

    mode: str
    #: shard name -> (release root, release id)
    roots: dict[str, tuple[str, str]]
    #: extra arguments for ``llama-server.service.j2``
    unit_args: dict[str, Any]
    #: the router's preset text (router mode)
    preset: str | None
    #: the ops policy's ``shards`` section (``ops_shards`` of ``ops-policy.yaml.j2``)
    policy: dict[str, Any]
    #: the port the health gate checks, and the shard it asks for (router mode)
    health_port: int
    health_model: str | None
    estimates: dict[str, int] = field(default_factory=dict)


def shard_plan(shards: tuple[ShardSpec, ...], manifests: dict[str, Manifest], *, tier: Tier, platform: str,
               model_root: str, runtime_port: int, threads: int, mlock: bool, budget_gb: float | None,
               ram_bytes: int | None, gpu_memory_bytes: int | None, source: str) -> ShardPlan:
    """The plan for ``shards`` (at least one) on one host; ``manifests`` by shard name.

    One shard: the plain unit with ``--sleep-idle-seconds`` (no gate; ``mode: sleep``). Several: the
    router on ``runtime_port + 1`` and the gate on ``runtime_port`` (``mode: router``).
    """
    gpu_layers = tier.runtime.gpu_layers if platform != "cpu" else 0
    budget = int(budget_gb * GB) if budget_gb else default_budget(platform, ram_bytes, gpu_memory_bytes,
                                                                  tier.requires.gpu_memory_gb, tier.requires.ram_gb)
    estimates, models, roots = {}, {}, {}
    for s in shards:
        m = manifests[s.name]
        info = info_from_manifest(m.extra, f"{source}: shard {s.name}: {m.name} {m.version} manifest")
        ctx = s.context_size or tier.runtime.context_size
        est = estimate_memory(info, ctx, s.parallel or tier.runtime.parallel, platform, gpu_layers)
        estimates[s.name] = est.budget_bytes
        root = shard_root(model_root, s.name)
        roots[s.name] = (root, shard_release_id(s))
        models[s.name] = {"memory_bytes": est.budget_bytes, "ttl_s": s.ttl_s, "preload": s.preload or s.pinned,
                          "pinned": s.pinned,
                          "files": [{"path": f"{root}/current/{f.path}", "size": f.size} for f in m.files]}
        if est.budget_bytes > budget:
            raise ConfigError(source, f"shards.{s.name}", f"needs {_fmt(est.budget_bytes)} ({MEMORY_KIND[platform]}: "
                              f"weights {_fmt(est.weights_bytes)}, KV cache {_fmt(est.kv_bytes)} for {ctx} tokens, "
                              f"compute {_fmt(est.compute_bytes)}); the host's shard budget is {_fmt(budget)}")
    pinned = sum(estimates[s.name] for s in shards if s.pinned or s.preload)
    if pinned > budget:
        raise ConfigError(source, "shards", f"pinned and preloaded shards need {_fmt(pinned)} together; the host's "
                          f"shard budget is {_fmt(budget)}")
    kind = MEMORY_KIND[platform]
    if len(shards) == 1:
        [s] = shards
        secs = sleep_seconds(s.ttl_s)
        return ShardPlan(
            mode="sleep", roots={}, preset=None,
            unit_args={"sleep_idle_seconds": secs, "warmup": s.load_flags[0], "repack": s.load_flags[1],
                       "context_size": s.context_size or tier.runtime.context_size,
                       "parallel": s.parallel or tier.runtime.parallel},
            policy={"mode": "sleep", "runtime_url": f"http://127.0.0.1:{runtime_port}", "memory_kind": kind,
                    "models": {s.name: {**models[s.name], "ttl_s": -1.0 if secs is None else float(secs),
                                        "files": []}}},
            health_port=runtime_port, health_model=None, estimates=estimates)
    router_port = runtime_port + 1
    first = next((s for s in shards if s.pinned or s.preload), shards[0])
    preset = render_preset(
        [PresetShard(s.name, f"{roots[s.name][0]}/current/{manifests[s.name].entrypoint}", s.context_size,
                     s.parallel, load_on_startup=s.preload or s.pinned, warmup=s.load_flags[0],
                     repack=s.load_flags[1]) for s in shards],
        threads=threads, context_size=tier.runtime.context_size, gpu_layers=gpu_layers,
        parallel=tier.runtime.parallel, mlock=mlock)
    return ShardPlan(
        mode="router", roots=roots, preset=preset,
        unit_args={"models_preset": PRESET_PATH, "models_max": len(shards), "port": router_port},
        policy={"mode": "router", "listen": f"127.0.0.1:{runtime_port}",
                "runtime_url": f"http://127.0.0.1:{router_port}", "memory_budget_bytes": budget,
                "memory_kind": kind, "models": models},
        health_port=router_port, health_model=first.name, estimates=estimates)
