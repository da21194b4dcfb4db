"""Model shards on the control side: their data, their memory from the real files, the runtime they need.

A *shard* is a loadable unit with its own files and runtime arguments: a whole model (one GGUF or a
split GGUF set) or one model of a pipeline. A tier (``tiers.yaml``) or a host's inventory data
(``shards``) lists the shards a host serves; a host with no ``shards`` keeps its one model, loaded
for good, exactly as before.

.. code-block:: python

    shards = [
        {"name": "chat", "model": {"name": "DeepSeek-R1-Distill-Qwen-1.5B", "quant": "Q8_0",
                                   "file": "DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf", "size_gb": 1.89},
         "ttl": "10m", "preload": True},
        {"name": "draft", "model": {...}, "ttl": 0},          # unloaded after each request
        {"name": "embed", "model": {...}, "pinned": True},    # never unloaded
    ]

What the tier deploy renders (:mod:`tierfleet.deploys.tier`):

- one shard: the plain llama-server unit with ``--sleep-idle-seconds <ttl>`` (llama-server's own
  unload on idle; ``/props`` reports ``is_sleeping``) and the ops policy's ``shards`` section in
  ``mode: sleep``;
- several shards: llama-server in router mode on ``runtime_port + 1`` with a rendered
  ``--models-preset`` (:func:`render_preset`) and ``--no-models-autoload``, and the ops daemon's
  shard gate on ``runtime_port`` (``mode: router``) keeping the memory budget.

Memory: :func:`gguf_info` reads a GGUF (all files of a split set) with the ``gguf`` package when the
artifact is published and the figures go into the manifest's ``extra`` (signed with it);
:func:`estimate_memory` turns them, with the shard's context and the host's platform, into the
bytes that count against the host's budget (:func:`default_budget`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from tierfleet import rules
from tierfleet.catalog import GB, ModelArtifact
from tierfleet.exceptions import ConfigError, RuleError

#: shard names: what clients put in a request's ``model`` field, a preset section and a directory name
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: the longest TTL (30 days); anything longer is "never" (-1)
MAX_TTL_S = 30 * 86400
#: Ollama's keep_alive default
DEFAULT_TTL = "5m"


def parse_duration(value: Any) -> float:
    """An Ollama-style duration in seconds: a number of seconds, or Go-style ``"1h30m"``, ``"5m"``,
    ``"90s"``, ``"500ms"``; ``0`` is "unload after each request" and any negative value is "never" (-1).

    >>> parse_duration("5m"), parse_duration("1h30m"), parse_duration(0), parse_duration("-1"), parse_duration(-5)
    (300.0, 5400.0, 0.0, -1.0, -1.0)
    >>> parse_duration("10 minutes")
    Traceback (most recent call last):
    ...
    ValueError: '10 minutes' is not a duration: seconds, or a number with ms, s, m or h such as 90s, 5m, 1h30m; 0 = after each request, -1 = never
    """
    allowed = ("seconds, or a number with ms, s, m or h such as 90s, 5m, 1h30m; 0 = after each request, "
               "-1 = never")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: {allowed}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        neg = text.startswith("-")
        body = text[1:] if neg else text
        if re.fullmatch(r"\d+(\.\d+)?", body):
            seconds = float(body)
        elif _DURATION_RE.fullmatch(body):
            seconds = sum(float(n) * _UNIT_S[u] for n, u in _PART_RE.findall(body))
        else:
            raise ValueError(f"{value!r} is not a duration: {allowed}")
        seconds = -seconds if neg else seconds
    else:
        raise ValueError(f"{value!r} is not a duration: {allowed}")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration: {allowed}")
    if seconds < 0:
        return -1.0
    if seconds > MAX_TTL_S:
        raise ValueError(f"{value!r} is longer than 30 days; use -1 for never")
    return seconds


class ShardSpec(pydantic.BaseModel):
    """One shard a host serves."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=False)

    name: str = pydantic.Field(pattern=NAME_PATTERN, description="the name requests use in their 'model' field "
                               "(letters, digits, '.', '_', '-'; at most 64)")
    model: ModelArtifact = pydantic.Field(description="the artifact (name, quant, file, size_gb, sha256)")
    version: str = pydantic.Field(default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
                                  description="version of the model artifact in the store")
    ttl: float = pydantic.Field(default=parse_duration(DEFAULT_TTL), description="idle time before the shard is "
                                "unloaded: seconds or 90s/5m/1h30m; 0 after each request; -1 never")
    preload: bool = pydantic.Field(default=False, description="load when the runtime starts")
    pinned: bool = pydantic.Field(default=False, description="never unloaded, by TTL or to make room")
    context_size: int | None = pydantic.Field(default=None, gt=0, le=1 << 20,
                                              description="llama-server -c for this shard (default: the tier's)")
    parallel: int | None = pydantic.Field(default=None, gt=0, le=256, description="llama-server -np (default: "
                                          "the tier's)")
    warmup: bool | None = pydantic.Field(default=None, description="run llama.cpp's warm-up pass when the shard "
                                         "loads (default: only for preload and pinned shards; without it a wake-up "
                                         "reads the files at disk speed and the first request does the warm-up's "
                                         "work)")
    repack: bool | None = pydantic.Field(default=None, description="let llama.cpp repack the weights it runs on "
                                         "the CPU (default: only for preload and pinned shards; without it the "
                                         "weights stay mapped from the file: a wake-up reads at disk speed and the "
                                         "kernel can drop them; CPU-only ARM hosts decode faster with it)")

    @pydantic.field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if not isinstance(v, str) or not re.match(NAME_PATTERN, v):
            raise ValueError(f"{v!r} is not a shard name: letters, digits, '.', '_', '-' (at most 64, starting with "
                             "a letter or digit)")
        return v

    @pydantic.field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> float:
        return parse_duration(v)

    @pydantic.model_validator(mode="after")
    def _release_id(self) -> ShardSpec:
        """The shard's release id (``<name>-<quant>-<version>``) follows the release operations' rule."""
        try:
            rules.model_release_id(self.model.name, self.model.quant, self.version)
        except RuleError as exc:
            raise ValueError(f"shard {self.name}: {exc}") from None
        return self

    @pydantic.model_validator(mode="after")
    def _pinned_is_never_unloaded(self) -> ShardSpec:
        if self.pinned and self.ttl >= 0 and "ttl" in self.model_fields_set:
            raise ValueError(f"shard {self.name} is pinned (never unloaded) but has ttl {self.ttl:g} s; "
                             "leave ttl out or use -1")
        return self

    @property
    def ttl_s(self) -> float:
        """The TTL the runtime uses: -1 for pinned shards."""
        return -1.0 if self.pinned else self.ttl

    @property
    def load_flags(self) -> tuple[bool, bool]:
        """``(warmup, repack)`` for the runtime: as set, else llama.cpp's defaults (both on) for a shard loaded
        once for good (preload, pinned), and both off for one loaded on demand, whose wake-up a request waits for.

        >>> from tierfleet.catalog import load_catalog
        >>> m = load_catalog().tier("basic").model
        >>> ShardSpec(name="a", model=m).load_flags, ShardSpec(name="a", model=m, pinned=True).load_flags
        ((False, False), (True, True))
        >>> ShardSpec(name="a", model=m, warmup=True).load_flags
        (True, False)
        """
        kept = self.preload or self.pinned
        return (kept if self.warmup is None else self.warmup), (kept if self.repack is None else self.repack)


