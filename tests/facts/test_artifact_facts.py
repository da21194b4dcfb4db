"""StoreManifest and AllowedCpus, run for real: the fact commands under sh against a local store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tierfleet.artifacts.http_store import StoreServer
from tierfleet.artifacts.manifest import publish
from tierfleet.facts.artifacts import StoreManifest, manifest_of, manifest_url
from tierfleet.facts.cpu import AllowedCpus


def run_fact(fact, *args):
    out = subprocess.run(["sh", "-c", fact.command(*args)], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    blob = tmp_path / "m.gguf"
    blob.write_bytes(b"GGUF" + bytes(100))
    publish(store, [blob], kind="model", name="m-Q8_0", version="1")
    return store


def test_manifest_from_a_local_store(store: Path):
    value = run_fact(StoreManifest(), manifest_url(str(store), "m-Q8_0", "1"))
    assert manifest_of(value).entrypoint == "m.gguf" and manifest_of(value).size == 104


def test_manifest_over_http_and_failures(store: Path):
    with StoreServer(store) as server:
        url = manifest_url(server.url, "m-Q8_0", "1")
        assert manifest_of(run_fact(StoreManifest(), url)).name == "m-Q8_0"
        missing = run_fact(StoreManifest(), manifest_url(server.url, "m-Q8_0", "2"))
        assert "404" in missing["error"]
    (store / "m-Q8_0" / "1" / "manifest.json").write_text("<html>proxy error</html>")
    garbled = run_fact(StoreManifest(), manifest_url(str(store), "m-Q8_0", "1"))
    assert garbled["error"].startswith("manifest: (json): not valid JSON")
    gone = run_fact(StoreManifest(), "/nonexistent/$(touch /tmp/tierfleet-pwned)/manifest.json")
    assert "No such file" in gone["error"] and not Path("/tmp/tierfleet-pwned").exists()


def test_allowed_cpus_match_the_kernel():
    import os

    assert run_fact(AllowedCpus()) == sorted(os.sched_getaffinity(0))
