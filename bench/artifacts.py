"""Zstandard on quantized GGUF files: compression ratio and decompression speed.

Usage::

    python bench/artifacts.py                     # generate a ~300 MB Q8_0 GGUF, measure it
    python bench/artifacts.py --size-mb 100 --level19-sample-mb 32
    python bench/artifacts.py --file model.gguf   # measure a real model instead

Prints one table: for each file and zstd level, the compressed size, the saving
(1 - compressed/original), compression time and decompression throughput (python-zstandard
streaming file to /dev/null, and the ``zstd -d`` command a host uses, both from page cache).
Level 19 is slow (a few MB/s on one core), so by default it runs on a leading sample of the file.

The generated files are synthetic: llama-shaped tensors with heavy-tailed weights (Student-t,
uneven per-channel scales, rare outlier channels), quantized with gguf-py's Q8_0 (byte-identical
to llama-quantize). How well a quantized file compresses depends on how its int8 values are
distributed inside each 32-value block; trained weights have structure these do not, so real
models can compress differently. ``--file`` measures a real one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zstandard  # noqa: E402

from tierfleet.artifacts.compress import CHUNK, compress_file  # noqa: E402
from tierfleet.artifacts.gguf_tiny import sized_config, write_gguf, write_sized_gguf  # noqa: E402

MB = 10**6


def decompress_speed(zst: Path, original_size: int) -> float:
    """MB/s of python-zstandard streaming ``zst`` to /dev/null."""
    dctx = zstandard.ZstdDecompressor()
    t0 = time.perf_counter()
    with open(zst, "rb") as fin, open(os.devnull, "wb") as fout:
        dctx.copy_stream(fin, fout, read_size=CHUNK, write_size=CHUNK)
    return original_size / MB / (time.perf_counter() - t0)


def cli_decompress_speed(zst: Path, original_size: int) -> float | None:
    """MB/s of ``zstd -d -c FILE > /dev/null`` (what a host runs), or None without the command."""
    if not shutil.which("zstd"):
        return None
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as out:
        subprocess.run(["zstd", "-d", "-q", "-c", str(zst)], stdout=out, check=True)
    return original_size / MB / (time.perf_counter() - t0)


def sample(src: Path, dst: Path, limit: int) -> Path:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = limit
        while left > 0 and (chunk := fin.read(min(CHUNK, left))):
            fout.write(chunk)
            left -= len(chunk)
    return dst


def measure(label: str, path: Path, work: Path, levels: list[int], sample_mb: int, rows: list[str]) -> None:
    size = path.stat().st_size
    for level in levels:
        subject, note = path, ""
        if level >= 10 and sample_mb and size > sample_mb * MB:
            subject = sample(path, work / f"sample-{sample_mb}MB.bin", sample_mb * MB)
            note = f" (first {sample_mb} MB)"
        n = subject.stat().st_size
        zst = work / f"{subject.name}.{level}.zst"
        t0 = time.perf_counter()
        csize = compress_file(subject, zst, level=level)
        ctime = time.perf_counter() - t0
        py = decompress_speed(zst, n)
        cli = cli_decompress_speed(zst, n)
        rows.append(
            f"{label + note:<52} {n / MB:>9.1f} {level:>5} {csize / MB:>9.1f} {100 * (1 - csize / n):>7.1f}% "
            f"{ctime:>8.1f} {n / MB / ctime:>8.1f} {py:>9.0f} {('%.0f' % cli) if cli else 'n/a':>9}"
        )
        zst.unlink()
        if subject is not path:
            subject.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=300, help="size of the generated Q8_0 model (MB)")
    ap.add_argument("--levels", default="3,19", help="zstd levels, comma separated")
    ap.add_argument("--level19-sample-mb", type=int, default=64,
                    help="levels >= 10 run on the first N MB only (0: whole file)")
    ap.add_argument("--file", type=Path, action="append", default=[], help="measure this file (repeatable)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write temporary files")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    work = Path(tempfile.mkdtemp(prefix="tierfleet-bench-", dir=args.workdir))
    rows: list[str] = []
    try:
        subjects: list[tuple[str, Path]] = [(f"given: {p.name}", p) for p in args.file]
        if not args.file:
            t0 = time.perf_counter()
            q8 = write_sized_gguf(work / "sized-q8_0.gguf", args.size_mb * MB, qtype="q8_0", seed=0)
            gen = time.perf_counter() - t0
            print(f"generated {q8.name}: {q8.stat().st_size / MB:.1f} MB, "
                  f"{sized_config(args.size_mb * MB).n_layer} layers x 1024 wide, in {gen:.1f} s")
            subjects.append(("Q8_0, heavy-tailed synthetic weights", q8))
            normal = write_gguf(work / "normal-q8_0.gguf", qtype="q8_0", seed=0,
                                config=sized_config(min(args.size_mb, 100) * MB), heavy_tailed=False)[0]
            subjects.append(("Q8_0, normal(0, 0.02) weights", normal))
            f16 = write_sized_gguf(work / "sized-f16.gguf", min(args.size_mb, 100) * MB, qtype="f16", seed=0)
            subjects.append(("F16, heavy-tailed synthetic weights", f16))
            tiny = write_gguf(work / "tiny-q8_0.gguf", qtype="q8_0", seed=0)[0]
            subjects.append(("tiny lab model Q8_0 (not representative)", tiny))
        for label, path in subjects:
            measure(label, path, work, levels, args.level19_sample_mb, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'file':<52} {'MB':>9} {'level':>5} {'zst MB':>9} {'saving':>8} {'comp s':>8} {'comp MB/s':>8} "
          f"{'dec MB/s':>9} {'zstd -d':>9}")
    for row in rows:
        print(row)
    print()
    print("Dec MB/s: python-zstandard, one thread, file in page cache, output to /dev/null; 'zstd -d' is the")
    print("command-line tool a host uses. The article's claim of 60 % storage saved is to be read against the")
    print("'saving' column. The synthetic weights imitate the value distribution of trained weights (heavy tails,")
    print("uneven channel scales, outliers) but not their structure: real quantized models may compress somewhat")
    print("differently; measure one with --file when a real GGUF is at hand.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
