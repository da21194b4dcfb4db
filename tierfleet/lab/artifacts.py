"""What the tier deploy fetches, published into the lab's artifact store.

- the llama-server runtime (:func:`tierfleet.artifacts.llama_build.build_runtime`, cached under
  ``.cache/runtime``; a first build takes 4-10 minutes) as ``llama-server/<version>+<variant>/``;
- the lab's tiny model (``tiny-llama`` Q8_0, about 170 kB, written deterministically by
  :func:`tierfleet.artifacts.gguf_tiny.write_tiny_gguf`) as ``tiny-llama-Q8_0/1/``.

The store is ``<lab dir>/artifacts`` (:func:`tierfleet.lab.mirror.artifacts_dir`); ``lab down``
leaves it in place, so publishing is needed once per state dir. Publishing what is already there
only checks the manifests (a fraction of a second).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tierfleet.artifacts.manifest import MANIFEST_NAME, load_manifest
from tierfleet.exceptions import ConfigError
from tierfleet.lab.mirror import artifacts_dir
from tierfleet.lab.state import repo_root

#: the model the lab's inventory gives every host (its ``model`` data)
TINY_MODEL_NAME = "tiny-llama"
TINY_MODEL_QUANT = "Q8_0"
TINY_MODEL_FILE = "tiny-q8_0.gguf"
TINY_MODEL_SEED = 1
#: bytes of ``write_tiny_gguf(..., qtype="q8_0", seed=1)`` (a test checks it against a fresh file)
TINY_MODEL_BYTES = 168320
TINY_MODEL_VERSION = "1"


def tiny_model() -> dict:
    """The inventory's ``model`` entry for the lab's tiny model."""
    return {"name": TINY_MODEL_NAME, "quant": TINY_MODEL_QUANT, "file": TINY_MODEL_FILE,
            "size_gb": TINY_MODEL_BYTES / 1e9}


@dataclass
class Published:
    name: str
    version: str
    path: Path
    reused: bool


def _present(entry: Path) -> bool:
    """True when a store entry's manifest is there and every file it lists has its recorded size."""
    mpath = entry / MANIFEST_NAME
    if not mpath.is_file():
        return False
    try:
        manifest = load_manifest(mpath)
    except ConfigError:
        return False
    for f in manifest.files:
        for blob in (f, f.zst):
            if blob is not None and not ((entry / blob.path).is_file()
                                         and (entry / blob.path).stat().st_size == blob.size):
                return False
    return True


def _drop_damaged(entry: Path, log) -> None:
    """Remove a store entry whose files no longer match its manifest (the lab's store only: a fleet
    store's versions are immutable, :func:`tierfleet.artifacts.manifest.publish` refuses new content)."""
    if entry.exists():
        log(f"{entry}: files do not match the manifest; publishing again")
        shutil.rmtree(entry)


def publish_runtime(store: Path, cache: Path | None = None, log=print) -> Published:
    """Build (or reuse the cached build of) llama-server and publish it into ``store``."""
    from tierfleet.artifacts.llama_build import LLAMA_CPP_PYTHON_VERSION, build_runtime, cached_runtime, \
        pack_runtime, variant_name

    version = f"{LLAMA_CPP_PYTHON_VERSION}+{variant_name()}"
    entry = Path(store) / "llama-server" / version
    if _present(entry):
        return Published("llama-server", version, entry, reused=True)
    _drop_damaged(entry, log)
    cache = Path(cache) if cache else repo_root() / ".cache" / "runtime"
    if cached_runtime(cache) is None:
        log(f"building llama-server under {cache} (once; 4-10 minutes)")
    runtime = build_runtime(cache)
    manifest = pack_runtime(runtime, Path(store))
    return Published(manifest.name, manifest.version, Path(store) / manifest.name / manifest.version, reused=False)


def publish_tiny_model(store: Path, log=print) -> Published:
    """Write the tiny model and publish it as ``tiny-llama-Q8_0`` version ``1`` (compressed too)."""
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
    from tierfleet.artifacts.manifest import publish

    name = f"{TINY_MODEL_NAME}-{TINY_MODEL_QUANT}"
    entry = Path(store) / name / TINY_MODEL_VERSION
    if _present(entry):
        return Published(name, TINY_MODEL_VERSION, entry, reused=True)
    _drop_damaged(entry, log)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_tiny_gguf(Path(tmp) / TINY_MODEL_FILE, qtype="q8_0", seed=TINY_MODEL_SEED)
        publish(Path(store), files, kind="model", name=name, version=TINY_MODEL_VERSION, compress=True)
    return Published(name, TINY_MODEL_VERSION, entry, reused=False)


def publish_ops(store: Path, log=print) -> Published:
    """Publish the ops daemon's wheelhouse for this Python and machine (the lab hosts run the same)."""
    import platform
    import sys

    from tierfleet.artifacts.wheelhouse import NAME, ops_version, pack_ops, release_name

    version = release_name(ops_version(), f"{sys.version_info.major}.{sys.version_info.minor}", platform.machine())
    entry = Path(store) / NAME / version
    if _present(entry):
        return Published(NAME, version, entry, reused=True)
    _drop_damaged(entry, log)
    manifest = pack_ops(Path(store))
    return Published(manifest.name, manifest.version, entry, reused=False)


def sign_lab_store(lab_dir: Path, log=print, lab_cache: Path | None = None) -> list[Path]:
    """Sign every manifest in the lab's store that the lab key has not signed yet (a throw-away key made
    with the lab, :func:`tierfleet.lab.base.ensure_key`); the inventory pins its public part."""
    from tierfleet.artifacts.signing import sign_store
    from tierfleet.lab.base import armored_key, ensure_key
    from tierfleet.lab.state import cache_dir

    gnupg, _ = ensure_key(Path(lab_cache) if lab_cache else cache_dir())
    signed = sign_store(artifacts_dir(lab_dir), armored_key(gnupg), gnupghome=gnupg)
    for manifest in signed:
        log(f"signed {manifest}")
    return signed


def publish_lab_artifacts(lab_dir: Path, cache: Path | None = None, log=print,
                          lab_cache: Path | None = None) -> list[Published]:
    """Publish the runtime, the tiny model and the ops daemon into the lab's store and sign their manifests;
    quick when all are there."""
    store = artifacts_dir(lab_dir)
    store.mkdir(parents=True, exist_ok=True)
    published = [publish_runtime(store, cache, log), publish_tiny_model(store, log), publish_ops(store, log)]
    sign_lab_store(lab_dir, log=lambda _: None, lab_cache=lab_cache)
    return published
