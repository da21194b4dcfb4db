"""The ``tierfleet`` command: a thin click layer over the library.

Subcommands live one noun per module (``preflight``, ``lab``, ...) and are added in
:func:`make_cli`. Library errors are mapped to messages and exit codes only in :func:`main`.
"""

from __future__ import annotations

import logging
import sys

import click

from tierfleet import __version__
from tierfleet.exceptions import TierfleetError


def _logging(verbose: int) -> None:
    """Quiet by default: connection errors belong in the verdicts, not as paramiko tracebacks on stderr."""
    level = {0: logging.CRITICAL, 1: logging.WARNING}.get(verbose, logging.DEBUG)
    for name in ("pyinfra", "paramiko"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            logger.addHandler(handler)


def make_cli() -> click.Group:
    """Build the click group with every subcommand attached."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="tierfleet")
    @click.option("-v", "--verbose", count=True, help="Show pyinfra and SSH logs (-vv: debug).")
    def cli(verbose: int) -> None:
        """Provision and operate quantized DeepSeek-R1 distilled LLMs on fleets."""
        _logging(verbose)

    from tierfleet.cli import artifacts, bench, catalog, docs, lab, preflight, report, rollout, status, store

    cli.add_command(preflight.preflight)
    cli.add_command(catalog.tiers)
    cli.add_command(lab.lab)
    cli.add_command(store.store)
    cli.add_command(status.status)
    cli.add_command(rollout.upgrade)
    cli.add_command(rollout.policy)
    cli.add_command(report.report)
    cli.add_command(artifacts.artifacts)
    cli.add_command(bench.bench)
    cli.add_command(docs.docs)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn library errors into one-line messages and exit codes."""
    cli = make_cli()
    try:
        rv = cli.main(args=argv, prog_name="tierfleet", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TierfleetError as exc:
        click.echo(f"tierfleet: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
