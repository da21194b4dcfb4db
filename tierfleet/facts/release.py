"""Release state of an artifact root on a host: installed releases, ``current``, ``previous``.

Layout (Capistrano style), all under one root on one filesystem so renames are atomic::

    <root>/releases/<id>/manifest.json   written last, after every file was verified and synced
    <root>/releases/<id>/<files>
    <root>/current  -> releases/<id>      switched with ln -sfn + mv -T (atomic)
    <root>/previous -> releases/<id>      what current pointed at before the last switch
    <root>/.staging/<id>/                 downloads in progress (kept for resume)
    <root>/.lock                          flock(1) taken by every release operation

A release counts as installed only when its ``manifest.json`` validates *and* every file it names is
there as a regular file of the size it records (and, when asked with ``hashes=True``, of the sha256 it
records): a model file truncated or replaced after install is a damaged release, not "no change".

The fact's command prints one tab-separated record a line; :meth:`Releases.process` is a pure
parser of those lines (tested on recorded output in ``tests/operations/``).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from tierfleet.artifacts.manifest import NAME_RE, manifest_from_dict
from tierfleet.exceptions import ConfigError

_DIGITS = re.compile(r"[0-9]{1,20}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _int(text: str) -> int | None:
    """A non-negative decimal (ASCII digits only: ``"²".isdigit()`` is true in Python), else None."""
    return int(text) if _DIGITS.fullmatch(text) else None


def release_of(target: str | None, root: str | None = None) -> str | None:
    """The release id a ``current``/``previous`` link target names, or None when it names no release.

    The target is normalised first (``releases//a``, ``releases/a/.``, ``./releases/a`` all name ``a``);
    an absolute target names a release only under ``root`` (when given) or under any ``…/releases/``.

    >>> release_of("releases/m-1"), release_of("releases//m-1/."), release_of("/tmp/x"), release_of("../releases/m")
    ('m-1', 'm-1', None, None)
    >>> release_of("/srv/m/releases/a", root="/srv/m"), release_of("/srv/other/releases/a", root="/srv/m")
    ('a', None)
    """
    if not target:
        return None
    norm = posixpath.normpath(target)
    if norm.startswith("/"):
        if root is not None:
            prefix = posixpath.normpath(root) + "/releases/"
            if not norm.startswith(prefix):
                return None
            norm = "releases/" + norm[len(prefix):]
        else:
            norm = "releases/" + norm.rsplit("/releases/", 1)[-1] if "/releases/" in norm else norm
    parts = norm.split("/")
    if len(parts) == 2 and parts[0] == "releases" and NAME_RE.match(parts[1]):
        return parts[1]
    return None


def _check_files(entry: dict[str, Any], files: dict[str, tuple[int | None, str | None]], hashes: bool) -> None:
    """Mark ``entry`` damaged (manifest None, error set) when a file is missing, of another size or digest."""
    manifest = entry["manifest"]
    for f in manifest["files"]:
        size, digest = files.get(f["path"], (None, None))
        if size is None:
            problem = f"{f['path']} is missing (or not a regular file)"
        elif size != f["size"]:
            problem = f"{f['path']} is {size} bytes, its manifest says {f['size']}"
        elif hashes and digest != f["sha256"]:
            problem = f"{f['path']} has sha256 {digest or 'unknown'}, its manifest says {f['sha256']}"
        else:
            continue
        entry["manifest"], entry["damaged"] = None, manifest
        entry["error"] = f"damaged: {problem}"
        return


def parse_release_lines(lines: list[str]) -> dict[str, Any]:
    """Parse the fact's records into a plain dict (pure; garbled lines are ignored, never raised on).

    Returns ``{"current", "current_target", "previous", "previous_target", "releases", "staging",
    "unknown_links"}``; ``releases`` maps id -> ``{"mtime", "manifest", "error"}`` where ``manifest`` is the
    validated manifest as a dict, None when missing, invalid or damaged (``error`` says why; a damaged
    release also keeps its manifest under ``damaged``); ``staging`` maps id -> KiB held by an unfinished
    download; ``unknown_links`` names ``current``/``previous`` links that point at no release under the root.

    >>> s = parse_release_lines(["current\\treleases/a\\t", "release\\ta\\t1700000000\\t"])
    >>> s["current"], s["releases"]["a"]["manifest"], s["releases"]["a"]["error"]
    ('a', None, 'no manifest.json')
    """
    state: dict[str, Any] = {
        "current": None, "current_target": None,
        "previous": None, "previous_target": None,
        "releases": {}, "staging": {}, "unknown_links": [],
    }
    root: str | None = None
    files: dict[str, dict[str, tuple[int | None, str | None]]] = {}
    hashes = False
    links: dict[str, tuple[str, str]] = {}
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        kind = fields[0]
        if kind == "root" and len(fields) >= 2 and fields[1].startswith("/"):
            root = fields[1]
        elif kind in ("current", "previous") and len(fields) >= 2:
            links[kind] = (fields[1], fields[2] if len(fields) >= 3 else "")
        elif kind == "release" and len(fields) >= 3:
            rid, mtime = fields[1], fields[2]
            raw = "\t".join(fields[3:]).strip()
            entry: dict[str, Any] = {"mtime": _int(mtime) or 0, "manifest": None, "error": None}
            if not raw:
                entry["error"] = "no manifest.json"
            else:
                try:
                    entry["manifest"] = manifest_from_dict(json.loads(raw), f"releases/{rid}/manifest.json").to_dict()
                except (ValueError, RecursionError) as exc:  # JSONDecodeError and ConfigError are ValueErrors
                    entry["error"] = (str(exc) if isinstance(exc, ConfigError)
                                      else f"manifest.json is not valid JSON: {getattr(exc, 'msg', 'too deeply nested')}")
            state["releases"][rid] = entry
        elif kind in ("file", "sha") and len(fields) >= 5:
            rid, ftype, name = fields[1], fields[2], fields[3].rsplit("/", 1)[-1]
            mine = files.setdefault(rid, {})
            if kind == "file" and ftype == "regular file":
                mine[name] = (_int(fields[4]), mine.get(name, (None, None))[1])
            elif kind == "sha":
                hashes = True
                digest = fields[4] if _SHA256.fullmatch(fields[4]) else None
                mine[name] = (mine.get(name, (None, None))[0], digest)
        elif kind == "staging" and len(fields) >= 3:
            state["staging"][fields[1]] = _int(fields[2]) or 0
    for rid, entry in state["releases"].items():
        if entry["manifest"] is not None:
            _check_files(entry, files.get(rid, {}), hashes)
    for kind, (target, resolved) in links.items():
        state[f"{kind}_target"] = target
        rid = release_of(resolved, root) if resolved and root else release_of(target, root)
        state[kind] = rid
        if rid is None:
            state["unknown_links"].append(kind)
    return state


class Releases(FactBase):
    """Releases under ``root``, where ``current`` and ``previous`` point, unfinished downloads.

    + root: the artifact root
    + hashes: also hash every file (reads every byte: on demand only, e.g. ``verify_releases``)

    Equivalent by hand: ``ls -l ROOT ROOT/releases/*; cat ROOT/releases/*/manifest.json``.
    A root that does not exist yet gives an empty state (no releases, no current).
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return parse_release_lines([])

    def command(self, root: str, hashes: bool = False) -> str:
        r = shlex.quote(root)
        sha = (
            "for f in \"$d\"/*; do [ -f \"$f\" ] && [ ! -L \"$f\" ] || continue; "
            "printf 'sha\\t%s\\t-\\t%s\\t%s\\n' \"${d#releases/}\" \"${f##*/}\" \"$(sha256sum < \"$f\" | cut -c1-64)\"; "
            "done; "
        ) if hashes else ""
        return (
            f"cd {r} 2>/dev/null || exit 0; printf 'root\\t%s\\n' \"$(pwd -P)\"; "
            "for l in current previous; do [ -L $l ] && "
            "printf '%s\\t%s\\t%s\\n' $l \"$(readlink $l)\" \"$(readlink -f $l)\"; done; "
            "for d in releases/*/; do [ -d \"$d\" ] || continue; d=${d%/}; "
            "m=; if [ -f \"$d/manifest.json\" ]; then m=$(tr -d '\\n' < \"$d/manifest.json\"); fi; "
            "printf 'release\\t%s\\t%s\\t%s\\n' \"${d#releases/}\" \"$(stat -c %Y \"$d\")\" \"$m\"; "
            "stat --printf \"file\\t${d#releases/}\\t%F\\t%n\\t%s\\n\" -- \"$d\"/* 2>/dev/null; "
            f"{sha}done; "
            "for d in .staging/*/; do [ -d \"$d\" ] || continue; d=${d%/}; "
            "printf 'staging\\t%s\\t%s\\n' \"${d#.staging/}\" \"$(du -sk \"$d\" | cut -f1)\"; done; "
            "exit 0"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_release_lines(output)
