"""Release operations run for real: pyinfra's @local connector, a temp root, an HTTP store on 127.0.0.1.

Converge -> idempotence -> verify, then every failure mode the tier deploy must survive: a
truncated download (resumed), corrupted bytes, a missing file, an unreachable mirror, a full
disk; each must leave ``current`` serving the previous release and nothing partial behind.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from tierfleet.operations import release

from .conftest import tree
from tierfleet.lab.runner import run_local


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(root, rid, manifest, source, **kw):
    return run_local(release.artifact, root=str(root), release=rid, manifest=manifest, source=source, **kw)


def serving(root, rid, manifest, source):
    """Install and switch to ``rid``: the 'previous release keeps serving' baseline."""
    assert not install(root, rid, manifest, source).failed
    assert not run_local(release.switch, root=str(root), release=rid).failed


def url(server, manifest):
    return f"{server.url}{manifest.name}/{manifest.version}/"


def test_install_verify_switch_and_idempotent_rerun(tmp_path, store, server):
    root, m = tmp_path / "host", store["split"]
    first = install(root, "tiny-1", m, url(server, m))
    assert (first.will_change, first.failed) == (True, False)
    rel = root / "releases" / "tiny-1"
    for f in m.files:
        assert sha(rel / f.path) == f.sha256
    assert json.loads((rel / "manifest.json").read_text()) == m.to_dict()
    assert not (root / ".staging").exists()

    fetched = len(server.control.paths)
    again = install(root, "tiny-1", m, url(server, m))
    assert (again.will_change, again.failed) == (False, False)
    assert len(server.control.paths) == fetched, "a rerun must not download (nor re-hash) anything"

    assert run_local(release.switch, root=str(root), release="tiny-1").will_change
    assert (root / "current").readlink().as_posix() == "releases/tiny-1"
    assert (root / "current" / m.entrypoint).is_file()
    assert not run_local(release.switch, root=str(root), release="tiny-1").will_change


def test_compressed_form_is_fetched_and_decompressed(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    res = install(root, "tiny-1", m, url(server, m), compressed=True)
    assert not res.failed, res.stderr
    assert server.control.paths[-1].endswith("tiny.gguf.zst")
    assert tree(root) == ["releases", "releases/tiny-1", "releases/tiny-1/manifest.json", "releases/tiny-1/tiny.gguf"]
    assert sha(root / "releases/tiny-1/tiny.gguf") == m.files[0].sha256


def test_local_path_source(tmp_path, store):
    root, m = tmp_path / "host", store["single"]
    res = install(root, "tiny-1", m, str(store["dir"] / "tiny" / "1"))
    assert not res.failed, res.stderr
    assert sha(root / "releases/tiny-1/tiny.gguf") == m.files[0].sha256


def test_resumes_a_truncated_download(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    full = (store["dir"] / "tiny/1/tiny.gguf").read_bytes()
    stage = root / ".staging" / "tiny-1"
    stage.mkdir(parents=True)
    (stage / "tiny.gguf").write_bytes(full[:50_000])

    res = install(root, "tiny-1", m, url(server, m))
    assert not res.failed, res.stderr
    assert server.control.ranges == ["bytes=50000-"]
    assert sha(root / "releases/tiny-1/tiny.gguf") == m.files[0].sha256


def test_interrupted_transfer_fails_keeps_bytes_then_resumes(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    serving(root, "tiny-0", store["split"], url(server, store["split"]))
    server.control.cut_after = 40_000

    res = install(root, "tiny-1", m, url(server, m))
    assert res.failed
    assert "transfer of" in res.stderr and "was interrupted" in res.stderr
    kept = (root / ".staging/tiny-1/tiny.gguf").stat().st_size
    assert 0 < kept < m.files[0].size
    assert not (root / "releases/tiny-1").exists()
    assert (root / "current").readlink().as_posix() == "releases/tiny-0"

    server.control.cut_after = None
    server.control.ranges.clear()
    res = install(root, "tiny-1", m, url(server, m))
    assert not res.failed, res.stderr
    assert server.control.ranges == [f"bytes={kept}-"]
    assert sha(root / "releases/tiny-1/tiny.gguf") == m.files[0].sha256


def test_corrupted_bytes_leave_nothing_and_keep_current(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    serving(root, "tiny-0", store["split"], url(server, store["split"]))
    before = tree(root)
    stored = store["dir"] / "tiny/1/tiny.gguf"
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))

    res = install(root, "tiny-1", m, url(server, m))
    assert res.failed
    assert f"sha256 mismatch for {url(server, m)}tiny.gguf (expected {m.files[0].sha256})" in res.stderr
    assert tree(root) == before
    assert (root / "current").readlink().as_posix() == "releases/tiny-0"


def test_missing_artifact_in_store(tmp_path, store, server):
    root, m = tmp_path / "host", store["split"]
    serving(root, "tiny-0", store["single"], url(server, store["single"]))
    before = tree(root)
    (store["dir"] / "tiny-split/1" / m.files[1].path).unlink()

    res = install(root, "tiny-1", m, url(server, m))
    assert res.failed
    assert f"cannot fetch {url(server, m)}{m.files[1].path} (exit 22)" in res.stderr
    # the first shard was verified and is kept in staging to save the transfer next time
    assert not (root / "releases/tiny-1").exists()
    assert (root / "current").readlink().as_posix() == "releases/tiny-0"
    assert [p for p in tree(root) if p not in before] == [
        ".staging", ".staging/tiny-1", f".staging/tiny-1/{m.files[0].path}"]


def test_unreachable_mirror(tmp_path, store):
    root, m = tmp_path / "host", store["single"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        res = install(root, "tiny-1", m, f"http://127.0.0.1:{port}/tiny/1/")
    assert res.failed
    assert f"cannot fetch http://127.0.0.1:{port}/tiny/1/tiny.gguf (exit 7)" in res.stderr
    assert tree(root) == ["releases"]


def test_not_enough_space_is_refused_before_downloading(small_fs, store, server):
    root, m = small_fs / "host", store["split"]
    big = m.to_dict()
    big["files"][0]["size"] = 10 * 2**20  # claims 10 MiB on a 256 KiB filesystem
    res = install(root, "tiny-1", big, url(server, m))
    assert res.failed
    assert "not enough space under" in res.stderr and "KiB available" in res.stderr
    assert server.control.paths == []
    assert tree(root) == ["releases"]


def test_disk_full_during_download_leaves_nothing(small_fs, store, server, tmp_path):
    root = small_fs / "host"
    serving(root, "tiny-0", store["single"], str(store["dir"] / "tiny/1"))
    before = tree(root)
    # a file bigger than what is left, declared small so the space check passes (as when
    # another writer fills the disk meanwhile)
    big = tmp_path / "big" / "big.gguf"
    big.parent.mkdir()
    big.write_bytes(b"\0" * 200_000)
    from tierfleet.artifacts.manifest import publish

    mb = publish(store["dir"], [big], kind="model", name="big", version="1").to_dict()
    mb["files"][0]["size"] = 1000
    res = install(root, "big-1", mb, f"{server.url}big/1/")
    assert res.failed
    assert "failed (disk full or not writable); nothing was installed" in res.stderr
    assert tree(root) == before
    assert (root / "current").readlink().as_posix() == "releases/tiny-0"


def test_switch_to_a_release_that_is_not_installed_fails_and_keeps_current(tmp_path, store, server):
    root = tmp_path / "host"
    serving(root, "tiny-0", store["single"], url(server, store["single"]))
    res = run_local(release.switch, root=str(root), release="tiny-9")
    assert res.failed
    assert f"release tiny-9 is not installed under {root}" in res.stderr
    assert (root / "current").readlink().as_posix() == "releases/tiny-0"
    assert not (root / "previous").exists()


def test_switch_rollback_prune_cycle(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    for n in range(1, 5):
        assert not install(root, f"tiny-{n}", m, url(server, m)).failed
    assert not run_local(release.switch, root=str(root), release="tiny-2").failed
    assert not run_local(release.switch, root=str(root), release="tiny-4").failed
    assert (root / "previous").readlink().as_posix() == "releases/tiny-2"

    back = run_local(release.rollback, root=str(root), release="tiny-4")
    assert (back.will_change, back.failed) == (True, False)
    assert (root / "current").readlink().as_posix() == "releases/tiny-2"
    assert (root / "previous").readlink().as_posix() == "releases/tiny-4"
    assert not run_local(release.rollback, root=str(root), release="tiny-4").will_change

    pruned = run_local(release.prune, root=str(root), keep=1)
    assert (pruned.will_change, pruned.failed) == (True, False)
    # kept: the newest (tiny-4, also previous) and current (tiny-2)
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["tiny-2", "tiny-4"]
    assert not run_local(release.prune, root=str(root), keep=1).will_change


def test_hostile_root_is_quoted_end_to_end(tmp_path, store, server):
    root, m = tmp_path / "it's $(touch pwned) `touch pwned2` ;x", store["single"]
    assert not install(root, "tiny-1", m, url(server, m)).failed
    assert not run_local(release.switch, root=str(root), release="tiny-1").failed
    assert (root / "current" / "tiny.gguf").is_file()
    assert not any(p.name.startswith("pwned") for p in tmp_path.rglob("pwned*"))


@pytest.mark.parametrize("bad", ["relative/path", "/"])
def test_bad_root_is_refused(bad, store):
    from pyinfra.api import OperationValueError

    with pytest.raises(OperationValueError, match="root: .* is not allowed; expected an absolute path"):
        install(bad, "tiny-1", store["single"], "/srv")
