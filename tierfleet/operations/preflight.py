"""pyinfra operation that refuses, with its reason, a host that does not fit its tier.

The refusal fails the host before any later operation runs, so a tier deploy changes nothing there;
other hosts go on.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.exceptions import OperationValueError

from tierfleet.exceptions import ConfigError
from tierfleet.operations.failure import fail_host
from tierfleet.preflight import Verdict
from tierfleet.resolve import resolve_host


def host_verdict(current_host, tier: str | None = None, catalog_path: str | None = None) -> Verdict:
    """Read a connected pyinfra host's facts and check it against ``tier`` (default: its ``tier`` data).

    Bad inventory data raises pyinfra's ``OperationValueError`` with the file, key and allowed values.
    """
    try:
        return resolve_host(current_host, tier, catalog_path).verdict
    except ConfigError as exc:
        raise OperationValueError(str(exc)) from None


@operation(is_idempotent=True)
def check(tier: str | None = None, catalog: str | None = None, verdict: Verdict | None = None):
    """Refuse this host unless it fits ``tier`` (default: the host's ``tier`` data, ``auto`` if unset).

    + tier: tier name, or ``auto`` for the highest tier the host fits
    + catalog: tier catalog YAML (default: the packaged catalog or ``$TIERFLEET_CATALOG``)
    + verdict: a verdict the caller already has (a tier deploy reads the facts once)

    A host that fits is a no-op. A host that does not fit fails here with the reason, e.g.
    ``preflight refused: cores: needs 8, has 4``, and runs nothing else.

    **Example:**

    .. code:: python

        from tierfleet.operations import preflight
        preflight.check(name="Host fits tier basic", tier="basic")
    """
    verdict = verdict or host_verdict(host, tier, catalog)
    if verdict.fits:
        extra = f" (warnings: {'; '.join(verdict.warnings)})" if verdict.warnings else ""
        host.noop(f"fits tier {verdict.tier}{extra}")
        return
    yield fail_host(f"preflight refused: {verdict.reason}")
