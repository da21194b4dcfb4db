"""Build llama.cpp's ``llama-server`` for CPU hosts and pack it as a runtime artifact.

The sources come from the ``llama-cpp-python`` sdist on PyPI, which vendors llama.cpp under
``vendor/llama.cpp``. The build is portable (``GGML_NATIVE=OFF``: a native build on one CPU
can carry kernels that crash with SIGILL elsewhere), static (``BUILD_SHARED_LIBS=OFF``: one
relocatable binary) and has no OpenMP (``GGML_OPENMP=OFF``: no ``libgomp`` needed on the host;
ggml's own thread pool is used). The result is cached under ``.cache/runtime/`` so it is built
once per machine; :func:`build_runtime` is the one entry point CI calls.

Steps, each a small function so tests and CI can run them separately:

1. :func:`fetch_sdist`   ``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION``
2. :func:`extract_llama_cpp`  unpack ``vendor/llama.cpp`` out of the sdist
3. :func:`compile_server`  ``cmake -S src -B build <flags>`` then ``cmake --build --target llama-server``
4. :func:`pack_runtime`  ``bin/llama-server`` (+ tools) into ``<name>-<version>-<variant>.tar`` and
   publish it with a manifest into an artifact store (see :mod:`tierfleet.artifacts.manifest`)

Example (about 4 minutes on two idle cores, ~10 on busy ones)::

    python -m tierfleet.artifacts.llama_build .cache/runtime [STORE]

With ``STORE`` the built runtime is also packed and published there (the same command as
``tierfleet artifacts build-runtime [CACHE_DIR] [STORE]``, :mod:`tierfleet.cli.artifacts`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tierfleet.exceptions import TierfleetError

if TYPE_CHECKING:
    from tierfleet.artifacts.manifest import Manifest

#: llama-cpp-python release whose vendored llama.cpp is built
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

#: sha256 of ``llama_cpp_python-0.3.36.tar.gz`` as served by PyPI
SDIST_SHA256 = {
    "0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
}

#: CMake cache entries of the portable CPU build
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_OPENMP=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)

#: targets built; the first one is the runtime, the others are small tools for the lab
TARGETS: tuple[str, ...] = ("llama-server", "llama-gguf-split")

#: with GGML_NATIVE=OFF ggml enables these x86 extensions (its INS_ENB default): x86-64-v3
X86_64_FEATURES: tuple[str, ...] = ("sse4_2", "avx", "avx2", "bmi2", "fma", "f16c")


class BuildError(TierfleetError, RuntimeError):
    """The llama.cpp runtime could not be fetched, built or packed."""

    exit_code = 4


@dataclass(frozen=True)
class Runtime:
    """A built runtime: where its binaries are and which variant they are."""

    bin_dir: Path
    variant: str
    version: str

    @property
    def server(self) -> Path:
        return self.bin_dir / "llama-server"


def variant_name(machine: str | None = None) -> str:
    """Artifact variant of a portable CPU build on ``machine`` (``uname -m``).

    >>> variant_name("x86_64")
    'linux-x86_64-cpu-v3'
    >>> variant_name("aarch64")
    'linux-aarch64-cpu'
    """
    machine = machine or platform.machine()
    if machine == "x86_64":
        return "linux-x86_64-cpu-v3"
    return f"linux-{machine}-cpu"


def default_cache_dir() -> Path:
    """``$TIERFLEET_CACHE/runtime`` or ``.cache/runtime`` under the current directory."""
    root = os.environ.get("TIERFLEET_CACHE")
    return Path(root) / "runtime" if root else Path(".cache") / "runtime"


def _run(argv: list[str], *, cwd: Path | None = None, log: Path | None = None, nice: int = 0) -> None:
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    except FileNotFoundError as exc:
        raise BuildError(f"{argv[0]}: not found; install it to build the runtime") from exc
    finally:
        if log:
            out.close()
    if proc.returncode != 0:
        where = f" (log: {log})" if log else ""
        raise BuildError(f"{' '.join(argv)}: exit status {proc.returncode}{where}")


def fetch_sdist(cache_dir: Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Return the cached sdist of llama-cpp-python ``version``, downloading it with pip if absent.

    The file is checked against :data:`SDIST_SHA256` when its digest is known.
    """
    from tierfleet.artifacts.manifest import sha256_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(cache_dir)],
            log=cache_dir / "build.log",
        )
    if not sdist.exists():
        raise BuildError(f"{sdist}: pip did not produce the sdist")
    want = SDIST_SHA256.get(version)
    if want and sha256_file(sdist) != want:
        raise BuildError(f"{sdist}: sha256 does not match the known digest {want}")
    return sdist


def extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Unpack ``vendor/llama.cpp`` from the sdist into ``dest`` and return its path."""
    prefix = sdist.name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    src = dest / "llama.cpp"
    if (src / "CMakeLists.txt").exists():
        return src
    tmp = dest / "llama.cpp.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(sdist) as tar:
            members = []
            for member in tar.getmembers():
                if not member.name.startswith(prefix):
                    continue
                member.name = member.name[len(prefix):]
                if member.name:
                    members.append(member)
            if not members:
                raise BuildError(f"{sdist}: no vendor/llama.cpp inside")
            # the "data" filter refuses absolute paths, '..', device files and links leaving tmp
            tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"{sdist}: cannot unpack vendor/llama.cpp: {exc}") from exc
    tmp.rename(src)
    return src


def compile_server(src: Path, build_dir: Path, *, jobs: int = 2, nice: int = 10,
                   targets: tuple[str, ...] = TARGETS, log: Path | None = None) -> Path:
    """Configure and build ``targets`` with :data:`CMAKE_FLAGS`; return ``build_dir/bin``."""
    _run(["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS], log=log, nice=nice)
    _run(["cmake", "--build", str(build_dir), "--target", *targets, "-j", str(jobs)],
         log=log, nice=nice)
    bin_dir = build_dir / "bin"
    for target in targets:
        if not (bin_dir / target).is_file():
            raise BuildError(f"{bin_dir / target}: not produced by the build")
    return bin_dir


def cached_runtime(cache_dir: Path | None = None) -> Runtime | None:
    """The runtime built earlier under ``cache_dir``, or None when there is none."""
    cache_dir = cache_dir or default_cache_dir()
    bin_dir = cache_dir / "build" / "bin"
    if (bin_dir / "llama-server").is_file() and os.access(bin_dir / "llama-server", os.X_OK):
        return Runtime(bin_dir=bin_dir.resolve(), variant=variant_name(), version=LLAMA_CPP_PYTHON_VERSION)
    return None


def build_runtime(cache_dir: Path | None = None, *, version: str = LLAMA_CPP_PYTHON_VERSION,
                  jobs: int = 2, nice: int = 10) -> Runtime:
    """Fetch, extract and build the runtime under ``cache_dir`` unless it is cached already."""
    cache_dir = cache_dir or default_cache_dir()
    found = cached_runtime(cache_dir)
    if found:
        return found
    sdist = fetch_sdist(cache_dir, version)
    src = extract_llama_cpp(sdist, cache_dir)
    bin_dir = compile_server(src, cache_dir / "build", jobs=jobs, nice=nice,
                             log=cache_dir / "build.log")
    return Runtime(bin_dir=bin_dir.resolve(), variant=variant_name(), version=version)


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def pack_runtime(runtime: Runtime, store: Path, *, compress: bool = True, level: int = 19) -> Manifest:
    """Pack the runtime's binaries into a tarball and publish it into the artifact store ``store``.

    The tarball holds ``bin/<target>`` for each of :data:`TARGETS` with zeroed owners and times, so
    the same build packs to the same bytes. Published as name ``llama-server``, version
    ``<llama-cpp-python version>+<variant>`` (one store entry per CPU variant).
    """
    from tierfleet.artifacts.manifest import publish

    version = f"{runtime.version}+{runtime.variant}"
    staging = Path(store) / ".pack"
    staging.mkdir(parents=True, exist_ok=True)
    tarball = staging / f"llama-server-{version}.tar"
    with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
        for target in TARGETS:
            path = runtime.bin_dir / target
            if path.is_file():
                tar.add(path, arcname=f"bin/{target}", filter=_tar_filter)
    try:
        return publish(store, [tarball], kind="runtime", name="llama-server", version=version,
                       variant=runtime.variant, compress=compress, level=level,
                       extra={"cmake_flags": list(CMAKE_FLAGS),
                              "llama_cpp_python": runtime.version,
                              "cpu_features": list(X86_64_FEATURES) if "x86_64" in runtime.variant else []})
    finally:
        tarball.unlink(missing_ok=True)
        try:
            staging.rmdir()
        except OSError:
            pass


if __name__ == "__main__":
    # the command line is the CLI's `tierfleet artifacts build-runtime` (the library never imports click)
    from tierfleet.cli import main

    main(["artifacts", "build-runtime", *sys.argv[1:]])
