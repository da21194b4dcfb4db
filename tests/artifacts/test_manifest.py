"""Manifests: validation names the source, the key and what is allowed; publishing is idempotent."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess

import pytest

from tierfleet.artifacts.manifest import load_manifest, manifest_from_dict, parse_manifest, publish, sha256_file
from tierfleet.exceptions import ConfigError

SHA = "0123456789abcdef" * 4
GOOD = {
    "schema": 1, "kind": "model", "name": "tiny", "version": "1", "variant": None,
    "entrypoint": "a-00001-of-00002.gguf",
    "files": [
        {"path": "a-00001-of-00002.gguf", "size": 10, "sha256": SHA,
         "zst": {"path": "a-00001-of-00002.gguf.zst", "size": 5, "sha256": SHA}},
        {"path": "a-00002-of-00002.gguf", "size": 20, "sha256": SHA},
    ],
}


def broken(**changes):
    doc = copy.deepcopy(GOOD)
    for dotted, val in changes.items():
        target = doc
        *parts, last = dotted.split("__")
        for part in parts:
            target = target[int(part)] if part.isdigit() else target[part]
        if val is KeyError:
            del target[last]
        else:
            target[last] = val
    return doc


def test_good_manifest_round_trips():
    m = manifest_from_dict(GOOD)
    assert m.size == 30 and not m.compressed
    assert m.digests() == {"a-00001-of-00002.gguf": SHA, "a-00002-of-00002.gguf": SHA}
    assert parse_manifest(m.to_json()) == m
    assert json.loads(m.to_json()) == GOOD


@pytest.mark.parametrize(("doc", "key", "allowed"), [
    (broken(schema=2), "schema", "expected 1"),
    (broken(kind="disk"), "kind", "expected one of model, runtime"),
    (broken(name="../x"), "name", "letters, digits"),
    (broken(version=""), "version", "letters, digits"),
    (broken(variant="a b"), "variant", "null or letters"),
    (broken(files=[]), "files", "non-empty list"),
    (broken(files__0__sha256="ABC"), "files[0].sha256", "64 lowercase hex digits"),
    (broken(files__1__size=-1), "files[1].size", "a byte count >= 0"),
    (broken(files__1__size=True), "files[1].size", "a byte count >= 0"),
    (broken(files__1__path="dir/x.gguf"), "files[1].path", "(no '/')"),
    (broken(files__1__path="a-00001-of-00002.gguf"), "files[1].path", "used twice or is reserved"),
    (broken(files__1__path="manifest.json"), "files[1].path", "used twice or is reserved"),
    (broken(files__0__zst__path="other.zst"), "files[0].zst.path", "expected 'a-00001-of-00002.gguf.zst'"),
    (broken(files__1__sha256=KeyError), "files[1].sha256", "is missing"),
    (broken(entrypoint="b.gguf"), "entrypoint", "is not one of the files"),
    (broken(signature="x"), "signature", "unknown key(s); allowed"),
    ([], "(top)", "must be a JSON object"),
])
def test_errors_name_source_key_and_allowed(doc, key, allowed):
    with pytest.raises(ConfigError) as info:
        manifest_from_dict(doc, "store/tiny/1/manifest.json")
    assert info.value.source == "store/tiny/1/manifest.json"
    assert info.value.key == key
    assert allowed in info.value.problem
    assert str(info.value).startswith(f"store/tiny/1/manifest.json: {key}: ")


def test_invalid_json_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^m.json: \(json\): not valid JSON"):
        parse_manifest("{", "m.json")
    with pytest.raises(ConfigError, match=r"nope.json: \(file\): cannot be read"):
        load_manifest(tmp_path / "nope.json")


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * (3 << 20) + b"tail")
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_publish_writes_files_manifest_and_zst(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(bytes(range(256)) * 500)
    m = publish(tmp_path / "store", [src], kind="model", name="tiny", version="1", compress=True, level=3)
    d = tmp_path / "store/tiny/1"
    assert sorted(p.name for p in d.iterdir()) == ["m.gguf", "m.gguf.zst", "manifest.json"]
    assert load_manifest(d / "manifest.json") == m
    assert m.files[0].sha256 == sha256_file(src)
    assert m.files[0].zst.sha256 == sha256_file(d / "m.gguf.zst")
    if shutil.which("zstd"):  # the host side decompresses with the zstd command
        out = subprocess.run(["zstd", "-dc", str(d / "m.gguf.zst")], capture_output=True, check=True).stdout
        assert out == src.read_bytes()


def test_publish_again_is_a_noop_and_other_content_is_refused(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"one")
    first = publish(tmp_path / "store", [src], kind="model", name="tiny", version="1")
    mtime = (tmp_path / "store/tiny/1/m.gguf").stat().st_mtime_ns
    assert publish(tmp_path / "store", [src], kind="model", name="tiny", version="1") == first
    assert (tmp_path / "store/tiny/1/m.gguf").stat().st_mtime_ns == mtime
    src.write_bytes(b"two")
    with pytest.raises(ConfigError, match="already published with other content"):
        publish(tmp_path / "store", [src], kind="model", name="tiny", version="1")


def test_publish_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"gone.gguf: \(file\): does not exist"):
        publish(tmp_path / "store", [tmp_path / "gone.gguf"], kind="model", name="tiny", version="1")
