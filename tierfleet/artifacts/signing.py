"""Signed manifests: OpenPGP detached signatures over each ``manifest.json`` in an artifact store.

A store entry is signed when ``<store>/<name>/<version>/manifest.json.sig`` is a detached OpenPGP
signature of ``manifest.json``'s bytes by the fleet's signing key. Hosts verify it themselves, before
anything is fetched or unpacked, with ``gpgv`` (part of every Debian/Ubuntu/L4T system: apt depends on
it) against the public key pinned in the inventory (``artifact_key``); the sha256 of every file then
comes from the verified manifest only. Signing uses GnuPG (``gpg --detach-sign``), so an operator's
existing key, smartcard or HSM-backed agent works; the lab signs with a throw-away key.

By hand::

    gpg --detach-sign -o manifest.json.sig manifest.json               # sign (the store's keeper)
    gpg --export KEYID > fleet.gpg
    gpgv --keyring ./fleet.gpg manifest.json.sig manifest.json           # what a host runs

``artifact_key`` holds the key ASCII-armoured (the text, or the path of a ``.asc`` file); hosts get it
dearmoured (binary), the only form ``gpgv --keyring`` reads.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tierfleet.artifacts.manifest import MANIFEST_NAME
from tierfleet.exceptions import ConfigError

SIG_SUFFIX = ".sig"
BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
END = "-----END PGP PUBLIC KEY BLOCK-----"
#: an armoured public key larger than this is not a signing key (a keyring dump, or an attack on the fact)
MAX_KEY_BYTES = 64 * 1024
_CRC24_INIT, _CRC24_POLY = 0xB704CE, 0x1864CFB


def _crc24(data: bytes) -> int:
    """RFC 4880 section 6.1 CRC-24 of ``data``."""
    crc = _CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def dearmor(text: str, source: str = "artifact_key", key: str = "artifact_key") -> bytes:
    """The binary OpenPGP public key inside an ASCII-armoured block (RFC 4880 section 6.2).

    Checks the armour's CRC-24 and that the first packet is a public key (tag 6), so a private key, a
    signature or garbage is refused here, with the key named, instead of by every host later.
    """
    if not isinstance(text, str) or len(text) > MAX_KEY_BYTES:
        raise ConfigError(source, key, f"not an ASCII-armoured OpenPGP public key (at most {MAX_KEY_BYTES} bytes)")
    lines = [line.strip() for line in text.strip().splitlines()]
    try:
        start, end = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise ConfigError(source, key, f"not an ASCII-armoured OpenPGP public key ({BEGIN} ... {END})") from None
    body = lines[start + 1:end]
    while body and ":" in body[0]:  # armour headers (Version:, Comment:) up to the blank line
        body = body[1:]
    checksum = None
    if body and body[-1].startswith("="):
        checksum, body = body[-1][1:], body[:-1]
    try:
        data = base64.b64decode("".join(body), validate=True)
        crc = base64.b64decode(checksum, validate=True) if checksum else None
    except (ValueError, TypeError):
        raise ConfigError(source, key, "the armoured key's base64 is damaged") from None
    if crc is not None and int.from_bytes(crc, "big") != _crc24(data):
        raise ConfigError(source, key, "the armoured key's checksum does not match (a damaged copy?)")
    if not data or not data[0] & 0x80:
        raise ConfigError(source, key, "the armoured block holds no OpenPGP packet")
    tag = (data[0] & 0x3F) if data[0] & 0x40 else (data[0] >> 2) & 0x0F
    if tag != 6:
        raise ConfigError(source, key, f"the armoured block is not a public key (first packet has tag {tag}, "
                                       "a public key has 6); export it with gpg --armor --export KEYID")
    return data


def load_public_key(value: str, source: str = "artifact_key", key: str = "artifact_key") -> str:
    """``artifact_key`` as armoured text: the value itself, or the content of the file it names."""
    if not isinstance(value, str):
        raise ConfigError(source, key, f"{value!r} is not allowed; expected an armoured key or a .asc file path")
    if BEGIN not in value and len(value) <= 4096 and "\n" not in value and "\0" not in value:
        path = Path(value).expanduser()
        try:
            if path.stat().st_size > MAX_KEY_BYTES:
                raise ConfigError(source, key, f"{value}: larger than {MAX_KEY_BYTES} bytes; not a public key")
            value = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, key, f"{value}: cannot read the armoured key file "
                                           f"({getattr(exc, 'strerror', None) or exc})") from None
    dearmor(value, source, key)
    return value


def keyring_b64(armored: str) -> str:
    """The dearmoured key, base64 on one line: what a host decodes into a ``gpgv --keyring`` file."""
    return base64.b64encode(dearmor(armored)).decode()


def _gpg_env(gnupghome: Path | str | None) -> dict[str, str]:
    env = dict(os.environ)
    if gnupghome is not None:
        env["GNUPGHOME"] = str(gnupghome)
    return env


def sign_file(path: Path, gnupghome: Path | str | None = None, key_id: str | None = None) -> Path:
    """Write ``<path>.sig``, a detached signature of ``path`` (``gpg --detach-sign``), atomically."""
    if shutil.which("gpg") is None:
        raise ConfigError(str(path), "(signing)", "gpg is not installed; install gnupg to sign a store")
    sig = Path(str(path) + SIG_SUFFIX)
    tmp = sig.with_name(f".{sig.name}.tmp")
    cmd = ["gpg", "--batch", "--yes", "--no-tty", "--detach-sign", "-o", str(tmp)]
    if key_id:
        cmd += ["--local-user", key_id]
    res = subprocess.run([*cmd, str(path)], env=_gpg_env(gnupghome), capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ConfigError(str(path), "(signing)", f"gpg could not sign: {res.stderr.strip()[-300:]}")
    os.replace(tmp, sig)
    return sig


def verify_file(path: Path, armored: str) -> str:
    """Check ``<path>.sig`` against the armoured public key with ``gpgv``, as a host does.

    Returns the signing key's fingerprint; raises :class:`ConfigError` naming the file and the reason.
    """
    sig = Path(str(path) + SIG_SUFFIX)
    if not sig.is_file():
        raise ConfigError(str(path), "signature", f"unsigned: {sig.name} is missing")
    if shutil.which("gpgv") is None:
        raise ConfigError(str(path), "signature", "gpgv is not installed (Debian/Ubuntu package gpgv)")
    with tempfile.TemporaryDirectory() as home:
        keyring = Path(home, "key.gpg")
        keyring.write_bytes(dearmor(armored))
        res = subprocess.run(["gpgv", "--homedir", home, "--status-fd", "1", "--keyring", str(keyring),
                              str(sig), str(path)], capture_output=True, text=True)
    match = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{40,64}) ", res.stdout, re.M)
    if res.returncode != 0 or match is None:
        reason = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"gpgv exited {res.returncode}"
        raise ConfigError(str(path), "signature", f"bad signature: {reason}")
    return match.group(1)


def store_manifests(store: Path) -> list[Path]:
    """Every ``<name>/<version>/manifest.json`` in a store directory, sorted."""
    return sorted(Path(store).glob(f"*/*/{MANIFEST_NAME}"))


def sign_store(store: Path, armored: str | None = None, gnupghome: Path | str | None = None,
               key_id: str | None = None, force: bool = False) -> list[Path]:
    """Sign every manifest of ``store`` that has no signature valid for ``armored`` (all with ``force``).

    Returns the manifests signed now; re-running signs nothing.
    """
    signed = []
    for manifest in store_manifests(store):
        if not force and armored is not None:
            try:
                verify_file(manifest, armored)
                continue
            except ConfigError:
                pass
        sign_file(manifest, gnupghome, key_id)
        signed.append(manifest)
    return signed
