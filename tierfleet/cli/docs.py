"""``tierfleet docs reference``: the reference pages generated from the code (:mod:`tierfleet.reference`)."""

from __future__ import annotations

from pathlib import Path

import click

from tierfleet.lab.state import repo_root


@click.group()
def docs() -> None:
    """Documentation generated from the code's own declarations."""


@docs.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a page differs from what the code declares.")
def reference(directory: Path | None, check: bool) -> int:
    """Write the inventory and policy references into DIRECTORY (default: docs/reference of the checkout)."""
    from tierfleet import reference as ref

    directory = directory or repo_root() / "docs" / "reference"
    if check:
        stale = ref.stale(directory)
        for path in stale:
            click.echo(f"{path}: out of date; run `tierfleet docs reference`")
        return 1 if stale else 0
    for path in ref.write(directory):
        click.echo(f"wrote {path}")
    return 0
