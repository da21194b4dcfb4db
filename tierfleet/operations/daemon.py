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


@operation(is_idempotent=False)
def answering(cli: str, timeout: int = 30):
    """Wait up to ``timeout`` s for the ops daemon to answer ``status`` with its policy loaded.

    + cli: the ``tierfleet-ops`` program in the daemon's venv

    Same as ``tierfleet-ops status --json`` by hand. Fails the host when the daemon does not answer (it
    is part of a tier deploy's health gate).
    """
    message = f"tierfleet: ops daemon health: {cli} status gave no answer within {int(timeout)}s"
    yield (f"end=$(( $(date +%s) + {int(timeout)} )); while [ $(date +%s) -lt $end ]; do "
           f"if {quote(cli)} status --json >/dev/null 2>&1; then exit 0; fi; sleep 0.5; done; "
           f"echo {quote(message)} >&2; exit 1")
