"""The runtime build's small steps: unpacking, digest check, error reporting, reproducible packing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tierfleet.artifacts import llama_build as lb
from tierfleet.artifacts.manifest import load_manifest, sha256_file

REPO_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "runtime"


def make_sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_portable_build_flags():
    flags = set(lb.CMAKE_FLAGS)
    assert {"-DGGML_NATIVE=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_UI=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF"} <= flags
    assert lb.TARGETS[0] == "llama-server"


def test_variant_names():
    assert lb.variant_name("x86_64") == "linux-x86_64-cpu-v3"
    assert lb.variant_name("aarch64") == "linux-aarch64-cpu"


def test_extracts_only_vendored_llama_cpp(tmp_path):
    p = "llama_cpp_python-0.3.36"
    sdist = make_sdist(tmp_path / f"{p}.tar.gz", {
        f"{p}/setup.py": b"",
        f"{p}/vendor/llama.cpp/CMakeLists.txt": b"project(x)",
        f"{p}/vendor/llama.cpp/ggml/a.c": b"int a;",
    })
    src = lb.extract_llama_cpp(sdist, tmp_path / "out")
    assert sorted(str(x.relative_to(src)) for x in src.rglob("*")) == ["CMakeLists.txt", "ggml", "ggml/a.c"]
    assert lb.extract_llama_cpp(sdist, tmp_path / "out") == src  # cached


def test_refuses_members_escaping_the_tree(tmp_path):
    p = "llama_cpp_python-0.3.36"
    sdist = make_sdist(tmp_path / f"{p}.tar.gz", {
        f"{p}/vendor/llama.cpp/CMakeLists.txt": b"",
        f"{p}/vendor/llama.cpp/../../../../escaped": b"x",
    })
    with pytest.raises(lb.BuildError, match="cannot unpack vendor/llama.cpp"):
        lb.extract_llama_cpp(sdist, tmp_path / "out")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out" / "llama.cpp").exists()


def test_sdist_without_llama_cpp(tmp_path):
    sdist = make_sdist(tmp_path / "llama_cpp_python-0.3.36.tar.gz", {"llama_cpp_python-0.3.36/setup.py": b""})
    with pytest.raises(lb.BuildError, match="no vendor/llama.cpp inside"):
        lb.extract_llama_cpp(sdist, tmp_path / "out")


def test_cached_sdist_with_wrong_digest_is_refused(tmp_path):
    (tmp_path / "llama_cpp_python-0.3.36.tar.gz").write_bytes(b"not the release")
    with pytest.raises(lb.BuildError, match="sha256 does not match the known digest"):
        lb.fetch_sdist(tmp_path, "0.3.36")


@pytest.mark.skipif(not (REPO_CACHE / "llama_cpp_python-0.3.36.tar.gz").exists(), reason="sdist not cached")
def test_cached_sdist_digest():
    assert sha256_file(REPO_CACHE / "llama_cpp_python-0.3.36.tar.gz") == lb.SDIST_SHA256["0.3.36"]


def test_failed_configure_names_the_command_and_log(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text("message(FATAL_ERROR broken)\n")
    with pytest.raises(lb.BuildError, match=r"^nice -n 10 cmake -S .*: exit status 1 \(log: .*build.log\)$"):
        lb.compile_server(tmp_path / "src", tmp_path / "build", log=tmp_path / "build.log")
    assert "broken" in (tmp_path / "build.log").read_text()


def test_no_cached_runtime_in_an_empty_dir(tmp_path):
    assert lb.cached_runtime(tmp_path) is None


def fake_runtime(tmp_path) -> lb.Runtime:
    bin_dir = tmp_path / "build" / "bin"
    bin_dir.mkdir(parents=True)
    for name in lb.TARGETS:
        (bin_dir / name).write_bytes(b"#!/bin/sh\necho " + name.encode() + b"\n")
        os.chmod(bin_dir / name, 0o755)
    return lb.Runtime(bin_dir=bin_dir, variant="linux-x86_64-cpu-v3", version="0.3.36")


def test_pack_runtime_is_reproducible_and_published(tmp_path):
    rt = fake_runtime(tmp_path)
    store = tmp_path / "store"
    m = lb.pack_runtime(rt, store)
    assert (m.kind, m.name, m.version, m.variant) == (
        "runtime", "llama-server", "0.3.36+linux-x86_64-cpu-v3", "linux-x86_64-cpu-v3")
    d = store / m.name / m.version
    assert load_manifest(d / "manifest.json") == m
    assert m.compressed and m.extra["cmake_flags"] == list(lb.CMAKE_FLAGS)
    with tarfile.open(d / m.entrypoint) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [f"bin/{t}" for t in lb.TARGETS]
    assert {(i.uid, i.gid, i.mtime, i.mode & 0o111 != 0) for i in infos} == {(0, 0, 0, True)}
    # the same build packs to the same bytes, so publishing again is accepted as the same version
    os.utime(rt.bin_dir / "llama-server", (1, 1))
    assert lb.pack_runtime(rt, store) == m
    assert not (store / ".pack").exists()


def test_command_line_reuses_the_cached_build_and_publishes(tmp_path):
    runtime = fake_runtime(tmp_path / "cache")
    store = tmp_path / "store"
    run = subprocess.run([sys.executable, "-m", "tierfleet.artifacts.llama_build", str(tmp_path / "cache"), str(store)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    server, tarball = run.stdout.splitlines()
    assert server == str(runtime.server.resolve())
    assert Path(tarball).is_file() and Path(tarball).parent == store / "llama-server" / f"0.3.36+{lb.variant_name()}"


def test_command_line_usage_errors_exit_2(capsys):
    from tierfleet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["artifacts", "build-runtime", "a", "b", "c"])
    assert exc.value.code == 2 and "unexpected extra argument" in capsys.readouterr().err
