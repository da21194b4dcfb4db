"""Artifact-store facts: a manifest as the host sees it (fetched by the host, so fleet mirrors work)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from tierfleet.artifacts.manifest import manifest_from_dict, parse_manifest
from tierfleet.exceptions import ConfigError

FAILED = "##tierfleet-fetch-failed##"


def manifest_url(store: str, name: str, version: str) -> str:
    """Where a manifest lives in an artifact store (URL or absolute directory).

    >>> manifest_url("http://artifacts.lab:8080/artifacts/", "llama-server", "0.3.36+linux-x86_64-cpu-v3")
    'http://artifacts.lab:8080/artifacts/llama-server/0.3.36+linux-x86_64-cpu-v3/manifest.json'
    """
    return f"{store.rstrip('/')}/{name}/{version}/manifest.json"


class StoreManifest(FactBase[dict[str, Any]]):
    """The manifest at ``url`` (http(s) via curl on the host, or a local path), as a dict, or ``{"error": ...}``.

    Same as ``curl -fsSL URL`` on the host; the parser validates it with
    :func:`tierfleet.artifacts.manifest.parse_manifest`.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"error": "no output"}

    def command(self, url: str) -> str:
        quoted = shlex.quote(url)
        if re.match(r"^https?://", url):
            fetch = f"curl -fsSL --max-time 30 {quoted} 2>&1"
        else:
            fetch = f"cat -- {quoted} 2>&1"
        return f"{fetch} || echo '{FAILED}'; true"

    def process(self, output: list[str]) -> dict[str, Any]:
        if output and output[-1].strip() == FAILED:
            return {"error": " ".join(line.strip() for line in output[:-1]) or "fetch failed"}
        try:
            manifest = parse_manifest("\n".join(output), "manifest")
        except ConfigError as exc:
            return {"error": str(exc)}
        return manifest.to_dict()


def manifest_of(value: dict[str, Any]):
    """The :class:`~tierfleet.artifacts.manifest.Manifest` of a :class:`StoreManifest` value."""
    return manifest_from_dict(value, "manifest")
