"""The generated models: what llama.cpp needs is in them, and the same seed gives the same bytes."""

from __future__ import annotations

import subprocess
import sys

import gguf
import numpy as np
import pytest

from tierfleet.artifacts.gguf_tiny import (
    TYPE_BYTE,
    TYPE_CONTROL,
    TYPE_NORMAL,
    TYPE_UNKNOWN,
    TinyConfig,
    build_vocab,
    sized_config,
    write_gguf,
    write_sized_gguf,
    write_tiny_gguf,
)
from tierfleet.exceptions import ConfigError

MANDATORY = [
    "llama.context_length", "llama.embedding_length", "llama.block_count",
    "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.rope.dimension_count", "llama.rope.freq_base", "llama.vocab_size", "general.file_type",
    "tokenizer.ggml.pre", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.chat_template",
]


def value(reader, key):
    return reader.fields[key].contents()


def test_q8_0_model_has_every_key_and_tensor(tmp_path):
    [path] = write_tiny_gguf(tmp_path / "m.gguf", qtype="q8_0")
    r = gguf.GGUFReader(path)
    for key in MANDATORY + ["general.quantization_version"]:
        assert key in r.fields, key
    assert value(r, "general.architecture") == "llama"
    assert value(r, "tokenizer.ggml.model") == "llama"
    assert value(r, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert value(r, "llama.rope.dimension_count") == 16
    names = {t.name: t for t in r.tensors}
    assert len(names) == 2 + 2 * 9 + 1
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert list(names["blk.1.attn_k.weight"].shape) == [64, 32]  # ggml order {cols, rows}
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert 150_000 < path.stat().st_size < 200_000


def test_vocabulary_is_sentencepiece_with_byte_fallback():
    tokens, scores, types = build_vocab()
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert types[:3] == [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {TYPE_BYTE}
    assert set(types[259:]) == {TYPE_NORMAL}
    assert len(set(tokens)) == len(tokens) == len(scores)
    pieces = set(tokens[259:])
    for word in ("fleet", "jetson"):
        assert all(("\u2581" + word)[: i + 1] in pieces for i in range(len(word) + 1))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7)[0].read_bytes()
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7)[0].read_bytes()
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8)[0].read_bytes()
    assert a == b
    assert a != c and len(a) == len(c)


def test_special_and_byte_tokens_are_biased_down(tmp_path):
    [path] = write_tiny_gguf(tmp_path / "m.gguf", qtype="f32")
    r = gguf.GGUFReader(path)
    t = {x.name: np.array(x.data) for x in r.tensors}
    emb, out = t["token_embd.weight"], t["output.weight"]
    hidden = emb[259:].mean(axis=0)  # what the residual stream carries for word pieces
    logits = out @ hidden
    assert logits[:259].max() < logits[259:].min()


def test_split_model_shards(tmp_path):
    files = write_tiny_gguf(tmp_path / "s.gguf", qtype="q8_0", split_max_tensors=8)
    assert [p.name for p in files] == [f"s-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    r = gguf.GGUFReader(files[0])
    assert value(r, "split.count") == 3 and value(r, "split.no") == 0
    assert sum(len(gguf.GGUFReader(p).tensors) for p in files) == 21


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"qtype": "q4_k"}, "qtype"),
    ({"config": TinyConfig(n_embd=48, n_head=4, n_head_kv=2, n_ff=96), "qtype": "q8_0"}, "n_embd"),
    ({"config": TinyConfig(n_head=3)}, "n_head"),
    ({"split_max_tensors": -1}, "split_max_tensors"),
])
def test_bad_parameters_name_the_key(tmp_path, kwargs, key):
    with pytest.raises(ConfigError) as info:
        write_gguf(tmp_path / "x.gguf", **kwargs)
    assert info.value.key == key
    assert not (tmp_path / "x.gguf").exists()


def test_sized_model_reaches_its_target(tmp_path):
    path = write_sized_gguf(tmp_path / "big.gguf", 30 * 10**6)
    size = path.stat().st_size
    assert sized_config(30 * 10**6).n_layer == 3  # ~12 MB of Q8_0 per 1024-wide layer
    assert 0.7 * 30e6 < size < 1.3 * 30e6
    r = gguf.GGUFReader(path)
    assert value(r, "llama.embedding_length") == 1024


def test_sized_model_weights_are_heavy_tailed(tmp_path):
    path = write_sized_gguf(tmp_path / "big.gguf", 15 * 10**6, qtype="f16")
    r = gguf.GGUFReader(path)
    w = np.array(next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight").data, dtype=np.float32).ravel()
    kurtosis = float(((w - w.mean()) ** 4).mean() / w.var() ** 2)
    assert kurtosis > 4.0  # a normal distribution has 3


def test_command_line_writes_the_model(tmp_path):
    out = tmp_path / "m.gguf"
    run = subprocess.run([sys.executable, "-m", "tierfleet.artifacts.gguf_tiny", str(out), "q8_0"],
                         capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (0, f"{out}\n"), run.stderr
    [ref] = write_tiny_gguf(tmp_path / "ref.gguf", qtype="q8_0")
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize(("args", "message"), [
    ([], "Missing argument 'OUT'"),
    (["m.gguf", "q4"], "gguf_tiny: qtype: 'q4' is not one of f32, f16, q8_0"),
    (["m.gguf", "f16", "many"], "'many' is not a valid integer"),
])
def test_command_line_errors_exit_2(tmp_path, capsys, args, message):
    from tierfleet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["artifacts", "tiny-model", *[str(tmp_path / a) if a.endswith(".gguf") else a for a in args]])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
