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
