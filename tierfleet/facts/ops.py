"""Facts about the ops daemon's install on a host."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase


class PythonVersion(FactBase[str | None]):
    """``major.minor`` of the host's ``python3`` (the ops daemon's venv is built from it), or None."""

    def command(self) -> str:
        return "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null; true"

    def process(self, output: list[str]) -> str | None:
        value = output[0].strip() if output else ""
        return value if re.fullmatch(r"[0-9]{1,3}\.[0-9]{1,3}", value) else None


class OpsInstalled(FactBase[str | None]):
    """Version of ``tierfleet-ops`` installed in ``venv`` (``<venv>/bin/tierfleet-ops --version``), or None."""

    def command(self, venv: str) -> str:
        return f"{shlex.quote(venv + '/bin/tierfleet-ops')} --version 2>/dev/null; true"

    def process(self, output: list[str]) -> str | None:
        match = re.search(r"version (\S+)", " ".join(output))
        return match.group(1) if match else None
