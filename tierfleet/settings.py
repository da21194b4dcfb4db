"""Per-host tierfleet settings, read from pyinfra inventory data (host data > group data > all.py).

Every key has a type, a default and a description here, in one place:
"""

from __future__ import annotations

from typing import Any

import pydantic

from tierfleet.catalog import Catalog, ModelArtifact
from tierfleet.exceptions import InventoryError
from tierfleet.validation import validate

DEFAULT_MODEL_DIR = "/var/lib/tierfleet/models"


class HostSettings(pydantic.BaseModel):
    """The inventory keys tierfleet reads. Unknown keys (ssh_*, other deploys' data) are ignored."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    tier: str = pydantic.Field(
        default="auto",
        description="tier name from the catalog, or 'auto' for the highest tier the host fits",
    )
    model: ModelArtifact | None = pydantic.Field(
        default=None, description="override the tier's model artifact (name, quant, file, size_gb, sha256)"
    )
    model_dir: str = pydantic.Field(
        default=DEFAULT_MODEL_DIR,
        pattern=r"^/[A-Za-z0-9._/+-]*$",
        description="absolute directory for model releases (letters, digits and ._/+- only)",
    )


#: the inventory keys :class:`HostSettings` reads
KEYS = tuple(HostSettings.model_fields)


def host_settings(data: dict[str, Any], catalog: Catalog, source: str) -> HostSettings:
    """Validate one host's data; ``source`` names the inventory file and host in errors.

    >>> from tierfleet.catalog import load_catalog
    >>> host_settings({"tier": "basic", "ssh_user": "root"}, load_catalog(), "inv.py: host a").tier
    'basic'
    >>> host_settings({"tier": "gold"}, load_catalog(), "inv.py: host a")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.InventoryError: inv.py: host a: tier: unknown tier 'gold'; allowed: auto, basic, advanced, enterprise
    """
    present = {key: data[key] for key in KEYS if data.get(key) is not None}
    settings = validate(HostSettings, present, source, error=InventoryError)
    if settings.tier != "auto" and settings.tier not in catalog.tiers:
        allowed = ", ".join(("auto", *catalog.names))
        raise InventoryError(source, "tier", f"unknown tier {settings.tier!r}; allowed: {allowed}")
    return settings
