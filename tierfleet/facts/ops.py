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


class OpsStatus(FactBase[dict]):
    """The running ops daemon's profile and policy (``tierfleet-ops status --json``), or ``{"error": ...}``.

    Returns ``{"profile", "policy_hash", "policy_error"}``; garbled or missing output is an error, never raised.
    """

    @staticmethod
    def default() -> dict:
        return {"error": "no answer"}

    def command(self, cli: str) -> str:
        return f"{shlex.quote(cli)} status --json 2>&1 || echo '{{\"error\": \"the ops daemon did not answer\"}}'"

    def process(self, output: list[str]) -> dict:
        import json

        try:
            doc = json.loads("\n".join(output))
        except (ValueError, RecursionError):
            return {"error": "status is not JSON"}
        if not isinstance(doc, dict) or "error" in doc:
            err = doc.get("error") if isinstance(doc, dict) else None
            return {"error": err if isinstance(err, str) else "no status"}
        policy = doc.get("policy") if isinstance(doc.get("policy"), dict) else {}
        text = lambda v: v if isinstance(v, str) else None  # noqa: E731
        return {"profile": text(doc.get("profile")), "policy_hash": text(policy.get("hash")),
                "policy_error": text(policy.get("error"))}
