"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

catalog_option = click.option(
    "--catalog",
    "catalog_path",
    type=click.Path(dir_okay=False),
    envvar="TIERFLEET_CATALOG",
    default=None,
    help="Tier catalog YAML (default: the packaged one; env TIERFLEET_CATALOG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")


def console() -> Console:
    """A console on stdout that keeps tables readable in narrow terminals and pipes."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def parse_data(values: tuple[str, ...]) -> dict[str, Any]:
    """Parse ``--data key=value`` pairs (values are strings, like pyinfra's own ``--data``)."""
    data: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--data")
        data[key] = value
    return data
