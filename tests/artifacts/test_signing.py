"""Signed manifests, for real: GnuPG keys made for the test, gpgv as a host runs it, a real HTTP store."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tierfleet.artifacts.http_store import StoreServer
from tierfleet.artifacts.manifest import publish
from tierfleet.artifacts.signing import (dearmor, keyring_b64, load_public_key, sign_file, sign_store,
                                         store_manifests, verify_file)
from tierfleet.exceptions import ConfigError
from tierfleet.facts.artifacts import StoreManifest, manifest_of, manifest_url

from ..gpgkeys import make_key

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("gpgv") is None,
                                reason="needs gpg and gpgv (Debian packages gnupg, gpgv)")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("keys")
    return {"fleet": make_key(base / "fleet", "fleet <fleet@tierfleet.invalid>"),
            "other": make_key(base / "other", "attacker <x@tierfleet.invalid>")}


@pytest.fixture
def store(tmp_path):
    store = tmp_path / "store"
    blob = tmp_path / "m.gguf"
    blob.write_bytes(b"GGUF" + bytes(100))
    publish(store, [blob], kind="model", name="m-Q8_0", version="1")
    return store


def run_fact(*args):
    fact = StoreManifest()
    out = subprocess.run(["sh", "-c", fact.command(*args)], capture_output=True, text=True, check=True)
    return fact.process(out.stdout.splitlines())


# --- the armoured key ------------------------------------------------------------------------------

def test_dearmor_gives_the_binary_public_key(keys):
    _, armored, _ = keys["fleet"]
    data = dearmor(armored)
    assert data[0] & 0x80 and ((data[0] & 0x3F) if data[0] & 0x40 else (data[0] >> 2) & 0x0F) == 6
    assert base64.b64decode(keyring_b64(armored)) == data


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda a: a.replace("-----END PGP PUBLIC KEY BLOCK-----", ""), "not an ASCII-armoured OpenPGP public key"),
    (lambda a: "hello", "hello: cannot read the armoured key file (No such file or directory)"),
    (lambda a: a[:200] + ("B" if a[200] != "B" else "C") + a[201:], "checksum does not match"),
    (lambda a: a.replace("\n=", "\n!="), "base64 is damaged"),
    (lambda a: "x" * 70000, "at most 65536 bytes"),
])
def test_a_damaged_or_wrong_key_is_refused_naming_the_key(keys, damage, problem):
    _, armored, _ = keys["fleet"]
    with pytest.raises(ConfigError) as info:
        load_public_key(damage(armored), "inventory/edge.py: host a")
    assert str(info.value).startswith("inventory/edge.py: host a: artifact_key: ")
    assert problem in str(info.value)


def test_a_signature_or_private_key_is_not_a_public_key(keys, tmp_path):
    home, _, _ = keys["fleet"]
    (tmp_path / "f").write_text("x")
    sig = subprocess.run(["gpg", "--batch", "--armor", "--detach-sign", "-o", "-", str(tmp_path / "f")],
                         env=dict(os.environ, GNUPGHOME=str(home)), check=True, capture_output=True, text=True).stdout
    fake = sig.replace("SIGNATURE", "PUBLIC KEY BLOCK").replace("PGP PUBLIC KEY BLOCK", "PGP PUBLIC KEY BLOCK")
    with pytest.raises(ConfigError, match="not a public key .first packet has tag 2"):
        dearmor(fake)


def test_the_key_can_be_a_file(keys, tmp_path):
    _, armored, _ = keys["fleet"]
    path = tmp_path / "fleet.asc"
    path.write_text(armored)
    assert load_public_key(str(path)) == armored
    with pytest.raises(ConfigError, match="cannot read the armoured key file"):
        load_public_key(str(tmp_path / "missing.asc"))


# --- signing and verifying a store -----------------------------------------------------------------

def test_sign_and_verify_a_store(keys, store):
    home, armored, fpr = keys["fleet"]
    [manifest] = store_manifests(store)
    with pytest.raises(ConfigError, match="unsigned: manifest.json.sig is missing"):
        verify_file(manifest, armored)
    assert sign_store(store, armored, gnupghome=home) == [manifest]
    assert verify_file(manifest, armored) == fpr
    assert sign_store(store, armored, gnupghome=home) == []  # idempotent
    with pytest.raises(ConfigError, match="bad signature"):
        verify_file(manifest, keys["other"][1])
    manifest.write_text(manifest.read_text().replace('"size":104', '"size":105'))
    with pytest.raises(ConfigError, match="bad signature"):
        verify_file(manifest, armored)
    assert sign_store(store, armored, gnupghome=home) == [manifest]  # re-signs what no longer verifies


# --- what a host sees ------------------------------------------------------------------------------

def test_a_host_gets_a_signed_manifest_with_its_signer(keys, store):
    home, armored, fpr = keys["fleet"]
    sign_store(store, gnupghome=home)
    with StoreServer(store) as server:
        value = run_fact(manifest_url(server.url, "m-Q8_0", "1"), keyring_b64(armored))
    assert value["signed_by"] == fpr
    assert manifest_of(value).entrypoint == "m.gguf"


def test_unsigned_badly_signed_and_tampered_manifests_never_reach_the_deploy(keys, store):
    home, armored, _ = keys["fleet"]
    key = keyring_b64(armored)
    mpath = store / "m-Q8_0" / "1" / "manifest.json"
    with StoreServer(store) as server:
        url = manifest_url(server.url, "m-Q8_0", "1")
        unsigned = run_fact(url, key)
        assert unsigned["error"].startswith(f"unsigned: no signature at {url}.sig:") and "404" in unsigned["error"]

        sign_file(mpath, keys["other"][0])
        other = run_fact(url, key)
        assert other["error"].startswith(f"bad signature: {url}.sig does not verify with the pinned artifact_key")

        sign_file(mpath, home)
        assert "signed_by" in run_fact(url, key)
        mpath.write_text(mpath.read_text().replace("a", "b", 1))  # the store is changed after signing
        assert run_fact(url, key)["error"].startswith("bad signature")

        # without a pinned key the same manifest is only parsed (an https store with TLS, or a local path)
        assert "signed_by" not in run_fact(manifest_url(str(store), "m-Q8_0", "1"))


def test_a_host_without_gpgv_refuses_instead_of_trusting(keys, store, tmp_path):
    home, armored, _ = keys["fleet"]
    sign_store(store, gnupghome=home)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "mktemp", "cp", "cat", "rm", "base64", "printf", "awk", "grep", "tail", "tr"):
        if shutil.which(tool):
            (bindir / tool).symlink_to(shutil.which(tool))
    fact = StoreManifest()
    out = subprocess.run([str(bindir / "sh"), "-c", fact.command(manifest_url(str(store), "m-Q8_0", "1"),
                                                                 keyring_b64(armored))],
                         capture_output=True, text=True, env={"PATH": str(bindir)}, check=True)
    assert fact.process(out.stdout.splitlines()) == {"error": "gpgv is missing: install the gpgv package"}


def test_a_hostile_url_stays_quoted_with_a_key(keys, store, tmp_path):
    _, armored, _ = keys["fleet"]
    value = run_fact(f"{store}/$(touch {tmp_path}/pwned)`touch {tmp_path}/pwned2`/manifest.json",
                     keyring_b64(armored))
    assert "error" in value
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_a_forged_signed_marker_in_the_manifest_is_not_trusted():
    fact = StoreManifest()
    assert fact.process(['{"schema":1}', "##tierfleet-signed## "])["error"].startswith("gpgv reported no valid")
