"""Release state of an artifact root on a host: installed releases, ``current``, ``previous``.

Layout (Capistrano style), all under one root on one filesystem so renames are atomic::

    <root>/releases/<id>/manifest.json   written last, after every file was verified
    <root>/releases/<id>/<files>
    <root>/current  -> releases/<id>      switched with ln -sfn + mv -T (atomic)
    <root>/previous -> releases/<id>      what current pointed at before the last switch
    <root>/.staging/<id>/                 downloads in progress (kept for resume)

The fact's command prints one tab-separated record a line; :meth:`Releases.process` is a pure
parser of those lines (tested on recorded output in ``tests/operations/``).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

from tierfleet.artifacts.manifest import manifest_from_dict
from tierfleet.exceptions import ConfigError


def release_of(target: str | None) -> str | None:
    """The release id a ``current``/``previous`` link target names, or None.

    >>> release_of("releases/m-1"), release_of("/srv/models/releases/m-1/"), release_of("/tmp/x")
    ('m-1', 'm-1', None)
    """
    if not target:
        return None
    parts = target.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "releases" and parts[-1]:
        return parts[-1]
    return None


def parse_release_lines(lines: list[str]) -> dict[str, Any]:
    """Parse the fact's records into a plain dict (pure).

    Returns ``{"current", "current_target", "previous", "previous_target", "releases",
    "staging"}``; ``releases`` maps id -> ``{"mtime", "manifest", "error"}`` where
    ``manifest`` is the validated manifest as a dict (None when missing or invalid, with
    ``error`` saying why); ``staging`` maps id -> KiB held by an unfinished download.

    >>> s = parse_release_lines(["current\\treleases/a", "release\\ta\\t1700000000\\t"])
    >>> s["current"], s["releases"]["a"]["manifest"], s["releases"]["a"]["error"]
    ('a', None, 'no manifest.json')
    """
    state: dict[str, Any] = {
        "current": None, "current_target": None,
        "previous": None, "previous_target": None,
        "releases": {}, "staging": {},
    }
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        kind = fields[0]
        if kind in ("current", "previous") and len(fields) >= 2:
            state[f"{kind}_target"] = fields[1]
            state[kind] = release_of(fields[1])
        elif kind == "release" and len(fields) >= 3:
            rid, mtime = fields[1], fields[2]
            raw = "\t".join(fields[3:]).strip()
            entry: dict[str, Any] = {"mtime": int(mtime) if mtime.isdigit() else 0,
                                     "manifest": None, "error": None}
            if not raw:
                entry["error"] = "no manifest.json"
            else:
                try:
                    entry["manifest"] = manifest_from_dict(json.loads(raw), f"releases/{rid}/manifest.json").to_dict()
                except json.JSONDecodeError as exc:
                    entry["error"] = f"manifest.json is not valid JSON: {exc.msg}"
                except ConfigError as exc:
                    entry["error"] = str(exc)
            state["releases"][rid] = entry
        elif kind == "staging" and len(fields) >= 3:
            state["staging"][fields[1]] = int(fields[2]) if fields[2].isdigit() else 0
    return state


class Releases(FactBase):
    """Releases under ``root``, where ``current`` and ``previous`` point, unfinished downloads.

    Equivalent by hand: ``ls -l ROOT ROOT/releases; cat ROOT/releases/*/manifest.json``.
    A root that does not exist yet gives an empty state (no releases, no current).
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return parse_release_lines([])

    def command(self, root: str) -> str:
        r = shlex.quote(root)
        return (
            f"cd {r} 2>/dev/null || exit 0; "
            "if [ -L current ]; then printf 'current\\t%s\\n' \"$(readlink current)\"; fi; "
            "if [ -L previous ]; then printf 'previous\\t%s\\n' \"$(readlink previous)\"; fi; "
            "for d in releases/*/; do [ -d \"$d\" ] || continue; d=${d%/}; "
            "m=; if [ -f \"$d/manifest.json\" ]; then m=$(tr -d '\\n' < \"$d/manifest.json\"); fi; "
            "printf 'release\\t%s\\t%s\\t%s\\n' \"${d#releases/}\" \"$(stat -c %Y \"$d\")\" \"$m\"; done; "
            "for d in .staging/*/; do [ -d \"$d\" ] || continue; d=${d%/}; "
            "printf 'staging\\t%s\\t%s\\n' \"${d#.staging/}\" \"$(du -sk \"$d\" | cut -f1)\"; done; "
            "exit 0"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_release_lines(output)
