"""``tierfleet lab ...``: the local lab fleet (see :mod:`tierfleet.lab`)."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """Throw-away systemd hosts over SSH, dressed as Jetsons, CPU servers and GPU nodes."""
