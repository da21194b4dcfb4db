"""``tierfleet status``: one table for the fleet, gathered in parallel over SSH."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from tierfleet.catalog import load_catalog
from tierfleet.cli._common import catalog_option, console, echo_json, json_option, parse_data
from tierfleet.fleet import load_fleet
from tierfleet.status import HostStatus, gather_status


def _rollout(st: HostStatus) -> str:
    r = st.last_rollout
    if not r:
        return "-"
    return f"{r.get('kind', 'rollout')} {r.get('result', '?')} {str(r.get('finished', ''))[:16]}".strip()


def render(statuses: list[HostStatus]) -> Table:
    table = Table(title="fleet status")
    for column in ("host", "platform", "tier", "model", "runtime", "health", "profile", "policy", "power",
                   "energy", "shards", "last rollout", "notes"):
        table.add_column(column, no_wrap=column in ("host", "model"))
    for st in statuses:
        if not st.reachable:
            table.add_row(st.host, *["-"] * 4, Text("UNREACHABLE", style="bold red"), *["-"] * 6,
                          Text(st.error or "", style="red"))
            continue
        health = Text(st.runtime_health or "?", style="green" if st.runtime_health == "ok" else "bold red")
        loaded = [s for s in st.shards if s.get("state") == "loaded"]
        table.add_row(
            st.host, st.platform or "?", st.tier or "-", st.model_release or "-", st.runtime_release or "-", health,
            st.profile or "-", st.policy or "-", f"{st.power_w:.1f} W" if st.power_w is not None else "-",
            f"{st.energy_j / 3600:.2f} Wh" if st.energy_j is not None else "-",
            f"{len(loaded)}/{len(st.shards)}" if st.shards else "-", _rollout(st), "; ".join(st.notes),
        )
    return table


@click.command()
@click.option("-i", "--inventory", required=True, help="pyinfra inventory file, e.g. inventory/edge.py.")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--data", multiple=True, help="Override inventory data, KEY=VALUE (repeatable).")
@click.option("--timeout", default=20.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds each host gets to connect and answer.")
@catalog_option
@json_option
@click.pass_context
def status(ctx: click.Context, inventory: str, limit: tuple[str, ...], data: tuple[str, ...], timeout: float,
           catalog_path: str | None, as_json: bool) -> None:
    """Show every host's platform, tier, versions, runtime health, power profile, policy, power and energy.

    Exit 0 when every host answered and its runtime is healthy, 1 otherwise.
    """
    catalog = load_catalog(catalog_path)
    state = load_fleet(inventory, limit=limit, data=parse_data(data) or None, connect_timeout=int(timeout))
    statuses = gather_status(state, catalog, inventory, timeout=timeout)
    ok = all(st.healthy for st in statuses)
    if as_json:
        echo_json({"inventory": inventory, "ok": ok, "hosts": [st.as_dict() for st in statuses]})
    else:
        console().print(render(statuses))
        click.echo(f"{sum(st.healthy for st in statuses)} of {len(statuses)} hosts healthy.")
    ctx.exit(0 if ok else 1)
