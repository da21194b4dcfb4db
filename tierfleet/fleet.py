"""Run tierfleet's facts over a pyinfra inventory through pyinfra's Python API.

>>> from tierfleet.catalog import load_catalog
>>> [r.verdict.host for r in preflight_fleet(load_fleet("@local"), load_catalog(), "@local")]
['@local']
"""

from __future__ import annotations

import os
from fnmatch import fnmatch
from dataclasses import dataclass
from typing import Any

import gevent
from pyinfra.api import Config, State
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.context import ctx_host, ctx_state

from tierfleet.catalog import Catalog
from tierfleet.exceptions import InventoryError
from tierfleet.preflight import Verdict, unreachable
from tierfleet.profile import HostProfile
from tierfleet.resolve import host_settings_of, resolve
from tierfleet.settings import HostSettings


@dataclass(frozen=True)
class HostResult:
    """Preflight result for one host: its verdict and, when it was reachable, its profile."""

    verdict: Verdict
    profile: HostProfile | None


def load_fleet(
    path: str, limit: tuple[str, ...] = (), data: dict[str, Any] | None = None, connect_timeout: int = 10
) -> State:
    """Load a pyinfra inventory file (with its ``group_data/``) the way the ``pyinfra`` CLI does.

    Returns an initialised pyinfra ``State``; ``limit`` keeps only the hosts or groups matching its names,
    comma lists or glob patterns (as pyinfra's ``--limit``).
    """
    from pyinfra_cli.exceptions import CliError
    from pyinfra_cli.inventory import make_inventory

    if not os.path.exists(path) and "@" not in path:
        raise InventoryError(path, "(file)", "no such inventory file")
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    with ctx_state.use(state):
        try:
            inventory = make_inventory(path, override_data=data, cwd=state.cwd)
        except (CliError, PyinfraError, SyntaxError, TypeError, ValueError, NameError) as exc:
            raise InventoryError(path, "(file)", f"cannot load inventory: {exc}") from None
    hosts = None
    if limit:
        patterns = [p for item in limit for p in item.split(",") if p]
        hosts = [
            h for h in inventory
            if any(fnmatch(h.name, p) or any(fnmatch(g, p) for g in h.groups) for p in patterns)
        ]
        if not hosts:
            raise InventoryError(path, "--limit", f"no host or group named {', '.join(limit)}")
    state.init(inventory, Config(CONNECT_TIMEOUT=connect_timeout), initial_limit=hosts)
    state.print_fact_info = False
    return state


def _hosts(state: State) -> list[Any]:
    return [host for host in state.inventory if state.is_host_in_limit(host)]


def settings_for(state: State, catalog: Catalog, source: str) -> dict[str, HostSettings]:
    """Validate every host's tierfleet settings before anything connects. Raises on the first bad host."""
    return {host.name: host_settings_of(host, catalog, source) for host in _hosts(state)}


def _probe(state: State, host: Any, settings: HostSettings, catalog: Catalog) -> HostResult:
    with ctx_state.use(state), ctx_host.use(host):
        try:
            host.connect(show_errors=False, raise_exceptions=True)
            state.activate_host(host)
            resolved = resolve(host, catalog, settings)
        except ConnectError as exc:
            return HostResult(unreachable(host.name, settings.tier, str(exc.args[0] if exc.args else exc)), None)
        except Exception as exc:  # noqa: BLE001 - one host's failure must not lose the others' results
            # pyinfra marks the host failed first, then raises "No hosts remaining!" once none is left
            if host not in state.failed_hosts:
                return HostResult(unreachable(host.name, settings.tier, f"{type(exc).__name__}: {exc}"), None)
    if host in state.failed_hosts:
        return HostResult(unreachable(host.name, settings.tier, "commands failed while reading facts"), None)
    return HostResult(resolved.verdict, resolved.profile)


def preflight_fleet(state: State, catalog: Catalog, source: str = "inventory") -> list[HostResult]:
    """Connect to every host in parallel, read its facts and check it against its tier.

    Hosts that cannot be reached get an ``unreachable`` verdict; the others are not held up by them.
    """
    settings = settings_for(state, catalog, source)
    hosts = _hosts(state)
    greenlets = [state.pool.spawn(_probe, state, host, settings[host.name], catalog) for host in hosts]
    gevent.joinall(greenlets)
    results = [greenlet.get() for greenlet in greenlets]
    for host in hosts:
        if host.connected:
            try:
                host.disconnect()
            except Exception:  # noqa: BLE001 - a failed goodbye must not hide the results
                pass
    return results
