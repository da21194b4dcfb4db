"""What rollback and prune choose, and what the release operations refuse, run for real on a local root.

Operations run through pyinfra's ``@local`` connector (``tierfleet.lab.runner.run_local``) against a real directory: one
release is installed by ``release.artifact`` (once, then the root is copied for each test), the others are
copies of it (a valid ``manifest.json``) or broken ones (no manifest, or one that is not JSON), with install
times set on the release directories.
Assertions are on the links and directories left behind, so they hold whatever locking or syncing the
operations do on the way.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api import OperationValueError

from tierfleet.artifacts.gguf_tiny import write_tiny_gguf
from tierfleet.artifacts.manifest import publish
from tierfleet.lab.runner import run_local
from tierfleet.operations import release

from .conftest import tree

T0 = 1_764_300_000


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A root where ``release.artifact`` installed the tiny model as release ``seed`` (once per module)."""
    base = tmp_path_factory.mktemp("seeded")
    single = write_tiny_gguf(base / "src" / "tiny.gguf", qtype="q8_0", seed=1)
    manifest = publish(base / "store", single, kind="model", name="tiny", version="1")
    root = base / "host"
    res = run_local(release.artifact, root=str(root), release="seed", manifest=manifest,
                    source=str(base / "store" / "tiny" / "1"))
    assert not res.failed, res.stderr
    return root


@pytest.fixture
def host(tmp_path, installed):
    """A copy of the installed root; ``make(rid, age, broken=None)`` adds releases beside ``seed``."""
    root = tmp_path / "host"
    shutil.copytree(installed, root, symlinks=True)

    class Host:
        path = root
        r = str(root)

        @staticmethod
        def make(rid: str, t: int, broken: str | None = None) -> Path:
            d = root / "releases" / rid
            shutil.copytree(root / "releases" / "seed", d)
            if broken == "no manifest":
                (d / "manifest.json").unlink()
            elif broken == "not json":
                (d / "manifest.json").write_text("{not json")
            os.utime(d, (T0 + t, T0 + t))
            return d

        @staticmethod
        def link(name: str, rid: str) -> None:
            (root / name).symlink_to(f"releases/{rid}")

        @staticmethod
        def points(name: str) -> str | None:
            p = root / name
            return p.readlink().as_posix().removeprefix("releases/") if p.is_symlink() else None

        @staticmethod
        def releases() -> list[str]:
            return sorted(p.name for p in (root / "releases").iterdir())

    return Host


def seed_first(h) -> None:
    """Make the installed seed release the oldest."""
    os.utime(h.path / "releases" / "seed", (T0, T0))


# --- refused arguments ---------------------------------------------------------------------------

BAD_ROOTS = ["relative/path", "", "/", "//", "/srv/x\nrm -rf /", "/srv/x\0y", "/srv/../etc", None, 7]


@pytest.mark.parametrize("bad", BAD_ROOTS, ids=repr)
@pytest.mark.parametrize("op, kw", [(release.rollback, {"release": "tiny-1"}), (release.prune, {}),
                                    (release.switch, {"release": "tiny-1"})],
                         ids=["rollback", "prune", "switch"])
