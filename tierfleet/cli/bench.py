"""``tierfleet bench``: the tier deploy against Ansible, by fleet size, and the older rows (``bench/harness.py``)."""

from __future__ import annotations

import sys

import click

from tierfleet.lab.state import repo_root


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Benchmark tier_basic against Ansible on lab hosts (root); options as ``bench/harness.py -h``."""
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.harness import main

    raise SystemExit(main(list(args)))
