"""Throw-away OpenPGP signing keys for tests (real GnuPG, ed25519: made in about a second)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_key(home: Path, uid: str = "test <test@tierfleet.invalid>") -> tuple[Path, str, str]:
    """A new signing key in its own GNUPGHOME: (GNUPGHOME, armoured public key, fingerprint)."""
    home.mkdir(mode=0o700, parents=True)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-gen-key", uid, "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    armored = subprocess.run(["gpg", "--batch", "--armor", "--export"], env=env, check=True,
                             capture_output=True, text=True).stdout
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                             capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    return home, armored, fpr
