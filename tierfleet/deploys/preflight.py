"""The preflight deploy: check every host against its tier and change nothing."""

from __future__ import annotations

from pyinfra.api import deploy

from tierfleet.operations import preflight as preflight_ops


@deploy("tierfleet preflight")
def preflight(tier: str | None = None) -> None:
    """Fail every host that does not fit its tier (``tier`` overrides the hosts' ``tier`` data)."""
    preflight_ops.check(name=f"Host fits tier {tier or 'from inventory'}", tier=tier)
