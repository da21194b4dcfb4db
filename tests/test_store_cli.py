"""``tierfleet store sign|verify`` through the real CLI (CliRunner), real GnuPG keys and gpgv."""

from __future__ import annotations

import shutil

import pytest

from tierfleet.artifacts.manifest import publish
from tierfleet.cli import main

from .gpgkeys import make_key

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("gpgv") is None,
                                reason="needs gpg and gpgv")


@pytest.fixture
def run(capsys):
    """Run ``tierfleet ARGS`` through its real entry point (exit codes mapped in ``main``)."""
    def invoke(*args):
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out = capsys.readouterr()
        return info.value.code, out.out + out.err
    return invoke


@pytest.fixture
def setup(tmp_path):
    store = tmp_path / "store"
    for version in ("1", "2"):
        blob = tmp_path / version / "m.gguf"
        blob.parent.mkdir()
        blob.write_bytes(b"GGUF" + version.encode() * 50)
        publish(store, [blob], kind="model", name="m-Q8_0", version=version)
    home, armored, fpr = make_key(tmp_path / "gnupg")
    (tmp_path / "fleet.asc").write_text(armored)
    return store, home, tmp_path / "fleet.asc", fpr


def test_sign_then_verify_then_a_tampered_manifest_fails(setup, run):
    store, home, pub, fpr = setup
    code, out = run("store", "verify", str(store), "--pubkey", str(pub))
    assert code == 1 and out.count("FAIL") == 2 and "unsigned: manifest.json.sig is missing" in out
    code, out = run("store", "sign", str(store), "--gnupghome", str(home), "--pubkey", str(pub))
    assert code == 0 and "2 of 2 manifest(s) signed" in out, out
    code, out = run("store", "sign", str(store), "--gnupghome", str(home), "--pubkey", str(pub))
    assert code == 0 and "0 of 2 manifest(s) signed" in out
    code, out = run("store", "verify", str(store), "--pubkey", str(pub))
    assert code == 0 and out.count(f"signed by {fpr}") == 2, out
    manifest = store / "m-Q8_0" / "2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("m.gguf", "n.gguf", 1))
    code, out = run("store", "verify", str(store), "--pubkey", str(pub))
    assert code == 1 and "FAIL m-Q8_0/2/manifest.json: bad signature" in out


def test_a_bad_pubkey_is_a_clear_input_error(setup, tmp_path, run):
    store, _, _, _ = setup
    bad = tmp_path / "bad.asc"
    bad.write_text("not a key")
    code, out = run("store", "verify", str(store), "--pubkey", str(bad))
    assert code == 2
    assert f"tierfleet: error: {bad}: --pubkey: " in out and "cannot read the armoured key file" not in out
    assert "not an ASCII-armoured OpenPGP public key" in out


def test_publish_writes_a_manifest_that_signs_and_verifies(run, setup, tmp_path):
    store, home, pubkey, _ = setup
    blob = tmp_path / "new" / "m.gguf"
    blob.parent.mkdir()
    blob.write_bytes(b"GGUF" + b"3" * 50)
    code, out = run("store", "publish", str(store), str(blob), "--name", "m-Q8_0", "--version", "3")
    assert code == 0, out
    assert (store / "m-Q8_0" / "3" / "m.gguf").read_bytes() == blob.read_bytes()
    assert run("store", "publish", str(store), str(blob), "--name", "m-Q8_0", "--version", "3")[0] == 0  # same again
    assert run("store", "sign", str(store), "--gnupghome", str(home), "--pubkey", str(pubkey))[0] == 0
    code, out = run("store", "verify", str(store), "--pubkey", str(pubkey))
    assert code == 0 and "ok   m-Q8_0/3/manifest.json" in out


def test_publish_refuses_other_content_under_a_published_version_and_leaves_it_intact(run, setup, tmp_path):
    store, *_ = setup
    before = (store / "m-Q8_0" / "2" / "m.gguf").read_bytes()
    other = tmp_path / "other" / "m.gguf"
    other.parent.mkdir()
    other.write_bytes(b"GGUF" + b"x" * 50)
    code, out = run("store", "publish", str(store), str(other), "--name", "m-Q8_0", "--version", "2")
    assert code == 2 and "already published with other content" in out
    assert (store / "m-Q8_0" / "2" / "m.gguf").read_bytes() == before


@pytest.mark.parametrize(("option", "value"), [("--version", ".."), ("--name", "../up"), ("--version", "a/b")])
def test_publish_refuses_a_name_or_version_that_leaves_the_store(run, setup, tmp_path, option, value):
    store, *_ = setup
    blob = tmp_path / "1" / "m.gguf"
    args = {"--name": "m-Q8_0", "--version": "9", option: value}
    code, out = run("store", "publish", str(store), str(blob), "--name", args["--name"], "--version", args["--version"])
    assert code == 2 and f"{option}: {value}: allowed" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "fleet.asc", "gnupg", "store"]
    assert not (store / "m-Q8_0" / "9").exists()
