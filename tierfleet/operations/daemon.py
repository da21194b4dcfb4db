"""Install the ops daemon into its own venv from a verified wheelhouse release."""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import operation

from tierfleet.facts.ops import OpsInstalled


@operation()
def installed(venv: str, wheels: str, version: str):
    """Make ``venv`` hold ``tierfleet-ops==version``, installed offline from the wheels in ``wheels``.

    + venv: the path the unit runs from: a link to ``<venv>s/<version>`` (a venv per version)
    + wheels: directory of wheels (the ops release's ``wheels/``)
    + version: the package version wanted

    The new venv is built beside the running one and the link switched only after pip succeeded, so a
    failed install leaves the running daemon's venv whole.
    """
    if host.get_fact(OpsInstalled, venv=venv) == version:
        host.noop(f"tierfleet-ops {version} installed in {venv}")
        return
    target = f"{venv}s/{version}"
    yield (
        f"python3 -m venv --clear {quote(target)} && "
        f"{quote(target + '/bin/pip')} install --quiet --no-index --find-links {quote(wheels)} "
        f"{quote('tierfleet-ops==' + version)} && "
        f"ln -sfn {quote(target)} {quote(venv + '.tmp')} && mv -T {quote(venv + '.tmp')} {quote(venv)}"
    )
