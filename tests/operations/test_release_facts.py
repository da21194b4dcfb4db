"""Fact specs for tierfleet.facts.release.Releases: command, recorded output, parsed fact."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tierfleet.facts.release import Releases, release_of

from .harness import load_specs

SPECS = load_specs(Path(__file__).parent / "facts" / "release.Releases")


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[n for n, _ in SPECS])
def test_fact_spec(name, spec):
    fact = Releases()
    assert fact.command(**spec["arg"]) == spec["command"]
    assert fact.process(spec["output"]) == spec["fact"]


def test_specs_cover_the_interesting_states():
    names = {n for n, _ in SPECS}
    assert {"missing_root.json", "current_previous_staging.json", "broken_manifests.json", "damaged_files.json",
            "same_size_other_bytes_hashed.json"} <= names


def test_default_is_an_empty_state():
    assert Releases.default() == {"current": None, "current_target": None, "previous": None,
                                  "previous_target": None, "releases": {}, "staging": {}, "unknown_links": []}


def test_command_runs_on_a_real_layout_with_a_hostile_root(tmp_path):
    root = tmp_path / "it's $(touch pwned) `touch pwned2`"
    rel = root / "releases" / "m-1"
    rel.mkdir(parents=True)
    (rel / "manifest.json").write_text(
        '{"schema":1,"kind":"model","name":"m","version":"1","entrypoint":"m.gguf",'
        '"files":[{"path":"m.gguf","size":1,"sha256":"' + "0" * 64 + '"}]}\n')
    (rel / "m.gguf").write_bytes(b"x")
    os.symlink("releases/m-1", root / "current")
    out = subprocess.run(["sh", "-c", Releases().command(root=str(root))], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    fact = Releases().process(out.stdout.splitlines())
    assert fact["current"] == "m-1"
    assert fact["releases"]["m-1"]["manifest"]["files"][0]["path"] == "m.gguf"
    assert fact["releases"]["m-1"]["mtime"] > 0
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


@pytest.mark.parametrize(("target", "release"), [
    ("releases/a", "a"), ("/srv/x/releases/a/", "a"), ("/srv/x/a", None), ("", None), ("releases/", None),
])
def test_release_of(target, release):
    assert release_of(target) == release