def test_an_invalid_root_is_refused_before_anything_runs(tmp_path, monkeypatch, op, kw, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releases" / "tiny-1").mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(OperationValueError, match=r"root: .* is not allowed; expected an absolute path other than /"):
        run_local(op, root=bad, **kw)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("good, normal", [("/X", "/X"), ("/srv/tierfleet/model/", "/srv/tierfleet/model"),
                                          ("//srv//x", "//srv/x"), ("/srv/x y/it's", "/srv/x y/it's"),
                                          ("/srv/..x/x..", "/srv/..x/x..")])
def test_any_other_absolute_root_is_accepted(good, normal):
    assert release.check_root(good) == normal


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x y", "-rf", "a" * 129, None])
def test_an_invalid_release_id_is_refused(host, bad):
    host.link("current", "seed")
    before = tree(host.path)
    cases = [(release.rollback, {"release": bad}), (release.switch, {"release": bad})]
    if bad is not None:  # to=None means "no explicit target"
        cases.append((release.rollback, {"release": "seed", "to": bad}))
    for op, kw in cases:
        with pytest.raises(OperationValueError, match=r"(release|to): .* is not allowed"):
            run_local(op, root=host.r, **kw)
    assert tree(host.path) == before


def test_a_release_id_with_a_trailing_newline_is_refused(host):
    # a pattern ending in '$' would let "seed\n" through (it matches before a final newline)
    for op in (release.switch, release.rollback):
        with pytest.raises(OperationValueError, match=r"release: .* is not allowed"):
            run_local(op, root=host.r, release="seed\n")


def test_an_invalid_rollback_target_is_refused_even_when_there_is_nothing_to_roll_back(host):
    # current is not the release named: a valid call is a no-op, a hostile target is still an error
    before = tree(host.path)
    with pytest.raises(OperationValueError, match=r"to: '../../etc' is not allowed"):
        run_local(release.rollback, root=host.r, release="seed", to="../../etc")
    assert tree(host.path) == before


BAD_ENV = [{"MODEL": "a\nEVIL=1"}, {"MODEL": "trailing\n"}, {"MODEL": "a\rb"}, {"MODEL": "a\0b"}, {"model": "x"}, {"1ABC": "x"}, {"A-B": "x"},
           {"A B": "x"}, {"A\nB": "x"}, {"": "x"}, {"OK": "x", "ALSO_OK\n": "y"}]


@pytest.mark.parametrize("env", BAD_ENV, ids=repr)
def test_bad_env_is_refused_before_anything_is_fetched(tmp_path, store, env):
    root = tmp_path / "host"
    with pytest.raises(OperationValueError, match=r"env: .*: names are \[A-Z_\]\[A-Z0-9_\]\*, values one line"):
        run_local(release.artifact, root=str(root), release="tiny-1", manifest=store["single"],
                  source=str(store["dir"] / "tiny" / "1"), env=env)
    assert not root.exists()


@pytest.mark.parametrize("raw, key", [({"schema": 99}, "schema"), ({}, "schema")])
def test_a_manifest_given_as_data_is_validated_and_named_in_the_error(tmp_path, store, raw, key):
    from tierfleet.exceptions import ConfigError

    root = tmp_path / "host"
    with pytest.raises(ConfigError) as info:
        run_local(release.artifact, root=str(root), release="tiny-1", manifest=raw,
                  source=str(store["dir"] / "tiny" / "1"))
    assert (info.value.source, info.value.key) == ("release.artifact manifest", key)
    assert not root.exists()


def test_env_file_is_written_literally_with_the_release_directory(tmp_path, store):
    root = tmp_path / "host"
    env = {"LLAMA_MODEL": "{release}/tiny.gguf", "EXTRA": "$(touch pwned) `touch pwned2`; x", "A_1": ""}
    res = run_local(release.artifact, root=str(root), release="tiny-1", manifest=store["single"],
                    source=str(store["dir"] / "tiny" / "1"), env=env)
    assert not res.failed, res.stderr
    assert (root / "releases/tiny-1/release.env").read_text() == (
        "A_1=\n"
        "EXTRA=$(touch pwned) `touch pwned2`; x\n"
        f"LLAMA_MODEL={root}/releases/tiny-1/tiny.gguf\n")
    assert not list(tmp_path.rglob("pwned*"))


def test_a_tarball_is_unpacked_only_when_asked(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "llama-server").write_text("#!/bin/sh\n")
    subprocess.run(["tar", "-cf", str(tmp_path / "rt.tar"), "-C", str(src), "bin"], check=True)
    m = publish(tmp_path / "store", [tmp_path / "rt.tar"], kind="runtime", name="rt", version="1")
    source = str(tmp_path / "store" / "rt" / "1")
    root = tmp_path / "host"
    assert not run_local(release.artifact, root=str(root), release="kept", manifest=m, source=source).failed
    assert sorted(p.name for p in (root / "releases" / "kept").iterdir()) == ["manifest.json", "rt.tar"]
    res = run_local(release.artifact, root=str(root), release="unpacked", manifest=m, source=source, unpack=True)
    assert not res.failed, res.stderr
    # unpacked beside the tarball, which stays so the release still matches its manifest
    assert (root / "releases" / "unpacked" / "bin" / "llama-server").read_text() == "#!/bin/sh\n"
    assert (root / "releases" / "unpacked" / "rt.tar").is_file()


#: installs an artifact on a 256 KiB tmpfs mounted in the child's own mount namespace; prints what happened
SMALL_DISK = """
import json, os, sys
from tierfleet.lab.runner import run_local
from tierfleet.artifacts.manifest import manifest_from_dict
from tierfleet.operations import release
mnt, source, manifest = sys.argv[1], sys.argv[2], manifest_from_dict(json.loads(sys.argv[3]))
res = run_local(release.artifact, root=mnt + "/host", release="rt-1", manifest=manifest, source=source, unpack=True)
files = sorted(os.path.relpath(os.path.join(d, f), mnt) for d, _, fs in os.walk(mnt) for f in fs)
print(json.dumps({"failed": res.failed, "stderr": res.stderr, "files": files}))
"""


def test_only_tarballs_count_twice_in_the_space_needed(tmp_path):
    # a runtime with a 10 KiB tarball and a 150 KiB file fits a 256 KiB disk: 150 + 10 + 10 (unpacked) KiB
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "llama-server").write_bytes(os.urandom(8 * 1024))
    subprocess.run(["tar", "-cf", str(tmp_path / "rt.tar"), "-C", str(src), "bin"], check=True)
    (tmp_path / "ggml.bin").write_bytes(os.urandom(150 * 1024))
    m = publish(tmp_path / "store", [tmp_path / "rt.tar", tmp_path / "ggml.bin"], kind="runtime", name="rt",
                version="1")
    mnt = tmp_path / "small"
    mnt.mkdir()
    q = shlex.quote
    script = (f"mount -t tmpfs -o size=256k tmpfs {q(str(mnt))} || exit 97; exec {q(sys.executable)} -c "
              f"{q(SMALL_DISK)} {q(str(mnt))} {q(str(tmp_path / 'store' / 'rt' / '1'))} {q(m.to_json())}")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    if res.returncode == 97 or (res.returncode and res.stderr.startswith("unshare:")):
        pytest.skip(f"cannot mount in a private namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert not out["failed"], out["stderr"]
    assert "host/releases/rt-1/bin/llama-server" in out["files"]
    assert "host/releases/rt-1/ggml.bin" in out["files"]


# --- rollback: which release it goes back to ------------------------------------------------------

def rollback(h, rid: str, **kw):
    return run_local(release.rollback, root=h.r, release=rid, **kw)


def test_a_broken_previous_is_skipped_for_the_newest_older_valid_release(host):
    seed_first(host)
    host.make("r2", 200)
    host.make("r3", 300, broken="no manifest")
    host.make("r4", 400)                          # the bad one, current
    host.make("r5", 500)                          # installed later, never switched to
    host.link("current", "r4")
    host.link("previous", "r3")
    res = rollback(host, "r4")
    assert (res.will_change, res.failed) == (True, False), res.stderr
    assert (host.points("current"), host.points("previous")) == ("r2", "r4")
    assert host.releases() == ["r2", "r3", "r4", "r5", "seed"]
    assert not rollback(host, "r4").will_change   # rerun: already rolled back


def test_a_previous_with_an_unreadable_manifest_is_skipped(host):
    seed_first(host)
    host.make("r2", 200, broken="not json")
    host.make("r3", 300, broken="no manifest")
    host.make("r4", 400)
    host.link("current", "r4")
    host.link("previous", "r2")
    assert not rollback(host, "r4").failed
    assert host.points("current") == "seed"       # the only valid release older than r4


def test_a_valid_previous_wins_over_a_newer_older_release(host):
    seed_first(host)
    host.make("r2", 200)
    host.make("r3", 300)
    host.link("current", "r3")
    host.link("previous", "seed")
    assert not rollback(host, "r3").failed
    assert (host.points("current"), host.points("previous")) == ("seed", "r3")


@pytest.mark.parametrize("previous", [None, "r3", "gone"], ids=["no previous", "previous is the bad one",
                                                                 "previous was removed"])
def test_without_a_usable_previous_the_newest_older_valid_release_is_chosen(host, previous):
    seed_first(host)
    host.make("r1", 100)
    host.make("r2", 200)
    host.make("r3", 300)
    host.make("r4", 400)
    host.link("current", "r3")
    if previous:
        host.link("previous", previous)
    assert not rollback(host, "r3").failed
    assert (host.points("current"), host.points("previous")) == ("r2", "r3")


def test_the_choice_follows_install_time_not_the_name(host):
    seed_first(host)
    host.make("b", 100)
    host.make("z", 200)                            # newest older: z, though a and b sort around it
    host.make("a", 300)
    host.link("current", "a")
    assert not rollback(host, "a").failed
    assert host.points("current") == "z"


def test_a_release_installed_in_the_same_second_counts_as_older(host):
    # two installs within one second share an mtime; the other one is still a candidate, not skipped for seed
    seed_first(host)
    host.make("r2", 300)
    host.make("r3", 300)
    host.link("current", "r3")
    assert not rollback(host, "r3").failed
    assert (host.points("current"), host.points("previous")) == ("r2", "r3")


def failure(res, caplog) -> str:
    """What a failed operation said: its stderr, or the red line a host failure logs."""
    return res.stderr + caplog.text


def test_no_older_valid_release_fails_and_keeps_current(host, caplog):
    host.make("r1", 100, broken="no manifest")
    host.make("r2", 200, broken="not json")
    host.make("r3", 300)
    os.utime(host.path / "releases" / "seed", (T0 + 900, T0 + 900))   # valid but newer than r3
    host.link("current", "r3")
    before = tree(host.path)
    res = rollback(host, "r3")
    assert res.failed
    assert f"release r3 is current and no earlier release is installed under {host.r} to roll back to" \
        in failure(res, caplog)
    assert tree(host.path) == before


def test_an_explicit_target_must_be_installed(host, caplog):
    seed_first(host)
    host.make("r1", 100, broken="no manifest")
    host.make("r2", 200)
    host.link("current", "r2")
    host.link("previous", "seed")
    before = tree(host.path)
    res = rollback(host, "r2", to="r1")
    assert res.failed
    assert "cannot roll back to release r1: it is not installed" in failure(res, caplog)
    assert tree(host.path) == before
    # a valid explicit target wins over previous, even a newer one
    host.make("r9", 900)
    assert not rollback(host, "r2", to="r9").failed
    assert (host.points("current"), host.points("previous")) == ("r9", "r2")


def test_rollback_of_a_release_that_is_not_current_changes_nothing(host):
    seed_first(host)
    host.make("r2", 200)
    host.link("current", "r2")
    host.link("previous", "seed")
    before = tree(host.path)
    res = rollback(host, "seed")
    assert (res.will_change, res.failed) == (False, False)
    assert tree(host.path) == before


# --- prune: what it keeps -------------------------------------------------------------------------

def prune(h, **kw):
    return run_local(release.prune, root=h.r, **kw)


def test_prune_keeps_three_by_default_plus_current_and_previous_and_staging(host):
    seed_first(host)
    # install order (oldest first) differs from name order
    for i, rid in enumerate(["v3", "v10", "v1", "v7", "v2", "v9"], start=1):
        host.make(rid, 100 * i)
    host.link("current", "v3")
    host.link("previous", "v10")
    part = host.path / ".staging" / "v11" / "tiny.gguf"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"partial")

    res = prune(host)
    assert (res.will_change, res.failed) == (True, False), res.stderr
    # the three newest (v7, v2, v9) plus current (v3) and previous (v10); v1 and the seed go
    assert host.releases() == ["v10", "v2", "v3", "v7", "v9"]
    assert part.read_bytes() == b"partial"      # an unfinished download is kept to resume
    assert not prune(host).will_change

    res = prune(host, staging=True)
    assert (res.will_change, res.failed) == (True, False)
    assert not (host.path / ".staging" / "v11").exists()
    assert host.releases() == ["v10", "v2", "v3", "v7", "v9"]
    assert (host.points("current"), host.points("previous")) == ("v3", "v10")


def test_prune_with_keep_one_keeps_the_newest_and_the_links(host):
    seed_first(host)
    for i, rid in enumerate(["a", "b", "c"], start=1):
        host.make(rid, 100 * i)
    host.link("current", "a")
    assert not prune(host, keep=1).failed
    assert host.releases() == ["a", "c"]


@pytest.mark.parametrize("keep", [0, -1, True, "3", 1.5, None])
def test_prune_refuses_a_bad_keep(host, keep):
    before = tree(host.path)
    with pytest.raises(OperationValueError, match=r"keep: .* is not allowed; expected an integer >= 1"):
        prune(host, keep=keep)
    assert tree(host.path) == before
