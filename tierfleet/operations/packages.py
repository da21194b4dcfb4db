"""Package operations pyinfra does not ship."""

from __future__ import annotations

import re
from shlex import quote

from pyinfra import host
from pyinfra.api import OperationValueError, operation
from pyinfra.facts.files import Sha256File

from tierfleet.facts.packages import AptHeld, DebInstalled


@operation()
def held(packages: list[str], present: bool = True):
    """Hold (or, with ``present=False``, unhold) apt packages so upgrades never move them.

    + packages: package names
    + present: hold when True, unhold when False

    **Example:**

    .. code:: python

        packages.held(name="Pin the driver branch", packages=["cuda-drivers-570"])
    """
    current = set(host.get_fact(AptHeld))
    todo = [p for p in packages if (p in current) != present]
    if not todo:
        host.noop(f"{', '.join(packages)} already {'held' if present else 'not held'}")
        return
    verb = "hold" if present else "unhold"
    yield " ".join(["apt-mark", verb, *(quote(p) for p in todo)])


@operation()
def held_matching(pattern: str):
    """Hold every installed package whose name matches the regular expression ``pattern``.

    + pattern: e.g. ``^(lib)?nvidia-.*-570(-server)?$|^cuda-drivers-570$``: the whole driver branch, so an
      unattended upgrade cannot move the user-space libraries away from the loaded kernel module

    Reads the installed packages when it runs, so packages installed earlier in the same deploy count.
    """
    regex = re.compile(pattern)
    wanted = [name for name in host.get_fact(DebInstalled) if regex.search(name)]
    current = set(host.get_fact(AptHeld))
    todo = [name for name in wanted if name not in current]
    if not todo:
        host.noop(f"{len(wanted)} package(s) matching {pattern} held")
        return
    yield " ".join(["apt-mark", "hold", *(quote(name) for name in todo)])


@operation()
def repository_key(src: str, dest: str, sha256: str, mode: str = "644"):
    """Install an apt repository's signing key from ``src`` at ``dest``, only if its sha256 is ``sha256``.

    + src: http(s) URL of the (ASCII-armoured) key
    + dest: where apt reads it (the file a source's ``signed-by`` names)
    + sha256: the key file's pinned sha256 (64 lowercase hex digits)

    Unlike ``files.download(sha256sum=...)``, which moves the download into place and only then checks it
    (so a wrong key is left where apt trusts it), the key is fetched to a temporary file next to ``dest``,
    checked, and renamed over ``dest`` only when it matches; a mismatch fails the host and leaves ``dest`` as
    it was. Same as ``curl -fsSL SRC -o TMP && echo "SHA256  TMP" | sha256sum -c && mv TMP DEST``.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise OperationValueError(f"sha256: {sha256!r} is not allowed; expected 64 lowercase hex digits")
    if not re.match(r"^https?://", src):
        raise OperationValueError(f"src: {src!r} is not allowed; expected an http(s):// URL")
    if host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} is the key with sha256 {sha256}")
        return
    folder, name = dest.rsplit("/", 1)
    tmp = f"{folder}/.{name}.XXXXXX"
    mismatch = f"tierfleet: the key at {src} does not have the pinned sha256 {sha256}; {dest} was left as it was"
    yield (
        f"t=$(mktemp {quote(tmp)}) || exit 1; "
        f"if ! curl -fsSL --max-time 60 -o \"$t\" {quote(src)}; then rm -f \"$t\"; "
        f"echo {quote(f'tierfleet: cannot fetch the key at {src}')} >&2; exit 1; fi; "
        f"if ! printf '%s  %s\\n' {sha256} \"$t\" | sha256sum -c --status; then rm -f \"$t\"; "
        f"echo {quote(mismatch)} >&2; exit 1; fi; "
        f"chmod {quote(mode)} \"$t\" && mv -f \"$t\" {quote(dest)}"
    )