def shard_version(shard: ShardSpec, model_version: str, versions: dict[str, str] | None = None) -> tuple[str, str]:
    """The version a host serves ``shard`` at, and the inventory key it comes from: ``shard_versions[name]``
    (what ``tierfleet upgrade --shard-version`` sets), else the version the shard names (``shards``), else the
    host's ``model_version``.

    >>> from tierfleet.catalog import load_catalog
    >>> m = load_catalog().tier("basic").model
    >>> shard_version(ShardSpec(name="a", model=m, version="3"), "2"), shard_version(ShardSpec(name="b", model=m), "2")
    (('3', 'shards'), ('2', 'model_version'))
    >>> shard_version(ShardSpec(name="a", model=m, version="3"), "2", {"a": "4"})
    ('4', 'shard_versions')
    """
    if versions and shard.name in versions:
        return versions[shard.name], "shard_versions"
    if "version" in shard.model_fields_set:
        return shard.version, "shards"
    return model_version, "model_version"


def check_shard_list(shards: tuple[ShardSpec, ...], source: str, key: str = "shards",
                     error: type[ConfigError] = ConfigError) -> None:
    """Names are unique (a request names one shard)."""
    seen: set[str] = set()
    for i, s in enumerate(shards):
        if s.name in seen:
            raise error(source, f"{key}[{i}].name", f"{s.name!r} is listed twice; shard names are unique")
        seen.add(s.name)


