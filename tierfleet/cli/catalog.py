"""``tierfleet tiers``: show the tier catalog."""

from __future__ import annotations

import click
from rich.table import Table

from tierfleet.catalog import load_catalog
from tierfleet.cli._common import catalog_option, console, echo_json, json_option


@click.command()
@catalog_option
@json_option
def tiers(catalog_path: str | None, as_json: bool) -> None:
    """Show the model tiers and what each needs from a host."""
    catalog = load_catalog(catalog_path)
    if as_json:
        echo_json({"source": catalog.source, "tiers": [t.model_dump() for t in catalog.ordered()]})
        return
    table = Table(title=f"tiers ({catalog.source})")
    for column in ("tier", "precision", "GPU memory", "cores", "RAM", "unified", "disk", "model", "typical device"):
        table.add_column(column)
    for tier in catalog.ordered():
        r = tier.requires
        table.add_row(
            tier.name,
            tier.precision,
            f"{r.gpu_memory_gb:g} GB",
            str(r.cores),
            f"{r.ram_gb:g} GB",
            f"{r.unified_memory_gb:g} GB",
            f"{r.disk_gb:g} GB",
            f"{tier.model.name} {tier.model.quant} ({tier.model.size_gb:g} GB)",
            tier.typical_device,
        )
    console().print(table)
