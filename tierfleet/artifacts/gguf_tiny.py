"""Generate small llama-architecture GGUF models that llama.cpp really loads.

No model weights can be fetched in the lab, so tests and the lab fleet use models made here:
random weights, a small SentencePiece-style vocabulary, every key llama.cpp reads. Output is
deterministic per seed (same seed, same bytes).

- :func:`write_tiny_gguf`  ~150 k parameters (f32, f16 or Q8_0), optionally split into shards
  (``name-0000i-of-0000n.gguf``, load the first one) for the shard-loading path.
- :func:`write_sized_gguf` the same architecture scaled to a target file size (a few hundred MB
  of Q8_0) with heavy-tailed weights, for storage and transfer benchmarks. Its weights are
  synthetic: they imitate the shape of trained weight distributions (heavy tails, uneven
  per-channel scales, a few outlier channels), not their structure.

Generated text is random; tests must never assert exact output. Special and byte tokens are
biased down in the output layer (a shared direction every embedding carries and their output
rows point against) so a completion is made of printable word pieces rather than an early
end-of-sequence or stray UTF-8 lead bytes.

Example::

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny.gguf"
    >>> [p.name for p in write_tiny_gguf(out, qtype="q8_0", seed=1)]
    ['tiny.gguf']

Command line: ``python -m tierfleet.artifacts.gguf_tiny OUT.gguf [f16|q8_0|f32] [TENSORS_PER_SHARD]``, the same
as ``tierfleet artifacts tiny-model`` (:mod:`tierfleet.cli.artifacts`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tierfleet.exceptions import ConfigError

#: SentencePiece's word-boundary marker, used in place of a leading space
SPACE = "\u2581"

#: words whose every prefix becomes a token (with the word-boundary marker in front)
WORDS: tuple[str, ...] = (
    "the", "fleet", "model", "edge", "node", "serve", "token", "tier", "power", "cache",
    "quiet", "river", "stone", "light", "green", "north", "paper", "glass", "field", "cloud",
    "and", "of", "to", "a", "in", "is", "on", "with", "for", "at",
    "hello", "world", "jetson", "server", "deploy", "health", "ready", "alpha", "beta", "gamma",
)

#: SentencePiece token types as llama.cpp reads them
TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE = 1, 2, 3, 6

#: a ChatML template; llama.cpp recognises it without --jinja
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

QTYPES = ("f32", "f16", "q8_0")


@dataclass(frozen=True)
class TinyConfig:
    """Shape of a generated llama model. Row lengths must be multiples of 32 for Q8_0."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx: int = 256
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def build_vocab(words: tuple[str, ...] = WORDS) -> tuple[list[str], list[float], list[int]]:
    """Return (tokens, scores, types): specials, the 256 ``<0xNN>`` byte tokens, word pieces.

    Every prefix of each ``▁word`` is a token so SentencePiece merges can reach the whole word;
    longer pieces score higher so merges prefer them.

    >>> tokens, scores, types = build_vocab(("ab",))
    >>> tokens[:3], tokens[3], tokens[258], tokens[259:]
    (['<unk>', '<s>', '</s>'], '<0x00>', '<0xFF>', ['a', 'ab', '▁', '▁a', '▁ab'])
    """
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL] + [TYPE_BYTE] * 256
    pieces: set[str] = set()
    for word in words:
        for form in (SPACE + word, word):
            pieces.update(form[: i + 1] for i in range(len(form)))
    ordered = sorted(pieces)
    tokens += ordered
    types += [TYPE_NORMAL] * len(ordered)
    scores = [0.0] * 259 + [float(len(p)) - 100.0 for p in ordered]
    return tokens, scores, types


def _heavy_tailed(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """Student-t (df 5) weights with log-normal per-input-channel scales and rare outlier channels."""
    x = rng.standard_t(5.0, size=(rows, cols)).astype(np.float32)
    x *= np.float32(std / np.sqrt(5.0 / 3.0))
    col_scale = rng.lognormal(0.0, 0.3, size=cols).astype(np.float32)
    outliers = rng.random(cols) < 0.005
    col_scale[outliers] *= 8.0
    x *= col_scale
    return x


def _weights(cfg: TinyConfig, n_vocab: int, n_special: int, rng: np.random.Generator,
             heavy_tailed: bool) -> dict[str, np.ndarray]:
    e, kv = cfg.n_embd, cfg.n_head_kv * cfg.head_dim

    def mat(rows: int, cols: int, std: float = 0.02) -> np.ndarray:
        if heavy_tailed:
            return _heavy_tailed(rng, rows, cols, std)
        return rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)

    direction = rng.normal(size=e).astype(np.float32)
    direction /= np.linalg.norm(direction)
    embd = mat(n_vocab, e, 0.05) + direction * np.float32(1.0)
    out = mat(n_vocab, e, 0.05)
    # the shared direction every hidden state carries: word pieces point along it, specials
    # and byte tokens against it, so they are (almost) never sampled
    out[:n_special] -= direction * np.float32(2.0)
    out[n_special:] += direction * np.float32(0.5)

    tensors: dict[str, np.ndarray] = {"token_embd.weight": embd}
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = np.ones(e, dtype=np.float32)
        tensors[p + "attn_q.weight"] = mat(e, e)
        tensors[p + "attn_k.weight"] = mat(kv, e)
        tensors[p + "attn_v.weight"] = mat(kv, e)
        tensors[p + "attn_output.weight"] = mat(e, e)
        tensors[p + "ffn_norm.weight"] = np.ones(e, dtype=np.float32)
        tensors[p + "ffn_gate.weight"] = mat(cfg.n_ff, e)
        tensors[p + "ffn_up.weight"] = mat(cfg.n_ff, e)
        tensors[p + "ffn_down.weight"] = mat(e, cfg.n_ff)
    tensors["output_norm.weight"] = np.ones(e, dtype=np.float32)
    tensors["output.weight"] = out
    return tensors


