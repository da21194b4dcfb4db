"""Release operations: install an artifact into a new release, switch, prune, roll back.

pyinfra ``@operation`` generators over the layout described in :mod:`tierfleet.facts.release`.
Unlike ``files.download`` (moves the file into place, then checks the checksum, and re-hashes
it on every run) and ``files.link`` (``rm -f`` then ``ln -s``: the link is briefly missing):

- :func:`artifact` downloads (``curl -C -``: resumable) or copies every file into
  ``<root>/.staging/<id>/``, checks each sha256 there, decompresses ``.zst`` forms and checks
  again, writes ``manifest.json`` last, fsyncs every file and directory, and renames the whole
  directory to ``<root>/releases/<id>`` (then fsyncs ``releases/``). A rerun reads the manifest and
  the files' sizes instead of re-hashing; a damaged release (a file missing, truncated or of another
  size; of another digest with ``verify=True``) is fetched again, and a damaged *current* release is
  replaced only once the new copy is complete.
- :func:`switch` re-points ``current`` with ``ln -sfn … current.tmp && mv -T current.tmp current``
  (rename(2): readers see the old or the new release, never nothing) and records ``previous``.
- :func:`prune` keeps the newest ``keep`` releases plus whatever ``current``/``previous`` resolve to,
  and refuses to prune a root whose links point at something it does not recognise.
- :func:`rollback` moves ``current`` off a release known to be bad, to ``previous``.

Every operation runs as one shell script holding ``flock <root>/.lock``, and decides again inside
the lock from what is on disk then (another run may have switched or installed meanwhile), so two
runs on one host at once serialise and end in the same state as one.

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
from shlex import quote
from typing import Any
from urllib.parse import quote as url_quote

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from tierfleet import rules
from tierfleet.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    manifest_from_dict,
)
from tierfleet.exceptions import RuleError
from tierfleet.facts.release import Releases
from tierfleet.operations.failure import fail_host

CURL = "curl -fsSL --connect-timeout 10 --retry 2 --retry-delay 1"
#: the lock file every release operation holds (flock) while it changes a root
LOCK = ".lock"
#: seconds a release operation waits for another run's lock before it fails the host
LOCK_WAIT_S = 900


def _check(key: str, rule, value):
    """Apply one of the shared value rules (:mod:`tierfleet.rules`, which the inventory uses too)."""
    try:
        return rule(value)
    except RuleError as exc:
        raise OperationValueError(f"{key}: {value!r} is not allowed; {exc}") from None


def check_root(root: str) -> str:
    """A release root (:func:`tierfleet.rules.release_root`): an absolute path other than ``/`` once
    normalised, no ``..`` component, one line.

    >>> check_root("/var/lib/tierfleet/models/")
    '/var/lib/tierfleet/models'
    >>> check_root("/var/lib/../../etc")
    Traceback (most recent call last):
    ...
    pyinfra.api.exceptions.OperationValueError: root: '/var/lib/../../etc' is not allowed; expected an absolute path other than / without '..'
    """
    return _check("root", rules.release_root, root)


def check_id(release: str, key: str = "release") -> str:
    """A release id (:func:`tierfleet.rules.release_id`): letters, digits, '.', '_', '+', '-' (at most 128)."""
    return _check(key, rules.release_id, release)


def locked(root: str, script: list[str]) -> str:
    """One command: ``script`` (lines) run in ``root`` while holding ``<root>/.lock`` (flock(1)).

    Creates ``root`` first (the lock lives in it). A run that cannot take the lock within
    :data:`LOCK_WAIT_S` fails the host and changes nothing.
    """
    busy = f"tierfleet: another run holds {root}/{LOCK} for over {LOCK_WAIT_S}s; nothing was changed"
    return "\n".join([
        f"mkdir -p {quote(root)} && cd {quote(root)} && (",
        f"flock -w {LOCK_WAIT_S} 9 || {{ echo {quote(busy)} >&2; exit 1; }}",
        *script,
        f") 9>{quote(LOCK)}",
    ])


def _link(name: str, target: str) -> str:
    """Atomically point ``name`` (in the root, the working directory) at ``target``, then fsync the root."""
    return f"ln -sfn {target} {quote(name + '.tmp')} && mv -T {quote(name + '.tmp')} {quote(name)} && sync -- ."


def _drop(stage: str) -> str:
    """Remove a staging directory, and ``.staging`` itself once empty."""
    return f"rm -rf -- {quote(stage)}; rmdir .staging 2>/dev/null"


def _installed(state: dict[str, Any], release: str) -> bool:
    entry = state["releases"].get(release)
    return bool(entry and entry["manifest"])


def _fetch_script(*, stage: str, name: str, size: int, sha256: str, source: str, what: str) -> str:
    """Shell that brings one file into ``stage`` (relative to the root) and verifies it; cleans up on failure."""
    f = quote(f"{stage}/{name}")
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
        f"elif [ ! -s {f} ]; then rm -f {f}; rmdir {quote(stage)} .staging 2>/dev/null; "
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


def _complete(rel: str, manifest: Manifest, hashes: bool) -> str:
    """Shell test: ``rel`` holds exactly this manifest and every file at its recorded size (and digest)."""
    checks = [f"[ \"$(stat -c %s {quote(rel + '/' + f.path)} 2>/dev/null)\" = {f.size} ]" for f in manifest.files]
    if hashes:
        checks += [f"printf '%s  %s\\n' {f.sha256} {quote(rel + '/' + f.path)} | sha256sum -c --status 2>/dev/null"
                   for f in manifest.files]
    return (f"printf '%s\\n' {quote(manifest.to_json())} | cmp -s - {quote(rel + '/' + MANIFEST_NAME)} && "
            + " && ".join(checks))


@operation()
def artifact(root: str, release: str, manifest: Manifest | dict, source: str,
             compressed: bool = False, unpack: bool = False,
             env: dict[str, str] | None = None, verify: bool = False) -> Generator[str, None, None]:
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
    + verify: re-hash an installed release's files against its manifest (reads every byte) instead of
      only comparing their sizes

    Needs ``curl`` (HTTP), ``sha256sum``, ``stat``, ``df``, ``flock``, ``sync`` (and ``zstd``, ``tar`` when
    asked) on the host.
    """
    root = check_root(root)
    release = check_id(release)
    if isinstance(manifest, dict):
        manifest = manifest_from_dict(manifest, source="release.artifact manifest")
    source = _check("source", rules.release_source, source)
    if compressed and not manifest.compressed:
        raise OperationValueError(f"compressed: {manifest.name} {manifest.version} has no .zst form for every file")
    env_lines = ""
    for key, value in sorted((env or {}).items()):
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) or "\n" in value or "\r" in value or "\0" in value:
            raise OperationValueError(f"env: {key!r}: names are [A-Z_][A-Z0-9_]*, values one line")
        env_lines += f"{key}={value.replace('{release}', f'{root}/releases/{release}')}\n"

    state = host.get_fact(Releases, root=root, hashes=True) if verify else host.get_fact(Releases, root=root)
    entry = state["releases"].get(release)
    what = f"release {release}"
    if entry and entry["manifest"]:
        if manifest_from_dict(entry["manifest"]).digests() == manifest.digests():
            n = len(manifest.files)
            host.noop(f"release {release} is installed and verified ({n} file{'' if n == 1 else 's'})")
            return
        yield fail_host(f"{what} under {root} holds other files than {manifest.name} {manifest.version}; "
                    "release ids are immutable, use a new one")
        return
    damaged = (entry or {}).get("damaged")
    if damaged and manifest_from_dict(damaged).digests() != manifest.digests():
        yield fail_host(f"{what} under {root} is damaged and holds other files than {manifest.name} "
                    f"{manifest.version}; release ids are immutable, use a new one")
        return

    rel, stage, old = f"releases/{release}", f".staging/{release}", f".staging/{release}.damaged"
    script = [f"if {_complete(rel, manifest, verify)}; then exit 0; fi"]  # another run installed it meanwhile
    if entry and state["current"] != release:
        script.append(f"rm -rf -- {quote(rel)}")  # damaged and not serving: make room first
    need = sum(
        f.size
        + (f.zst.size if compressed and f.zst else 0)
        + (f.size if unpack and f.path.endswith(".tar") else 0)  # unpacked contents
        for f in manifest.files
    )
    need_kib = need // 1024 + 1
    have_kib = state["staging"].get(release, 0)
    short = f"{what}: not enough space under {root}: need {need_kib - have_kib} KiB"
    script.append(
        f"mkdir -p releases {quote(stage)} && "
        "avail=$(df -Pk . | awk 'NR==2 {print $4}') && "
        f"if [ \"$avail\" -lt {max(0, need_kib - have_kib)} ]; then "
        f"rmdir {quote(stage)} .staging 2>/dev/null; "
        f"echo {quote('tierfleet: ' + short)}\", $avail KiB available\" >&2; exit 1; fi"
    )
    for f in manifest.files:
        if compressed and f.zst is not None:
            script.append(_fetch_script(stage=stage, name=f.zst.path, size=f.zst.size, sha256=f.zst.sha256,
                                        source=source, what=what))
            script.append(_unzstd_script(stage=stage, name=f.path, sha256=f.sha256, what=what))
        else:
            script.append(_fetch_script(stage=stage, name=f.path, size=f.size, sha256=f.sha256,
                                        source=source, what=what))
        if unpack and f.path.endswith(".tar"):
            script.append(_untar_script(stage=stage, name=f.path, what=what))
    if env_lines:
        script.append(f"printf '%s' {quote(env_lines)} > {quote(stage + '/release.env')}")
    written = f"tierfleet: {what}: writing manifest.json failed (disk full?); nothing was installed"
    script += [
        f"if ! printf '%s\\n' {quote(manifest.to_json())} > {quote(stage + '/' + MANIFEST_NAME)}; then "
        f"{_drop(stage)}; echo {quote(written)} >&2; exit 1; fi",
        # on disk before the rename makes it a release: a crash leaves a staging dir, never a torn release
        f"find {quote(stage)} -exec sync -- {{}} + && "
        f"if [ -e {quote(rel)} ]; then rm -rf -- {quote(old)}; mv -T {quote(rel)} {quote(old)}; fi && "
        f"mv -T {quote(stage)} {quote(rel)} && sync -- releases && rm -rf -- {quote(old)}",
        "rmdir .staging 2>/dev/null; true",
    ]
    yield locked(root, script)


