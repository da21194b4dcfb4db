"""Zstandard compression of artifacts, streamed (constant memory for multi-GB models).

Files written here are plain zstd frames: ``zstd -d FILE.zst`` on a host decompresses them.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a").write_bytes(b"tier" * 1000)
>>> compress_file(d / "a", d / "a.zst", level=3) < 4000
True
>>> decompress_file(d / "a.zst", d / "b")
4000
>>> (d / "b").read_bytes() == (d / "a").read_bytes()
True
"""

from __future__ import annotations

from pathlib import Path

import zstandard

CHUNK = 1 << 20


def compress_file(src: Path, dst: Path, *, level: int = 19, threads: int = 0) -> int:
    """Compress ``src`` into ``dst`` at zstd ``level``; return the compressed size in bytes.

    ``threads`` > 0 uses that many zstd worker threads (the output stays one standard frame).
    The frame records the content size and a checksum, like ``zstd -19 --check``.
    """
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True,
                                    write_content_size=True)
    size = Path(src).stat().st_size
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        cctx.copy_stream(fin, fout, size=size, read_size=CHUNK, write_size=CHUNK)
    return Path(dst).stat().st_size


def decompress_file(src: Path, dst: Path) -> int:
    """Decompress ``src`` (a zstd file) into ``dst``; return the decompressed size in bytes."""
    dctx = zstandard.ZstdDecompressor()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        _, written = dctx.copy_stream(fin, fout, read_size=CHUNK, write_size=CHUNK)
    return written
