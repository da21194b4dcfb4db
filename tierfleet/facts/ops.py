"""Facts about the ops daemon's install on a host."""

from __future__ import annotations

import math
import re
import shlex

from pyinfra.api import FactBase


class PythonVersion(FactBase[str | None]):
    """``major.minor`` of the host's ``python3`` (the ops daemon's venv is built from it), or None.

    Read from the name ``python3`` resolves to (``/usr/bin/python3.11``) without starting Python; only when
    that name carries no version (a wrapper, a shim) is Python asked.
    """

    def command(self) -> str:
        return ("p=$(readlink -f \"$(command -v python3)\" 2>/dev/null); case \"${p##*/}\" in "
                "python3.[0-9]*) echo \"${p##*/python}\";; "
                "*) python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null;; esac; true")

    def process(self, output: list[str]) -> str | None:
        value = output[0].strip() if output else ""
        return value if re.fullmatch(r"[0-9]{1,3}\.[0-9]{1,3}", value) else None


class OpsInstalled(FactBase[str | None]):
    """Version of ``tierfleet-ops`` installed in ``venv``, or None.

    Read from the package's installed metadata (``<venv>/lib/python3*/site-packages/tierfleet_ops-*.dist-info/
    METADATA``), printed as ``tierfleet-ops --version`` does, when the venv's Python and the program are there:
    starting the program itself costs the host about 0.15 s of CPU on every run.
    """

    def command(self, venv: str) -> str:
        v = shlex.quote(venv)
        return (f"v={v}; if [ -x \"$v/bin/tierfleet-ops\" ] && [ -x \"$v/bin/python3\" ]; then "
                "for m in \"$v\"/lib/python3*/site-packages/tierfleet_ops-*.dist-info/METADATA; do "
                "[ -f \"$m\" ] && sed -n '1,/^$/ s/^Version: *\\(.*\\)/tierfleet-ops, version \\1/p' \"$m\"; done; fi; true")

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


class OpsPolicyShards(FactBase[dict]):
    """The ``shards`` section of the policy the host's ops daemon runs (``/etc/tierfleet-ops/policy.yaml``).

    Returns ``{"shards": mapping}``, ``{"shards": None}`` when the policy has none (or there is no policy yet),
    or ``{"error": ...}`` when the file is not a readable policy: a caller that rewrites the policy must then
    stop rather than drop the host's shards.
    """

    #: the largest policy read (a policy is a few KiB; a host with many shards lists their files)
    MAX_CHARS = 1 << 20

    @staticmethod
    def default() -> dict:
        return {"shards": None}

    def command(self, path: str = "/etc/tierfleet-ops/policy.yaml") -> str:
        p = shlex.quote(path)
        return f"[ ! -e {p} ] || head -c {self.MAX_CHARS + 1} {p}"  # unreadable: the fact fails

    def process(self, output: list[str]) -> dict:
        import yaml

        text = "\n".join(output)
        if len(text) > self.MAX_CHARS:
            return {"error": f"the policy file is larger than {self.MAX_CHARS} bytes"}
        try:
            doc = yaml.safe_load(text) if text.strip() else {}
        except (yaml.YAMLError, RecursionError, ValueError):
            return {"error": "the policy file is not valid YAML"}
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            return {"error": "the policy file is not a mapping"}
        shards = doc.get("shards")
        if shards is not None and not isinstance(shards, dict):
            return {"error": "the policy's shards section is not a mapping"}
        if shards is not None and not _plain(shards):
            return {"error": "the policy's shards section holds values no policy has (dates, tags, "
                             "non-finite or huge numbers)"}
        return {"shards": shards}


def _plain(value: object, depth: int = 0) -> bool:
    """JSON-like data only: str keys, strings, bools, None, numbers below 2^53, lists, mappings (depth <= 8).

    >>> _plain({"a": [1, 2.5, None, "x"]}), _plain({"a": float("inf")}), _plain({1: 2})
    (True, False, False)
    """
    if depth > 8:
        return False
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value) and abs(value) < 2**53
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False