def _resolves_to(release: str) -> str:
    """Shell test: ``current`` resolves to ``releases/<release>`` (``top`` is the root's physical path)."""
    return f"[ \"$(readlink -f current)\" = \"$top\"/{quote('releases/' + release)} ]"


@operation()
def switch(root: str, release: str) -> Generator[str, None, None]:
    """Point ``<root>/current`` at an installed release atomically; remember the old one as ``previous``.

    + root: the artifact root
    + release: an installed release id (its ``manifest.json`` must exist when the switch runs)
    """
    root = check_root(root)
    release = check_id(release)
    state = host.get_fact(Releases, root=root)
    if state["current"] == release:
        host.noop(f"current already points at release {release}")
        return
    missing = f"tierfleet: release {release} is not installed under {root}"
    yield locked(root, [
        f"test -f {quote('releases/' + release + '/' + MANIFEST_NAME)} || {{ echo {quote(missing)} >&2; exit 1; }}",
        "top=$(pwd -P); t=$(readlink -f current 2>/dev/null)",
        f"if [ \"$t\" = \"$top\"/{quote('releases/' + release)} ]; then exit 0; fi",  # another run switched meanwhile
        "case \"$t\" in \"$top\"/releases/*/*) ;; \"$top\"/releases/?*) "
        + _link("previous", '"${t#"$top"/}"') + ";; esac",
        _link("current", quote("releases/" + release)),
    ])


