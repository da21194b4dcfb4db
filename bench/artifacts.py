"""Zstandard on quantized GGUF files: compression ratio and decompression speed.

Usage::

    python bench/artifacts.py                     # generate a ~300 MB Q8_0 GGUF, measure it
    python bench/artifacts.py --size-mb 100 --level19-sample-mb 32
    python bench/artifacts.py --file model.gguf   # measure a real model instead

Prints a table: for each file and zstd level, the compressed size, the saving
(1 - compressed/original), compression time and decompression throughput (python-zstandard
streaming file to /dev/null, and the ``zstd -d`` command a host uses, both from page cache).
Level 19 is slow (a few MB/s on one core), so by default it runs on a leading sample of the file.
Then (unless ``--no-ops``) the release operations' timings on the first file over loopback HTTP
(install, rerun, switch) and llama-server's start-to-healthy time with the tiny model.

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


def bench_release(model: Path, work: Path) -> list[str]:
    """Install ``model`` as a release over loopback HTTP (plain and .zst), switch, and rerun."""
    from tierfleet.artifacts.http_store import StoreServer
    from tierfleet.artifacts.manifest import publish, sha256_file
    from tierfleet.lab.runner import run_local
    from tierfleet.operations import release

    lines = []
    size = model.stat().st_size
    t0 = time.perf_counter()
    sha256_file(model)
    lines.append(f"sha256 of {size / MB:.0f} MB (what a rerun without a manifest would redo): "
                 f"{time.perf_counter() - t0:.2f} s")
    m = publish(work / "store", [model], kind="model", name="bench", version="1", compress=True, level=3)
    with StoreServer(work / "store") as srv:
        for compressed in (False, True):
            root = work / f"host-{int(compressed)}"
            kw = dict(root=str(root), release="bench-1", manifest=m, source=f"{srv.url}bench/1/",
                      compressed=compressed)
            t0 = time.perf_counter()
            res = run_local(release.artifact, **kw)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            res2 = run_local(release.artifact, **kw)
            rerun = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_local(release.switch, root=str(root), release="bench-1")
            switch = time.perf_counter() - t0
            form = ".zst (level 3) + zstd -d on the host" if compressed else "plain"
            outcome = (res.will_change, res.failed, res2.will_change, res2.failed)
            status = "ok" if outcome == (True, False, False, False) else "UNEXPECTED"
            lines.append(f"release.artifact {form}: download+verify+manifest+rename {first:.2f} s; "
                         f"rerun {rerun:.2f} s (no change); switch {switch:.2f} s [{status}]")
            shutil.rmtree(root)
    return lines


def bench_serve(work: Path) -> list[str]:
    """llama-server start to /health 200 and a 16-token completion on the tiny model, if built."""
    import json
    import socket
    import urllib.request

    from tierfleet.artifacts.llama_build import cached_runtime
    from tierfleet.lab.system import wait_until

    repo_cache = Path(__file__).resolve().parents[1] / ".cache" / "runtime"
    runtime = cached_runtime(repo_cache)
    if runtime is None:
        return [f"llama-server: not built under {repo_cache} (python -m tierfleet.artifacts.llama_build)"]
    lines = []
    for qtype in ("f16", "q8_0"):
        model = write_gguf(work / f"serve-{qtype}.gguf", qtype=qtype, seed=0)[0]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(runtime.server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                 "-t", "1", "-c", "256", "-np", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def settled() -> str:
            if proc.poll() is not None:
                return "exited"
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    return "healthy" if r.status == 200 else ""
            except OSError:
                return ""

        try:
            healthy = wait_until(settled, timeout=60, interval=0.01) == "healthy"
            ready = time.perf_counter() - t0
            if not healthy:
                lines.append(f"llama-server {qtype}: did not become healthy")
                continue
            body = json.dumps({"prompt": "the fleet", "max_tokens": 16, "seed": 1}).encode()
            req = urllib.request.Request(url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            t1 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                tokens = json.loads(r.read())["usage"]["completion_tokens"]
            lines.append(f"llama-server tiny {qtype}: start to /health 200 in {ready:.2f} s; "
                         f"{tokens}-token completion in {1000 * (time.perf_counter() - t1):.1f} ms")
        finally:
            proc.terminate()
            proc.wait()
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=300, help="size of the generated Q8_0 model (MB)")
    ap.add_argument("--levels", default="3,19", help="zstd levels, comma separated")
    ap.add_argument("--level19-sample-mb", type=int, default=64,
                    help="levels >= 10 run on the first N MB only (0: whole file)")
    ap.add_argument("--file", type=Path, action="append", default=[], help="measure this file (repeatable)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write temporary files")
    ap.add_argument("--no-ops", action="store_true", help="skip the release-install and llama-server timings")
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
        extra = [] if args.no_ops else bench_release(subjects[0][1], work) + bench_serve(work)
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
    if extra:
        print()
        for line in extra:
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
