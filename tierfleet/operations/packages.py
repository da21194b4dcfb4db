"""Package operations pyinfra does not ship."""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import operation

from tierfleet.facts.packages import AptHeld


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
