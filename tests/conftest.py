from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def catalog():
    from tierfleet.catalog import load_catalog

    return load_catalog()

# pyinfra deploy files used by the lab tests run under pyinfra, not as test modules
collect_ignore_glob = ["lab/deploys/*.py"]


@pytest.fixture(autouse=True)
def _library_loggers():
    """The CLI quiets pyinfra's and paramiko's loggers (level, propagation, a handler) for the process; a CLI
    test run in-process must not leave later tests' ``caplog`` deaf to them."""
    import logging

    saved = {name: (lg.level, lg.propagate, list(lg.handlers))
             for name in ("pyinfra", "paramiko") for lg in [logging.getLogger(name)]}
    yield
    for name, (level, propagate, handlers) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers
