"""packages.repository_key run for real (pyinfra @local, a real HTTP server): a key is installed only
when its sha256 is the pinned one, and a wrong key never reaches the file apt trusts."""

from __future__ import annotations

import hashlib

import pytest
from pyinfra.api import OperationValueError

from tierfleet.artifacts.http_store import StoreServer
from tierfleet.operations import packages

from tierfleet.lab.runner import run_local

KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n"


@pytest.fixture
def served(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "repo.asc").write_bytes(KEY)
    with StoreServer(site) as server:
        yield server


def test_installs_a_matching_key_then_changes_nothing(tmp_path, served):
    dest = tmp_path / "keyrings" / "repo.asc"
    dest.parent.mkdir()
    pinned = hashlib.sha256(KEY).hexdigest()
    first = run_local(packages.repository_key, src=f"{served.url}repo.asc", dest=str(dest), sha256=pinned)
    assert (first.will_change, first.failed) == (True, False), first.stderr
    assert dest.read_bytes() == KEY and oct(dest.stat().st_mode)[-3:] == "644"
    assert not run_local(packages.repository_key, src=f"{served.url}repo.asc", dest=str(dest), sha256=pinned).will_change
    assert sorted(p.name for p in dest.parent.iterdir()) == ["repo.asc"]


def test_a_key_with_another_sha256_is_never_put_where_apt_trusts_it(tmp_path, served):
    dest = tmp_path / "repo.asc"
    dest.write_bytes(b"the key apt trusted before\n")
    res = run_local(packages.repository_key, src=f"{served.url}repo.asc", dest=str(dest), sha256="0" * 64)
    assert res.failed
    assert f"does not have the pinned sha256 {'0' * 64}; {dest} was left as it was" in res.stderr
    assert dest.read_bytes() == b"the key apt trusted before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo.asc", "site"]  # no temporary file left


def test_an_unreachable_key_fails_and_leaves_nothing(tmp_path, served):
    dest = tmp_path / "repo.asc"
    res = run_local(packages.repository_key, src=f"{served.url}missing.asc", dest=str(dest),
                    sha256=hashlib.sha256(KEY).hexdigest())
    assert res.failed and "cannot fetch the key" in res.stderr
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sha256": "A" * 64}, "sha256: 'AAAA"),
    ({"sha256": None}, "sha256: None"),
    ({"src": "ftp://x/k.asc"}, "src: 'ftp://x/k.asc'"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    args = {"src": "http://127.0.0.1:9/k.asc", "dest": str(tmp_path / "k.asc"), "sha256": "a" * 64, **kwargs}
    with pytest.raises(OperationValueError, match=message.replace("(", r"\(")):
        run_local(packages.repository_key, **args)
