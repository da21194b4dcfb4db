"""One way from a pyinfra host to its verdict: host data -> settings -> facts -> profile -> verdict.

The tier deploys, the preflight operation and the fleet commands (preflight, status, upgrades) all go through
:func:`host_settings_of` and :func:`resolve`, so a host is read and judged the same way everywhere:

- :func:`host_settings_of` validates the host's inventory data (no connection; raises
  :class:`~tierfleet.exceptions.InventoryError` naming the source, the host, the key and what is allowed);
- :func:`resolve` reads the host's facts (one round trip each), builds its profile and checks it against
  its tier.

A fleet command validates every host's settings before it connects to any; a deploy does both for the host
it runs on (:func:`resolve_host`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tierfleet.catalog import Catalog, load_catalog
from tierfleet.preflight import Verdict, check_host
from tierfleet.profile import HostProfile, build_profile, gather_facts
from tierfleet.settings import KEYS, HostSettings, host_settings


@dataclass(frozen=True)
class Resolved:
    """Everything known about one host once its facts are read."""

    catalog: Catalog
    settings: HostSettings
    facts: dict[str, Any]
    profile: HostProfile
    verdict: Verdict


def host_settings_of(host: Any, catalog: Catalog, source: str, tier: str | None = None) -> HostSettings:
    """A pyinfra host's validated tierfleet settings; ``tier`` overrides its ``tier`` data.

    ``source`` names the inventory in errors (``inventory/edge.py``); the host's name is added.
    """
    data = {key: host.data.get(key) for key in KEYS}
    if tier is not None:
        data["tier"] = tier
    return host_settings(data, catalog, f"{source}: host {host.name}")


def resolve(host: Any, catalog: Catalog, settings: HostSettings) -> Resolved:
    """Read a connected host's facts, build its profile and check it against its tier."""
    facts = gather_facts(host, settings.model_dir)
    profile = build_profile(host.name, facts)
    return Resolved(catalog, settings, facts, profile, check_host(profile, catalog, settings.tier, settings.model))


def resolve_host(host: Any, tier: str | None = None, catalog_path: str | None = None,
                 source: str = "inventory") -> Resolved:
    """:func:`host_settings_of` then :func:`resolve` for one host (a deploy's or an operation's own host)."""
    catalog = load_catalog(catalog_path)
    return resolve(host, catalog, host_settings_of(host, catalog, source, tier))