# --- what the files hold -----------------------------------------------------------------------

def gguf_info(paths: list[Path]) -> dict[str, Any]:
    """The figures a memory estimate needs, read from a GGUF (every file of a split set) with the
    ``gguf`` package: tensor bytes, layers, heads, K/V widths, vocabulary, training context.

    Same as ``gguf-dump FILE`` (its metadata and the sum of its tensors' sizes). Raises
    :class:`ConfigError` for a file that is not a GGUF or lacks a key llama.cpp needs.
    """
    from gguf import GGUFReader

    tensor_bytes, first = 0, None
    for p in paths:
        try:
            reader = GGUFReader(str(p))
        except (ValueError, OSError, KeyError, IndexError) as exc:
            raise ConfigError(str(p), "(gguf)", f"not a readable GGUF file: {exc}") from None
        tensor_bytes += sum(int(t.n_bytes) for t in reader.tensors)
        if first is None and "general.architecture" in reader.fields:
            first = reader  # the first file of a split set carries the metadata

    if first is None:
        raise ConfigError(str(paths[0]), "general.architecture", "missing in every file: not a model GGUF")

    def field(key: str) -> Any:
        f = first.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except (ValueError, IndexError, TypeError):
            return None

    arch = field("general.architecture")
    if not isinstance(arch, str):
        raise ConfigError(str(paths[0]), "general.architecture", "missing: not a model GGUF")

    def number(key: str, required: bool = True) -> int | None:
        v = field(f"{arch}.{key}")
        if isinstance(v, list):  # per-layer values (some architectures): the largest
            v = max(v) if v else None
        if v is None and required:
            raise ConfigError(str(paths[0]), f"{arch}.{key}", "missing: llama.cpp needs it")
        return int(v) if v is not None else None

    n_embd = number("embedding_length")
    n_head = number("attention.head_count")
    n_head_kv = number("attention.head_count_kv", required=False) or n_head
    head_dim = (n_embd or 0) // (n_head or 1)
    tokens = first.fields.get("tokenizer.ggml.tokens")
    return {
        "arch": arch,
        "tensor_bytes": tensor_bytes,
        "files": len(paths),
        "n_layer": number("block_count"),
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "k_dim": (number("attention.key_length", required=False) or head_dim) * n_head_kv,
        "v_dim": (number("attention.value_length", required=False) or head_dim) * n_head_kv,
        "n_ff": number("feed_forward_length", required=False),
        "n_vocab": len(tokens.data) if tokens is not None else number("vocab_size", required=False),
        "n_ctx_train": number("context_length", required=False),
    }


GGUF_KEYS = ("tensor_bytes", "n_layer", "n_embd", "n_head", "k_dim", "v_dim")


