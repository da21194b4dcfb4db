"""Releases that survive crashes and races, run for real (pyinfra @local, a real HTTP store, real files).

- a file damaged after install (truncated, removed, or with the same size but other bytes when asked to
  verify) is a damaged release: fetched again, never "no change";
- two runs on one root at once serialise on ``<root>/.lock`` and end in the state one run gives;
- every file and directory of a release is fsynced before the rename that makes it a release;
- prune resolves ``current``/``previous`` the way the kernel does, and refuses links it does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tierfleet.operations import release

from .conftest import tree
from tierfleet.lab.runner import run_local

from .harness import run_operation

REPO = Path(__file__).resolve().parents[2]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url(server, manifest):
    return f"{server.url}{manifest.name}/{manifest.version}/"


def install(root, rid, manifest, source, **kw):
    return run_local(release.artifact, root=str(root), release=rid, manifest=manifest, source=source, **kw)


def serving(root, rid, manifest, source):
    assert not install(root, rid, manifest, source).failed
    assert not run_local(release.switch, root=str(root), release=rid).failed


def test_a_model_truncated_after_install_is_fetched_again(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    serving(root, "tiny-1", m, url(server, m))
    model = root / "current" / m.entrypoint
    with open(model, "r+b") as f:
        f.truncate(1000)

    again = install(root, "tiny-1", m, url(server, m))
    assert (again.will_change, again.failed) == (True, False), again.stderr
    assert sha(model) == m.files[0].sha256
    assert (root / "current").readlink().as_posix() == "releases/tiny-1"
    assert not (root / ".staging").exists()
    assert not install(root, "tiny-1", m, url(server, m)).will_change


def test_a_removed_shard_is_fetched_again(tmp_path, store, server):
    root, m = tmp_path / "host", store["split"]
    assert not install(root, "tiny-1", m, url(server, m)).failed
    (root / "releases/tiny-1" / m.files[1].path).unlink()
    again = install(root, "tiny-1", m, url(server, m))
    assert (again.will_change, again.failed) == (True, False), again.stderr
    assert all(sha(root / "releases/tiny-1" / f.path) == f.sha256 for f in m.files)


def test_same_size_corruption_is_found_only_when_asked_to_verify(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    serving(root, "tiny-1", m, url(server, m))
    model = root / "releases/tiny-1" / m.entrypoint
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))

    assert not install(root, "tiny-1", m, url(server, m)).will_change  # sizes match: cheap check passes
    checked = install(root, "tiny-1", m, url(server, m), verify=True)
    assert (checked.will_change, checked.failed) == (True, False), checked.stderr
    assert sha(model) == m.files[0].sha256


RACE = """
import sys
from tierfleet.lab.runner import run_local
from tierfleet.artifacts.manifest import manifest_from_dict
from tierfleet.operations import release
import json
root, source, manifest = sys.argv[1], sys.argv[2], manifest_from_dict(json.loads(sys.argv[3]))
a = run_local(release.artifact, root=root, release="tiny-2", manifest=manifest, source=source)
s = run_local(release.switch, root=root, release="tiny-2")
print(json.dumps({"failed": a.failed or s.failed, "stderr": a.stderr + s.stderr}))
"""


def test_two_runs_at_once_serialise_and_agree(tmp_path, store, server):
    root, m1 = tmp_path / "host", store["single"]
    serving(root, "tiny-1", m1, url(server, m1))
    m2 = store["split"]
    server.control.delay_s = 0.3  # every request is slow: the two runs overlap
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(root), url(server, m2), m2.to_json()],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert [r["failed"] for r in results] == [False, False], [r["stderr"] for r in results]
    assert (root / "current").readlink().as_posix() == "releases/tiny-2"
    assert (root / "previous").readlink().as_posix() == "releases/tiny-1"
    assert all(sha(root / "releases/tiny-2" / f.path) == f.sha256 for f in m2.files)
    assert not (root / ".staging").exists()


def test_a_run_that_cannot_take_the_lock_changes_nothing(tmp_path, store, server, monkeypatch):
    root, m = tmp_path / "host", store["single"]
    serving(root, "tiny-1", m, url(server, m))
    before = tree(root)
    monkeypatch.setattr(release, "LOCK_WAIT_S", 1)
    holder = subprocess.Popen(["flock", str(root / ".lock"), "sleep", "30"])
    try:
        res = run_local(release.prune, root=str(root), keep=1, staging=True)  # nothing to prune: no lock needed
        assert not res.failed
        other = install(root, "tiny-2", store["split"], url(server, store["split"]))
        assert other.failed
        assert "another run holds" in other.stderr and "nothing was changed" in other.stderr
    finally:
        holder.kill()
        holder.wait()
    assert tree(root) == before


def test_files_and_directories_are_synced_before_the_rename(tmp_path, store):
    """The release's bytes reach the disk before ``mv -T`` makes it a release (strace sees the order)."""
    if subprocess.run(["sh", "-c", "command -v strace"], capture_output=True).returncode:
        pytest.skip("strace is not installed")
    root, m = tmp_path / "host", store["split"]
    (commands,), _ = run_operation(release.artifact, {"root": str(root), "release": "tiny-1", "manifest": m,
                                                      "source": str(store["dir"] / m.name / m.version)},
                                   {"tierfleet.facts.release.Releases": {f"root={root}": []}})
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,fsync,rename,renameat,renameat2",
                    "-o", str(trace), "sh", "-c", commands], check=True, capture_output=True)
    lines = trace.read_text().splitlines()
    rename = next(i for i, line in enumerate(lines) if "rename" in line and "releases/tiny-1" in line
                  and ".staging/tiny-1" in line)
    synced = {line.split('"')[1] for line in lines[:rename] if "openat" in line and ".staging/tiny-1" in line
              and any("fsync" in later for later in lines[lines.index(line):rename])}
    for name in [f.path for f in m.files] + ["manifest.json"]:
        assert f".staging/tiny-1/{name}" in synced, f"{name} not fsynced before the rename"
    assert ".staging/tiny-1" in synced
    after = [line for line in lines[rename:] if "fsync" in line]
    assert after, "releases/ must be fsynced after the rename"


@pytest.mark.parametrize("odd", ["releases//tiny-1", "releases/tiny-1/.", "./releases/tiny-1", "ABS"])
def test_prune_keeps_what_an_odd_current_link_resolves_to(tmp_path, store, server, odd):
    root, m = tmp_path / "host", store["single"]
    for rid in ("tiny-1", "tiny-2", "tiny-3"):
        assert not install(root, rid, m, url(server, m)).failed
        os.utime(root / "releases" / rid, (1764300000 + int(rid[-1]) * 100,) * 2)
    (root / "current").symlink_to(str(root / "releases/tiny-1") if odd == "ABS" else odd)
    assert not run_local(release.prune, root=str(root), keep=1).failed
    assert sorted(os.listdir(root / "releases")) == ["tiny-1", "tiny-3"]
    assert sha(root / "current" / m.entrypoint) == m.files[0].sha256


def test_prune_refuses_a_current_link_it_does_not_know(tmp_path, store, server):
    root, m = tmp_path / "host", store["single"]
    for rid in ("tiny-1", "tiny-2", "tiny-3"):
        assert not install(root, rid, m, url(server, m)).failed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "current").symlink_to(elsewhere)
    res = run_local(release.prune, root=str(root), keep=1)
    assert (res.will_change, res.failed) == (False, False)
    assert sorted(os.listdir(root / "releases")) == ["tiny-1", "tiny-2", "tiny-3"]
