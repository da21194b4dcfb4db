"""Artifact-store facts: a manifest as the host sees it (fetched by the host, so fleet mirrors work).

With a pinned key (``artifact_key``) the host also fetches ``manifest.json.sig`` and checks it with
``gpgv`` against that key before it prints the manifest: an unsigned, badly signed or tampered manifest
never reaches the deploy (:mod:`tierfleet.artifacts.signing`).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from tierfleet.artifacts.manifest import manifest_from_dict, parse_manifest
from tierfleet.artifacts.signing import SIG_SUFFIX
from tierfleet.exceptions import ConfigError

FAILED = "##tierfleet-fetch-failed##"
SIGNED = "##tierfleet-signed##"
_FPR = re.compile(r"[0-9A-F]{40,64}")
M, S = '"$t/m"', '"$t/s"'  # the fetched manifest and signature, in the command's temporary directory


def manifest_url(store: str, name: str, version: str) -> str:
    """Where a manifest lives in an artifact store (URL or absolute directory).

    >>> manifest_url("http://artifacts.lab:8080/artifacts/", "llama-server", "0.3.36+linux-x86_64-cpu-v3")
    'http://artifacts.lab:8080/artifacts/llama-server/0.3.36+linux-x86_64-cpu-v3/manifest.json'
    """
    return f"{store.rstrip('/')}/{name}/{version}/manifest.json"


def _fetch(src: str, dest: str) -> str:
    """Shell that copies ``src`` (URL or path, quoted here) to ``dest`` (a shell word, e.g. ``"$t/m"``)."""
    q, d = shlex.quote(src), dest
    if re.match(r"^https?://", src):
        return f"curl -fsSL --max-time 30 -o {d} {q}"
    return f"cp -- {q} {d}"


class StoreManifest(FactBase[dict[str, Any]]):
    """The manifest at ``url`` (http(s) via curl on the host, or a local path), as a dict, or ``{"error": ...}``.

    + url: the manifest's URL or absolute path
    + key: the pinned signing key, dearmoured and base64-encoded
      (:func:`tierfleet.artifacts.signing.keyring_b64`); with it the manifest is returned only when
      ``<url>.sig`` verifies (``gpgv`` on the host), with ``signed_by`` set to the key's fingerprint

    Same as ``curl -fsSL URL`` (and ``gpgv --keyring KEY URL.sig URL``) on the host; the parser validates
    it with :func:`tierfleet.artifacts.manifest.parse_manifest`.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"error": "no output"}

    def command(self, url: str, key: str | None = None) -> str:
        fail = f"echo '{FAILED}'; exit 0"
        script = [
            "t=$(mktemp -d) || { echo 'cannot make a temporary directory'; " + fail + "; }",
            "trap 'rm -rf \"$t\"' EXIT",
            f"if ! {_fetch(url, M)} 2>\"$t/e\"; then cat \"$t/e\"; {fail}; fi",
        ]
        if key:
            sig = url + SIG_SUFFIX
            script += [
                f"command -v gpgv >/dev/null || {{ echo 'gpgv is missing: install the gpgv package'; {fail}; }}",
                f"printf '%s' {shlex.quote(key)} | base64 -d > \"$t/k.gpg\" || {{ echo 'cannot decode the key'; {fail}; }}",
                f"if ! {_fetch(sig, S)} 2>\"$t/e\"; then "
                f"echo {shlex.quote(f'unsigned: no signature at {sig}:')} \"$(cat \"$t/e\")\"; {fail}; fi",
                "if ! gpgv --homedir \"$t\" --status-fd 3 --keyring \"$t/k.gpg\" \"$t/s\" \"$t/m\" "
                "3>\"$t/st\" >\"$t/e\" 2>&1; then "
                f"echo {shlex.quote(f'bad signature: {sig} does not verify with the pinned artifact_key:')} "
                f"\"$(grep -v -e '^ *$' -e 'Please remember' \"$t/e\" | tail -n 2 | tr '\\n' ' ')\"; {fail}; fi",
            ]
        script.append("cat \"$t/m\"; echo")
        if key:
            script.append(f"printf '{SIGNED} %s\\n' \"$(awk '$2 == \"VALIDSIG\" {{print $3; exit}}' \"$t/st\")\"")
        return "( " + "\n".join(script) + "\n)"

    def process(self, output: list[str]) -> dict[str, Any]:
        if output and output[-1].strip() == FAILED:
            return {"error": " ".join(line.strip() for line in output[:-1] if line.strip()) or "fetch failed"}
        signed_by = None
        if output and output[-1].startswith(SIGNED):
            fpr = output[-1][len(SIGNED):].strip()
            if not _FPR.fullmatch(fpr):
                return {"error": f"gpgv reported no valid signature ({fpr or 'no fingerprint'})"}
            signed_by, output = fpr, output[:-1]
        try:
            manifest = parse_manifest("\n".join(output), "manifest")
        except ConfigError as exc:
            return {"error": str(exc)}
        value = manifest.to_dict()
        if signed_by:
            value["signed_by"] = signed_by
        return value


def manifest_of(value: dict[str, Any]):
    """The :class:`~tierfleet.artifacts.manifest.Manifest` of a :class:`StoreManifest` value."""
    return manifest_from_dict({k: v for k, v in value.items() if k != "signed_by"}, "manifest")

