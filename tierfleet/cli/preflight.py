"""``tierfleet preflight``: check every host of an inventory against its tier."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table
from rich.text import Text

from tierfleet.catalog import load_catalog
from tierfleet.cli._common import catalog_option, console, echo_json, json_option, parse_data
from tierfleet.fleet import HostResult, load_fleet, preflight_fleet

COLUMNS = ("platform", "GPU memory", "unified memory", "RAM", "cores", "disk")


def _cell(result: HostResult, name: str) -> Text:
    check = next((c for c in result.verdict.checks if c.name == name), None)
    if check is None:
        return Text("-", style="dim")
    style = {True: "green", False: "bold red", None: "yellow"}[check.ok]
    if name == "platform":
        return Text(_platform(result), style=style)
    if check.required == "n/a":
        return Text(check.actual, style=style)
    return Text(f"{check.actual} / {check.required}", style=style)


def _platform(result: HostResult) -> str:
    p = result.profile
    if p is None:
        return "-"
    if p.platform == "jetson" and p.jetson:
        return f"jetson {p.jetson.get('family') or p.jetson.get('soc') or '?'}, JetPack {p.jetson.get('jetpack') or '?'}"
    if p.platform == "gpu":
        return f"gpu {', '.join(sorted(set(p.gpu_names))) or 'no driver'}"
    return f"cpu {p.cpu_variant}"


def render(results: list[HostResult]) -> Table:
    table = Table(title="preflight: actual / required", show_lines=False)
    table.add_column("host", no_wrap=True)
    table.add_column("tier")
    used = [c for c in COLUMNS if any(ch.name == c for r in results for ch in r.verdict.checks)]
    for column in used:
        table.add_column(column)
    table.add_column("verdict")
    table.add_column("reason")
    for result in results:
        v = result.verdict
        tier = v.tier or "-"
        if v.requested == "auto" and v.tier:
            tier = f"auto -> {v.tier}"
        verdict = Text("fits", style="green") if v.fits else Text("REFUSED", style="bold red")
        reason = v.reason if not v.fits else "; ".join(v.warnings) or v.reason
        table.add_row(v.host, tier, *(_cell(result, c) for c in used), verdict, reason)
    return table


@click.command()
@click.option("-i", "--inventory", required=True, help="pyinfra inventory file, e.g. inventory/edge.py.")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--data", multiple=True, help="Override inventory data, KEY=VALUE (repeatable), e.g. tier=basic.")
@click.option("--connect-timeout", default=10, show_default=True, type=click.IntRange(1, 300), help="SSH connect timeout, seconds.")
@catalog_option
@json_option
@click.pass_context
def preflight(
    ctx: click.Context,
    inventory: str,
    limit: tuple[str, ...],
    data: tuple[str, ...],
    connect_timeout: int,
    catalog_path: str | None,
    as_json: bool,
) -> None:
    """Check every host against its tier; exit 1 when any host does not fit.

    Hosts with ``tier: auto`` (the default) are shown with the highest tier they fit.
    """
    catalog = load_catalog(catalog_path)
    state = load_fleet(inventory, limit=limit, data=parse_data(data) or None, connect_timeout=connect_timeout)
    results = preflight_fleet(state, catalog, source=inventory)
    ok = all(r.verdict.fits for r in results)
    if as_json:
        echo_json(
            {
                "inventory": inventory,
                "catalog": catalog.source,
                "ok": ok,
                "hosts": [
                    {**r.verdict.as_dict(), "profile": asdict(r.profile) if r.profile else None} for r in results
                ],
            }
        )
    else:
        console().print(render(results))
        failed = sum(not r.verdict.fits for r in results)
        click.echo(f"{len(results) - failed} of {len(results)} hosts fit their tier.")
    ctx.exit(0 if ok else 1)
