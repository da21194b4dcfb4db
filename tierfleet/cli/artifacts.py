"""``tierfleet artifacts ...``: build the llama-server runtime, write the tiny test models.

The same commands run as ``python -m tierfleet.artifacts.llama_build [CACHE_DIR] [STORE]`` (what
``make runtime`` calls) and ``python -m tierfleet.artifacts.gguf_tiny OUT [QTYPE] [TENSORS_PER_SHARD]``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def artifacts() -> None:
    """Build and generate artifacts (the llama-server runtime, tiny GGUF models)."""


@artifacts.command("build-runtime")
@click.argument("cache_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.argument("store", required=False, type=click.Path(file_okay=False, path_type=Path))
def build_runtime(cache_dir: Path | None, store: Path | None) -> None:
    """Build llama-server under CACHE_DIR (default .cache/runtime; once, 4-10 minutes) and print its path.

    With STORE, also pack it and publish it into that artifact store, and print the published tarball.
    """
    from tierfleet.artifacts.llama_build import build_runtime as build, default_cache_dir, pack_runtime

    runtime = build(cache_dir or default_cache_dir())
    click.echo(runtime.server)
    if store is not None:
        manifest = pack_runtime(runtime, store)
        click.echo(store / manifest.name / manifest.version / manifest.entrypoint)


@artifacts.command("tiny-model")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("qtype", required=False, default="f16")
@click.argument("tensors_per_shard", required=False, default=0, type=int)
def tiny_model(out: Path, qtype: str, tensors_per_shard: int) -> None:
    """Write the lab's tiny llama model to OUT and print the files written.

    QTYPE is f16 (the default), q8_0 or f32 (numpy and gguf, the `lab` extra, are needed).

    With TENSORS_PER_SHARD > 0 it is split into shards (OUT-0000i-of-0000n.gguf; load the first).
    """
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf

    for path in write_tiny_gguf(out, qtype=qtype, split_max_tensors=tensors_per_shard):
        click.echo(path)
