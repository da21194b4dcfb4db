"""Fixtures for running release operations for real: pyinfra's @local connector, a real HTTP store."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
from tierfleet.artifacts.http_store import BodyFault, RangeRequestHandler, StoreServer
from tierfleet.artifacts.manifest import publish


class ServerControl:
    """Shared knobs of the test store server: cut transfers short, record Range headers."""

    def __init__(self) -> None:
        self.cut_after: int | None = None
        self.delay_s = 0.0
        self.ranges: list[str | None] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()


def make_handler(control: ServerControl) -> type[RangeRequestHandler]:
    class Handler(RangeRequestHandler):
        def serve(self, body: bool) -> None:
            with control.lock:
                control.ranges.append(self.headers.get("Range"))
                control.paths.append(self.path)
            time.sleep(control.delay_s)
            super().serve(body)

        def body_fault(self) -> BodyFault | None:
            # send part of the body, then drop the connection (Content-Length promised more)
            return None if control.cut_after is None else BodyFault("truncate", after=control.cut_after)

    return Handler


@pytest.fixture
def store(tmp_path):
    """An artifact store with the tiny model (one file) and its 3-shard split, both with .zst forms."""
    src = tmp_path / "src"
    single = write_tiny_gguf(src / "tiny.gguf", qtype="q8_0", seed=1)
    shards = write_tiny_gguf(src / "split" / "tiny.gguf", qtype="q8_0", seed=1, split_max_tensors=8)
    store = tmp_path / "store"
    return {
        "dir": store,
        "single": publish(store, single, kind="model", name="tiny", version="1", compress=True, level=3),
        "split": publish(store, shards, kind="model", name="tiny-split", version="1", compress=True, level=3),
        "src": src,
    }


@pytest.fixture
def server(store):
    control = ServerControl()
    with StoreServer(store["dir"], handler=make_handler(control)) as srv:
        srv.control = control
        yield srv


@pytest.fixture
def small_fs(tmp_path):
    """A real, tiny tmpfs (256 KiB) mounted for the test and always unmounted; skipped without mount rights."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def tree(root: Path) -> list[str]:
    """Everything under ``root`` (relative paths, links shown with their targets), but the lock file."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel == ".lock":
            continue
        out.append(f"{rel} -> {p.readlink()}" if p.is_symlink() else rel)
    return out
