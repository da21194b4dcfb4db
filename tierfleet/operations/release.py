"""Release operations: install an artifact into a new release, switch, prune, roll back.

pyinfra ``@operation`` generators over the layout described in :mod:`tierfleet.facts.release`.
Unlike ``files.download`` (moves the file into place, then checks the checksum, and re-hashes
it on every run) and ``files.link`` (``rm -f`` then ``ln -s``: the link is briefly missing):

- :func:`artifact` downloads (``curl -C -``: resumable) or copies every file into
  ``<root>/.staging/<id>/``, checks each sha256 there, decompresses ``.zst`` forms and checks
  again, writes ``manifest.json`` last and renames the whole directory to
  ``<root>/releases/<id>``. A rerun reads the manifest instead of re-hashing.
- :func:`switch` re-points ``current`` with ``ln -sfn … current.tmp && mv -T current.tmp current``
  (rename(2): readers see the old or the new release, never nothing) and records ``previous``.
- :func:`prune` keeps the newest ``keep`` releases plus whatever ``current``/``previous`` name.
- :func:`rollback` moves ``current`` off a release known to be bad, to ``previous``.

Failures fail that host only, with a message naming the file and the cause, and leave
``current`` untouched: a checksum mismatch or a full disk removes the staging directory (nothing
partial is left); an interrupted transfer keeps its bytes in staging so the next run resumes;
an unreachable mirror or a missing file leaves nothing. Every value reaching the shell is quoted.

Example (a deploy file)::

    from tierfleet.operations import release
    release.artifact(name="model", root="/srv/tierfleet/model", release="tiny-1",
                     manifest=manifest, source="http://127.0.0.1:8000/tiny/1/")
    release.switch(name="serve it", root="/srv/tierfleet/model", release="tiny-1")
    release.prune(root="/srv/tierfleet/model", keep=3)
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import PurePosixPath
from shlex import quote
from typing import Any
from urllib.parse import quote as url_quote

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from tierfleet.artifacts.manifest import (
    MANIFEST_NAME,
    NAME_RE,
    Manifest,
    manifest_from_dict,
)
from tierfleet.facts.release import Releases

CURL = "curl -fsSL --connect-timeout 10 --retry 2 --retry-delay 1"


def _check_root(root: str) -> str:
    if not isinstance(root, str) or not root.startswith("/") or "\n" in root or root.rstrip("/") == "":
        raise OperationValueError(f"root: {root!r} is not allowed; expected an absolute path other than /")
    return str(PurePosixPath(root))


def _check_id(release: str) -> str:
    if not isinstance(release, str) or not NAME_RE.match(release):
        raise OperationValueError(
            f"release: {release!r} is not allowed; expected letters, digits, '.', '_', '+', '-' (max 128)")
    return release


def _fail(message: str) -> str:
    """A command that fails this host with ``message`` on stderr (decided when facts say so)."""
    return f"echo {quote('tierfleet: ' + message)} >&2; exit 1"


def _link(root: str, name: str, release: str) -> str:
    """Atomically point ``root/name`` at ``releases/<release>`` (relative target)."""
    link, tmp = quote(f"{root}/{name}"), quote(f"{root}/{name}.tmp")
    return f"ln -sfn {quote('releases/' + release)} {tmp} && mv -T {tmp} {link}"


def _drop(stage: str) -> str:
    """Remove a staging directory, and ``.staging`` itself once empty."""
    parent = stage.rsplit("/", 1)[0]
    return f"rm -rf {quote(stage)}; rmdir {quote(parent)} 2>/dev/null"


def _installed(state: dict[str, Any], release: str) -> bool:
    entry = state["releases"].get(release)
    return bool(entry and entry["manifest"])


def _fetch_script(*, stage: str, name: str, size: int, sha256: str, source: str, what: str) -> str:
    """Shell that brings one file into ``stage`` and verifies it; cleans up on failure."""
    f = quote(f"{stage}/{name}")
    st = quote(stage)
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/" + url_quote(name)
        get = f"{CURL} -C - -o {f} {quote(url)}"
        origin = url
    else:
        src = f"{source.rstrip('/')}/{name}"
        get = f"cp -- {quote(src)} {f}"
        origin = src
    mismatch = f"{what}: sha256 mismatch for {origin} (expected {sha256}); nothing was installed"
    disk = f"{what}: writing {name} under {stage} failed (disk full or not writable); nothing was installed"
    gone = f"{what}: cannot fetch {origin}"
    cut = f"{what}: transfer of {origin} was interrupted; the bytes received are kept in {stage} to resume"
    return (
        f"if [ -f {f} ] && [ \"$(stat -c %s {f})\" -gt {size} ]; then rm -f {f}; fi; "
        f"if [ ! -f {f} ] || [ \"$(stat -c %s {f})\" -lt {size} ]; then "
        f"{get}; rc=$?; "
        "if [ $rc -ne 0 ]; then "
        f"if [ $rc -eq 23 ] || [ $rc -eq 1 -a -f {f} ]; then {_drop(stage)}; echo {quote('tierfleet: ' + disk)} >&2; "
        f"elif [ ! -s {f} ]; then rm -f {f}; rmdir {st} {quote(stage.rsplit('/', 1)[0])} 2>/dev/null; "
        f"echo {quote('tierfleet: ' + gone)}\" (exit $rc)\" >&2; "
        f"else echo {quote('tierfleet: ' + cut)} >&2; fi; exit 1; fi; fi; "
        f"if ! printf '%s  %s\\n' {quote(sha256)} {f} | sha256sum -c --status; then "
        f"{_drop(stage)}; echo {quote('tierfleet: ' + mismatch)} >&2; exit 1; fi"
    )


def _unzstd_script(*, stage: str, name: str, sha256: str, what: str) -> str:
    """Shell that decompresses ``name.zst`` in ``stage``, verifies ``name`` and drops the .zst."""
    f, z = quote(f"{stage}/{name}"), quote(f"{stage}/{name}.zst")
    fail = f"{what}: decompressing {name}.zst failed (zstd missing, disk full or corrupt data); nothing was installed"
    mismatch = f"{what}: sha256 mismatch for {name} after decompression (expected {sha256}); nothing was installed"
    return (
        f"if ! zstd -d -q -f -o {f} {z}; then {_drop(stage)}; echo {quote('tierfleet: ' + fail)} >&2; exit 1; fi; "
        f"if ! printf '%s  %s\\n' {quote(sha256)} {f} | sha256sum -c --status; then "
        f"{_drop(stage)}; echo {quote('tierfleet: ' + mismatch)} >&2; exit 1; fi; rm -f {z}"
    )


def _untar_script(*, stage: str, name: str, what: str) -> str:
    """Shell that unpacks the verified tarball ``name`` inside ``stage`` (kept, for re-verification)."""
    fail = f"{what}: unpacking {name} failed (disk full or a bad archive); nothing was installed"
    return (
        f"if ! tar --no-same-owner -xf {quote(f'{stage}/{name}')} -C {quote(stage)}; then "
        f"{_drop(stage)}; echo {quote('tierfleet: ' + fail)} >&2; exit 1; fi"
    )


@operation()
def artifact(root: str, release: str, manifest: Manifest | dict, source: str,
             compressed: bool = False, unpack: bool = False,
             env: dict[str, str] | None = None) -> Generator[str, None, None]:
    """Install an artifact as release ``release`` under ``root``, verified, without switching.

    + root: absolute directory holding ``releases/``, ``current`` and ``.staging/``
    + release: the release id (a directory name; immutable once installed)
    + manifest: the artifact's :class:`~tierfleet.artifacts.manifest.Manifest` (or its dict)
    + source: ``http(s)://`` base URL of the artifact in the store (``…/<name>/<version>/``),
      or an absolute directory on the host holding the files
    + compressed: fetch each file's ``.zst`` form and decompress it on the host (needs ``zstd``)
    + unpack: unpack verified ``.tar`` files inside the release (a runtime: ``bin/llama-server``);
      the tarball is kept so the release still matches its manifest
    + env: variables written to ``release.env`` in the release (``{release}`` in a value becomes the
      release's own directory), for a unit's ``EnvironmentFile=<root>/current/release.env``: whatever
      ``current`` points at names its own files, so switching or rolling back needs no unit change

    Needs ``curl`` (HTTP), ``sha256sum``, ``stat``, ``df`` (and ``zstd``, ``tar`` when asked) on the host.
    """
    root = _check_root(root)
    release = _check_id(release)
    if isinstance(manifest, dict):
        manifest = manifest_from_dict(manifest, source="release.artifact manifest")
    if not source.startswith(("http://", "https://", "/")):
        raise OperationValueError(f"source: {source!r} is not allowed; expected an http(s):// URL or an absolute path")
    if compressed and not manifest.compressed:
        raise OperationValueError(f"compressed: {manifest.name} {manifest.version} has no .zst form for every file")

    state = host.get_fact(Releases, root=root)
    entry = state["releases"].get(release)
    what = f"release {release}"
    if entry and entry["manifest"]:
        if manifest_from_dict(entry["manifest"]).digests() == manifest.digests():
            n = len(manifest.files)
            host.noop(f"release {release} is installed and verified ({n} file{'' if n == 1 else 's'})")
            return
        yield _fail(f"{what} under {root} holds other files than {manifest.name} {manifest.version}; "
                    "release ids are immutable, use a new one")
        return
    rel_dir = f"{root}/releases/{release}"
    if entry:
        if state["current"] == release:
            yield _fail(f"{what} is current but broken ({entry['error']}); refusing to replace a serving release")
            return
        yield f"rm -rf -- {quote(rel_dir)}"

    stage = f"{root}/.staging/{release}"
    need = sum(
        f.size
        + (f.zst.size if compressed and f.zst else 0)
        + (f.size if unpack and f.path.endswith(".tar") else 0)  # unpacked contents
        for f in manifest.files
    )
    need_kib = need // 1024 + 1
    have_kib = state["staging"].get(release, 0)
    short = f"{what}: not enough space under {root}: need {need_kib - have_kib} KiB"
    yield (
        f"mkdir -p {quote(root + '/releases')} {quote(stage)} && "
        f"avail=$(df -Pk {quote(root)} | awk 'NR==2 {{print $4}}') && "
        f"if [ \"$avail\" -lt {max(0, need_kib - have_kib)} ]; then "
        f"rmdir {quote(stage)} {quote(root + '/.staging')} 2>/dev/null; "
        f"echo {quote('tierfleet: ' + short)}\", $avail KiB available\" >&2; exit 1; fi"
    )
    for f in manifest.files:
        if compressed and f.zst is not None:
            yield _fetch_script(stage=stage, name=f.zst.path, size=f.zst.size, sha256=f.zst.sha256,
                                source=source, what=what)
            yield _unzstd_script(stage=stage, name=f.path, sha256=f.sha256, what=what)
        else:
            yield _fetch_script(stage=stage, name=f.path, size=f.size, sha256=f.sha256, source=source, what=what)
        if unpack and f.path.endswith(".tar"):
            yield _untar_script(stage=stage, name=f.path, what=what)
    for key, value in (env or {}).items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) or "\n" in value:
            raise OperationValueError(f"env: {key!r}: names are [A-Z_][A-Z0-9_]*, values one line")
    if env:
        lines = "".join(f"{key}={value.replace('{release}', rel_dir)}\n" for key, value in sorted(env.items()))
        yield f"printf '%s' {quote(lines)} > {quote(stage + '/release.env')}"
    mpath = quote(f"{stage}/{MANIFEST_NAME}")
    yield (
        f"if ! printf '%s\\n' {quote(manifest.to_json())} > {mpath}; then {_drop(stage)}; "
        f"echo {quote(f'tierfleet: {what}: writing manifest.json failed (disk full?); nothing was installed')} >&2; "
        f"exit 1; fi; mv -T {quote(stage)} {quote(rel_dir)} && "
        f"{{ rmdir {quote(root + '/.staging')} 2>/dev/null || true; }}"
    )


@operation()
def switch(root: str, release: str) -> Generator[str, None, None]:
    """Point ``<root>/current`` at an installed release atomically; remember the old one as ``previous``.

    + root: the artifact root
    + release: an installed release id (its ``manifest.json`` must exist when the switch runs)
    """
    root = _check_root(root)
    release = _check_id(release)
    state = host.get_fact(Releases, root=root)
    if state["current"] == release:
        host.noop(f"current already points at release {release}")
        return
    guard = quote(f"{root}/releases/{release}/{MANIFEST_NAME}")
    yield (f"test -f {guard} || {{ echo {quote(f'tierfleet: release {release} is not installed under {root}')} >&2; "
           "exit 1; }")
    if state["current"]:
        yield _link(root, "previous", state["current"])
    yield _link(root, "current", release)


@operation()
def rollback(root: str, release: str, to: str | None = None) -> Generator[str, None, None]:
    """Move ``current`` off ``release`` (known bad) to ``to``, else ``previous``, else the newest older one.

    Does nothing when ``current`` does not point at ``release`` (already rolled back, or never
    switched), so a rerun is a no-op. Afterwards ``previous`` names the bad release.
    """
    root = _check_root(root)
    release = _check_id(release)
    state = host.get_fact(Releases, root=root)
    if state["current"] != release:
        host.noop(f"current is {state['current'] or 'unset'}, not {release}: nothing to roll back")
        return
    target = _check_id(to) if to is not None else None
    if target is None:
        prev = state["previous"]
        if prev and prev != release and _installed(state, prev):
            target = prev
        else:
            mine = state["releases"].get(release, {"mtime": 0})["mtime"]
            older = sorted(
                (e["mtime"], rid) for rid, e in state["releases"].items()
                if rid != release and e["manifest"] and e["mtime"] <= mine
            )
            target = older[-1][1] if older else None
    if target is None:
        yield _fail(f"release {release} is current and no earlier release is installed under {root} to roll back to")
        return
    if not _installed(state, target):
        yield _fail(f"cannot roll back to release {target}: it is not installed under {root}")
        return
    yield _link(root, "previous", release)
    yield _link(root, "current", target)


@operation()
def prune(root: str, keep: int = 3, staging: bool = False) -> Generator[str, None, None]:
    """Remove old releases, keeping the ``keep`` newest plus those ``current`` and ``previous`` name.

    + keep: releases to keep by install time (at least 1)
    + staging: also remove unfinished downloads under ``.staging/`` (otherwise kept to resume)
    """
    root = _check_root(root)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise OperationValueError(f"keep: {keep!r} is not allowed; expected an integer >= 1")
    state = host.get_fact(Releases, root=root)
    newest = sorted(state["releases"], key=lambda rid: (state["releases"][rid]["mtime"], rid), reverse=True)
    protected = {state["current"], state["previous"]} - {None}
    kept = set(newest[:keep]) | protected
    doomed = [rid for rid in newest if rid not in kept]
    stale = sorted(state["staging"]) if staging else []
    if not doomed and not stale:
        host.noop(f"{len(state['releases'])} release(s) under {root}, keeping up to {keep}")
        return
    paths = [f"{root}/releases/{rid}" for rid in doomed] + [f"{root}/.staging/{rid}" for rid in stale]
    yield "rm -rf -- " + " ".join(quote(p) for p in paths)
