"""Install the ops daemon into its own venv from a verified wheelhouse release."""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import operation

from tierfleet.facts.ops import OpsInstalled


@operation()
def installed(venv: str, wheels: str, version: str):
    """Make ``venv`` hold ``tierfleet-ops==version``, installed offline from the wheels in ``wheels``.

    + venv: the virtual environment's directory
    + wheels: directory of wheels (the ops release's ``wheels/``)
    + version: the package version wanted
    """
    if host.get_fact(OpsInstalled, venv=venv) == version:
        host.noop(f"tierfleet-ops {version} installed in {venv}")
        return
    yield (
        f"python3 -m venv --clear {quote(venv)} && "
        f"{quote(venv + '/bin/pip')} install --quiet --no-index --find-links {quote(wheels)} "
        f"{quote('tierfleet-ops==' + version)}"
    )
