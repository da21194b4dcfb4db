"""systemd's own analyzer run on rendered unit files (no running systemd needed).

``systemd-analyze security --offline=true FILE`` (systemd >= 250) scores a unit file's sandbox from 0 (tight)
to 10 (exposed) without asking PID 1. Debian and Ubuntu ship it in the ``systemd`` package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ANALYZE = shutil.which("systemd-analyze")
OVERALL = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def analyzer_version() -> int | None:
    """systemd-analyze's major version, or None when it is not installed."""
    if ANALYZE is None:
        return None
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout
    m = re.match(r"systemd (\d+)", out)
    return int(m.group(1)) if m else None


def need_offline_analyzer() -> None:
    """Skip, naming what is missing, where systemd-analyze cannot score a unit file offline."""
    version = analyzer_version()
    if version is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    if version < 250:
        pytest.skip(f"systemd-analyze {version} has no `security --offline` (needs systemd >= 250)")


def exposure(unit_text: str, name: str, directory: Path) -> tuple[float, str]:
    """(overall exposure, the analyzer's table) of a unit file's text, saved as ``directory/name``."""
    path = directory / name
    path.write_text(unit_text)
    proc = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=60)
    m = OVERALL.search(proc.stdout)
    assert m, f"systemd-analyze security gave no overall level (rc {proc.returncode}): {proc.stdout}{proc.stderr}"
    return float(m.group(1)), proc.stdout


def exposed(table: str) -> str:
    """The analyzer's lines that still cost points (marked ✗), for an assertion message."""
    return "\n".join(line for line in table.splitlines() if line.startswith("\u2717"))