@operation()
def rollback(root: str, release: str, to: str | None = None) -> Generator[str, None, None]:
    """Move ``current`` off ``release`` (known bad) to ``to``, else ``previous``, else the newest older one.

    Does nothing when ``current`` does not point at ``release`` (already rolled back, or never
    switched), so a rerun is a no-op. Afterwards ``previous`` names the bad release. Only a release
    that is installed and undamaged is ever rolled back to.
    """
    root = check_root(root)
    release = check_id(release)
    target = check_id(to, "to") if to is not None else None
    state = host.get_fact(Releases, root=root)
    if state["current"] != release:
        host.noop(f"current is {state['current'] or 'unset'}, not {release}: nothing to roll back")
        return
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
        yield fail_host(f"release {release} is current and no earlier release is installed under {root} to roll back to")
        return
    if not _installed(state, target):
        yield fail_host(f"cannot roll back to release {target}: it is not installed (or damaged) under {root}")
        return
    yield locked(root, [
        "top=$(pwd -P)",
        f"if ! {_resolves_to(release)}; then exit 0; fi",  # another run moved current meanwhile
        _link("previous", quote("releases/" + release)),
        _link("current", quote("releases/" + target)),
    ])


@operation()
def prune(root: str, keep: int = 3, staging: bool = False) -> Generator[str, None, None]:
    """Remove old releases, keeping the ``keep`` newest plus those ``current`` and ``previous`` name.

    + keep: releases to keep by install time (at least 1)
    + staging: also remove unfinished downloads under ``.staging/`` (otherwise kept to resume)

    Refuses (a no-op saying why) while ``current`` or ``previous`` points at anything but a release under
    ``root``, and checks again inside the lock what they resolve to before removing anything.
    """
    root = check_root(root)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise OperationValueError(f"keep: {keep!r} is not allowed; expected an integer >= 1")
    state = host.get_fact(Releases, root=root)
    if state["unknown_links"]:
        links = ", ".join(f"{name} -> {state[name + '_target']}" for name in state["unknown_links"])
        host.noop(f"refusing to prune {root}: {links} is not a release under it")
        return
    newest = sorted(state["releases"], key=lambda rid: (state["releases"][rid]["mtime"], rid), reverse=True)
    protected = {state["current"], state["previous"]} - {None}
    kept = set(newest[:keep]) | protected
    doomed = [rid for rid in newest if rid not in kept]
    stale = sorted(state["staging"]) if staging else []
    if not doomed and not stale:
        host.noop(f"{len(state['releases'])} release(s) under {root}, keeping up to {keep}")
        return
    script = ["top=$(pwd -P); cur=; prev=; [ -L current ] && cur=$(readlink -f current); "
              "[ -L previous ] && prev=$(readlink -f previous)"]
    if doomed:
        names = " ".join(quote(rid) for rid in doomed)
        script.append(
            "for l in \"$cur\" \"$prev\"; do case \"$l\" in \"\"|\"$top\"/releases/?*) ;; "
            f"*) echo {quote(f'tierfleet: {root}: current or previous moved off its releases; not pruning')} >&2;"
            " exit 0;; esac; done"
        )
        script.append(f"for r in {names}; do "
                      "{ [ \"$top/releases/$r\" = \"$cur\" ] || [ \"$top/releases/$r\" = \"$prev\" ]; } && continue; "
                      "rm -rf -- \"releases/$r\"; done")
    if stale:
        script.append("rm -rf -- " + " ".join(quote(f".staging/{rid}") for rid in stale)
                      + "; rmdir .staging 2>/dev/null; true")
    yield locked(root, script)
