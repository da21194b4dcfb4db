"""Run pyinfra from Python and read what it did: the one runner of the tests and the benchmarks.

- :func:`run_local`: one operation on pyinfra's ``@local`` connector through its API (a fresh
  state each time, so facts are read again), as :class:`OpRun`;
- :func:`run_pyinfra`: the ``pyinfra`` command next to this Python (e.g. ``-y inventory/lab.py
  deploys/tier_basic.py``) from the repository root under an outer ``timeout``, output merged;
- :func:`grand_total`: the "Grand total" row of pyinfra's results table as numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tierfleet.lab.state import repo_root


@dataclass
class OpRun:
    """What one operation did on the local host."""

    will_change: bool
    failed: bool
    stdout: str
    stderr: str


def run_local(op, **kwargs) -> OpRun:
    """Run one operation on ``@local`` through pyinfra's API (fresh state: facts are re-read)."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operation import add_op
    from pyinfra.api.operations import run_ops

    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")
    try:
        meta = add_op(state, op, **kwargs)[host]
        will_change = bool(meta._maybe_is_change)
        try:
            run_ops(state)
        except PyinfraError as exc:
            if str(exc) != "No hosts remaining!":  # what pyinfra raises once every host failed (here: the only one)
                raise
        failed = host in state.failed_hosts
        return OpRun(will_change, failed, meta.stdout if meta.is_complete() else "",
                     meta.stderr if meta.is_complete() else "")
    finally:
        disconnect_all(state)


def run_pyinfra(*args: str, lab_dir: Path | None = None, timeout: float = 300,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``pyinfra ARGS`` from the repository root; stdout and stderr merged into ``.stdout``.

    ``lab_dir`` sets ``TIERFLEET_LAB_DIR`` (which lab ``inventory/lab.py`` reads); past ``timeout``
    seconds pyinfra is ended and the return code is 124.
    """
    run_env = dict(env if env is not None else os.environ)
    if lab_dir is not None:
        run_env["TIERFLEET_LAB_DIR"] = str(lab_dir)
    exe = str(Path(sys.executable).with_name("pyinfra"))
    return subprocess.run(["timeout", str(int(timeout)), exe, *args], cwd=repo_root(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=run_env)


def grand_total(output: str) -> dict[str, int]:
    """The "Grand total" row of pyinfra's results table as numbers (ValueError when there is none).

    >>> grand_total("Grand total      3        -       1           2")
    {'hosts': 3, 'success': 0, 'error': 1, 'no_change': 2}
    """
    line = next((ln for ln in output.splitlines() if ln.strip().startswith("Grand total")), None)
    if line is None:
        raise ValueError("pyinfra printed no results table (no 'Grand total' row)")
    cells = [0 if cell == "-" else int(cell) for cell in line.split()[2:6]]
    return dict(zip(("hosts", "success", "error", "no_change"), cells))
