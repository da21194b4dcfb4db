"""Package operations pyinfra does not ship."""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import operation

import re

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