def info_from_manifest(extra: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``gguf`` figures of a model manifest's ``extra``, checked; :class:`ConfigError` when absent."""
    info = extra.get("gguf") if isinstance(extra, dict) else None
    if not isinstance(info, dict) and isinstance(extra, dict) and isinstance(extra.get("gguf_error"), str):
        raise ConfigError(source, "extra.gguf", f"the model's files are not a readable GGUF: {extra['gguf_error']}")
    if not isinstance(info, dict):
        raise ConfigError(source, "extra.gguf", "missing: the manifest has no GGUF figures for a memory estimate; "
                          "publish the model again with this tierfleet (tierfleet store publish / lab publish)")
    for k in GGUF_KEYS:
        v = info.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(source, f"extra.gguf.{k}", f"{v!r} is not a count >= 0")
    return info


#: llama.cpp's default micro-batch (``-ub``): the compute buffer holds this many tokens' activations
UBATCH = 512
#: the runtime process itself (binary, libraries, HTTP server, tokenizer), bytes
PROCESS_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Estimate:
    """A loaded shard's memory, by where it lives. ``budget_bytes`` is what counts on the platform:
    RAM on CPU hosts, GPU memory on GPU nodes, both on unified-memory Jetsons."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    ram_bytes: int
    gpu_bytes: int
    budget_bytes: int


def estimate_memory(info: dict[str, Any], context_size: int, parallel: int, platform: str,
                    gpu_layers: int) -> Estimate:
    """The memory a shard takes once loaded by llama-server.

    - weights: the GGUF tensors' bytes (mapped from the file on CPU; copied to the GPU when offloaded);
    - KV cache: ``context_size`` cells x layers x (K + V width) x 2 bytes (f16 cache; llama-server's ``-c``
      is shared by its ``-np`` slots);
    - compute buffer: ``4 x ubatch x max(vocabulary, heads x context per slot, FFN width)`` bytes, the
      largest activation llama.cpp keeps for a micro-batch (logits, attention scores or the FFN);
    - the process itself: :data:`PROCESS_BYTES` of RAM.

    Offloaded layers (``gpu_layers``, all when it is at least the layer count) put their share of
    weights and KV cache, and the compute buffer, on the GPU.

    >>> info = {"tensor_bytes": 1_000_000, "n_layer": 4, "n_embd": 64, "n_head": 4, "k_dim": 32, "v_dim": 32,
    ...         "n_vocab": 1000, "n_ff": 128}
    >>> e = estimate_memory(info, 256, 1, "cpu", 0)
    >>> e.kv_bytes, e.compute_bytes, e.gpu_bytes, e.budget_bytes == e.ram_bytes
    (131072, 2097152, 0, True)
    >>> g = estimate_memory(info, 256, 1, "gpu", 99); g.budget_bytes == g.gpu_bytes == 1_000_000 + 131072 + 2097152
    True
    """
    n_layer = max(1, int(info["n_layer"]))
    weights = int(info["tensor_bytes"])
    kv = int(context_size) * n_layer * (int(info["k_dim"]) + int(info["v_dim"])) * 2
    per_slot = max(1, context_size // max(1, parallel))
    widest = max(int(info.get("n_vocab") or 0), int(info["n_head"]) * per_slot, int(info.get("n_ff") or 0))
    compute = 4 * UBATCH * widest
    offload = 0.0 if platform == "cpu" else min(1.0, max(0, gpu_layers) / n_layer)
    gpu = int(offload * (weights + kv)) + (compute if offload else 0)
    ram = weights + kv + compute + PROCESS_BYTES - gpu
    if platform == "cpu":
        budget = ram
    elif platform == "jetson":
        budget = ram + gpu
    else:
        budget = gpu
    return Estimate(weights, kv, compute, ram, gpu, budget)


def default_budget(platform: str, ram_bytes: int | None, gpu_memory_bytes: int | None,
                   tier_gpu_gb: float, tier_ram_gb: float) -> int:
    """The memory shards may hold on a host, in bytes, when its data sets no ``shard_memory_budget_gb``:

    - GPU node: 90 % of its largest GPU's memory (the tier's GPU figure when that is unknown);
    - Jetson (unified memory): all of it but 1.5 GB for the OS (the tier's GPU figure when unknown);
    - CPU host: its RAM but 2 GB for the OS (the tier's RAM figure less 2 GB when unknown).

    >>> default_budget("gpu", 64 * 2**30, 16 * 2**30, 4, 16) == int(16 * 2**30 * 0.9)
    True
    >>> default_budget("cpu", None, None, 2, 8)
    6000000000
    """
    if platform == "gpu":
        return int(gpu_memory_bytes * 0.9) if gpu_memory_bytes else int(tier_gpu_gb * GB)
    if platform == "jetson":
        return int(ram_bytes - 1.5 * GB) if ram_bytes else int(tier_gpu_gb * GB)
    return int(ram_bytes - 2 * GB) if ram_bytes else int((tier_ram_gb - 2) * GB)


# --- what the host runs ------------------------------------------------------------------------

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._/+-]+$")


def _ini_value(section: str, key: str, value: Any) -> str:
    """One preset value: a number, true/false or a path/name of safe characters (no newline, ``;``,
    ``#``, ``[``, ``=`` or space can reach the file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _SAFE_VALUE.match(value):
        return value
    raise ConfigError("shards preset", f"{section}.{key}", f"{value!r} is not a number, true/false or a path of "
                      "letters, digits and ._/+-")


@dataclass(frozen=True)
class PresetShard:
    """One section of the router's preset: the shard's name, its first GGUF, its own arguments."""

    name: str
    model_path: str
    context_size: int | None = None
    parallel: int | None = None
    load_on_startup: bool = False
    #: llama.cpp's warm-up pass and CPU weight repacking on load (its defaults: on)
    warmup: bool = True
    repack: bool = True


def render_preset(shards: list[PresetShard], *, threads: int, context_size: int, gpu_layers: int, parallel: int,
                  mlock: bool = False, stop_timeout: int = 10) -> str:
    """llama-server's ``--models-preset`` INI for ``shards`` (pure).

    Router-mode children inherit the router's command-line arguments, which win over the preset, so
    every per-shard argument lives here: ``[*]`` holds the tier's, each shard's section its own.

    >>> print(render_preset([PresetShard("chat", "/m/chat/current/c.gguf", 8192, load_on_startup=True),
    ...                      PresetShard("draft", "/m/draft/current/d.gguf", warmup=False, repack=False)],
    ...                     threads=4, context_size=4096, gpu_layers=0, parallel=1))
    ; Managed by tierfleet: the model shards this host serves (llama-server --models-preset)
    version = 1
    <BLANKLINE>
    [*]
    threads = 4
    ctx-size = 4096
    n-gpu-layers = 0
    parallel = 1
    stop-timeout = 10
    <BLANKLINE>
    [chat]
    model = /m/chat/current/c.gguf
    ctx-size = 8192
    load-on-startup = true
    <BLANKLINE>
    [draft]
    model = /m/draft/current/d.gguf
    warmup = false
    repack = false
    <BLANKLINE>
    """
    lines = ["; Managed by tierfleet: the model shards this host serves (llama-server --models-preset)",
             "version = 1", "", "[*]"]
    glob: dict[str, Any] = {"threads": threads, "ctx-size": context_size, "n-gpu-layers": gpu_layers,
                            "parallel": parallel, "stop-timeout": stop_timeout}
    if mlock:
        glob["mlock"] = True
    lines += [f"{k} = {_ini_value('*', k, v)}" for k, v in glob.items()]
    seen: set[str] = set()
    for s in shards:
        if not re.match(NAME_PATTERN, s.name) or s.name in seen:
            raise ConfigError("shards preset", s.name, "not a unique shard name of letters, digits, '.', '_', '-'")
        seen.add(s.name)
        own: dict[str, Any] = {"model": s.model_path}
        if s.context_size:
            own["ctx-size"] = int(s.context_size)
        if s.parallel:
            own["parallel"] = int(s.parallel)
        if s.load_on_startup:
            own["load-on-startup"] = True
        if not s.warmup:
            own["warmup"] = False
        if not s.repack:
            own["repack"] = False
        lines += ["", f"[{s.name}]"] + [f"{k} = {_ini_value(s.name, k, v)}" for k, v in own.items()]
    return "\n".join(lines) + "\n"


def sleep_seconds(ttl_s: float) -> int | None:
    """``--sleep-idle-seconds`` for one shard's TTL: whole seconds, at least 1 (llama-server refuses 0:
    "cannot be 0 or less than -1"), ``None`` for never.

    >>> sleep_seconds(300), sleep_seconds(0), sleep_seconds(0.4), sleep_seconds(-1)
    (300, 1, 1, None)
    """
    if ttl_s < 0:
        return None
    return max(1, math.ceil(ttl_s))