def _check(qtype: str, cfg: TinyConfig, split_max_tensors: int) -> None:
    if qtype not in QTYPES:
        raise ConfigError("gguf_tiny", "qtype", f"{qtype!r} is not one of {', '.join(QTYPES)}")
    if cfg.n_embd % cfg.n_head or cfg.n_head % cfg.n_head_kv:
        raise ConfigError("gguf_tiny", "n_head", "n_embd must divide by n_head and n_head by n_head_kv")
    if qtype == "q8_0" and (cfg.n_embd % 32 or cfg.n_ff % 32):
        raise ConfigError("gguf_tiny", "n_embd", "Q8_0 needs n_embd and n_ff to be multiples of 32")
    if split_max_tensors < 0:
        raise ConfigError("gguf_tiny", "split_max_tensors", "must be 0 (one file) or a positive count")


def write_gguf(path: Path, *, qtype: str = "f16", seed: int = 0, config: TinyConfig | None = None,
               split_max_tensors: int = 0, heavy_tailed: bool = False, name: str = "tierfleet-tiny") -> list[Path]:
    """Write a llama GGUF of ``config``'s shape to ``path``; return the file(s) written, first shard first."""
    import gguf

    cfg = config or TinyConfig()
    _check(qtype, cfg, split_max_tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types = build_vocab()
    n_special = 259
    tensors = _weights(cfg, len(tokens), n_special, rng, heavy_tailed)

    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    gguf_logger = logging.getLogger("gguf")
    previous_level = gguf_logger.level
    gguf_logger.setLevel(logging.WARNING)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    try:
        writer.add_name(name)
        writer.add_context_length(cfg.n_ctx)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_block_count(cfg.n_layer)
        writer.add_feed_forward_length(cfg.n_ff)
        writer.add_head_count(cfg.n_head)
        writer.add_head_count_kv(cfg.n_head_kv)
        writer.add_layer_norm_rms_eps(cfg.rms_eps)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(cfg.rope_freq_base)
        writer.add_vocab_size(len(tokens))
        writer.add_file_type(int(file_type))
        if qtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)
        for tname, data in tensors.items():
            if data.ndim == 1 or qtype == "f32":
                writer.add_tensor(tname, data.astype(np.float32))
            elif qtype == "f16":
                writer.add_tensor(tname, data.astype(np.float16))
            else:
                q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(tname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        del tensors
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        written = writer.format_shard_names(path)
    finally:
        writer.close()
        gguf_logger.setLevel(previous_level)
    return written


def write_tiny_gguf(path: Path, *, qtype: str = "f16", seed: int = 0, split_max_tensors: int = 0) -> list[Path]:
    """Write the ~150 k parameter lab model; with ``split_max_tensors`` > 0, as shards.

    Sizes: f16 ~310 KB, q8_0 ~175 KB, f32 ~610 KB.
    """
    return write_gguf(path, qtype=qtype, seed=seed, split_max_tensors=split_max_tensors)


def sized_config(target_bytes: int, qtype: str = "q8_0") -> TinyConfig:
    """A 1024-wide llama shape with as many layers as it takes to reach about ``target_bytes``.

    >>> sized_config(300 * 10**6).n_layer
    25
    """
    per_param = {"q8_0": 34 / 32, "f16": 2.0, "f32": 4.0}[qtype]
    base = TinyConfig(n_layer=1, n_embd=1024, n_head=16, n_head_kv=4, n_ff=2816, n_ctx=512)
    kv = base.n_head_kv * base.head_dim
    per_layer = (2 * base.n_embd * base.n_embd + 2 * kv * base.n_embd + 3 * base.n_ff * base.n_embd) * per_param
    layers = max(1, round(target_bytes / per_layer))
    return TinyConfig(n_layer=layers, n_embd=1024, n_head=16, n_head_kv=4, n_ff=2816, n_ctx=512)


def write_sized_gguf(path: Path, target_bytes: int, *, qtype: str = "q8_0", seed: int = 0) -> Path:
    """Write a llama GGUF of about ``target_bytes`` with heavy-tailed synthetic weights."""
    if target_bytes <= 0:
        raise ConfigError("gguf_tiny", "target_bytes", "must be a positive byte count")
    [written] = write_gguf(path, qtype=qtype, seed=seed, config=sized_config(target_bytes, qtype),
                           heavy_tailed=True, name="tierfleet-sized")
    return written


if __name__ == "__main__":
    # the command line is the CLI's `tierfleet artifacts tiny-model` (the library never imports click)
    from tierfleet.cli import main

    main(["artifacts", "tiny-model", *sys.argv[1:]])
