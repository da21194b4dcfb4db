"""``tierfleet report energy``: one self-contained HTML (or PNG) report of the fleet's power and energy."""

from __future__ import annotations

from pathlib import Path

import click

from tierfleet.cli._common import parse_data
from tierfleet.exceptions import ConfigError


@click.group()
def report() -> None:
    """Reports built from what the hosts recorded."""


@report.command()
@click.option("-i", "--inventory", required=True, help="pyinfra inventory file.")
@click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable).")
@click.option("--data", multiple=True, help="Override inventory data, KEY=VALUE (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("energy-report.html"),
              show_default=True, help="The report: .html (self-contained, figure embedded) or .png.")
@click.option("--records", default=20000, show_default=True, type=click.IntRange(10, 10_000_000),
              help="Most recent records read per host (a record every few seconds).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds each host gets to answer.")
def energy(inventory: str, limit, data, output: Path, records: int, timeout: float) -> None:
    """Power, energy and profile changes over time, per host and per profile, from the ops daemons' records."""
    from tierfleet.fleet import load_fleet
    from tierfleet.report import gather_records, render_html, render_png

    if output.suffix not in (".html", ".png"):
        raise ConfigError("--output", str(output), "allowed: a file name ending in .html or .png")
    state = load_fleet(inventory, limit=limit, data=parse_data(data) or None)
    series = gather_records(state, lines=records, timeout=timeout)
    if output.suffix == ".png":
        output.write_bytes(render_png(series))
    else:
        output.write_text(render_html(series))
    with_data = sum(1 for s in series if s.samples)
    click.echo(f"{output}: {with_data} of {len(series)} hosts had records"
               + "".join(f"\n  {s.host}: {s.error}" for s in series if s.error))
