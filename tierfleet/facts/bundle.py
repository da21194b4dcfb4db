"""Several facts in one SSH round trip: each fact's own command in a subshell after a marker line, cut back
apart and parsed by each fact's own ``process()``.

A no-op tier deploy reads about 20 facts before its first operation (the host's profile, the artifacts'
manifests, where ``current`` points); one round trip each cost every host a process tree and the controller
an SSH channel and pyinfra's per-fact bookkeeping apiece. :func:`read` gives the same values in one.

The marker carries a random nonce made per read, so no fact's output (a manifest from the store, an error
message) can start a part of its own.
"""

from __future__ import annotations

import secrets
import shlex
from typing import Any

from pyinfra.api import FactBase

#: a wanted fact: (fact class, positional arguments, keyword arguments)
Wanted = tuple[type[FactBase], tuple, dict]


def _command_of(cls: type[FactBase], args: tuple, kwargs: dict) -> str:
    return cls().command(*args, **kwargs)


class Bundle(FactBase[dict[str, list[str]]]):
    """``{key: stdout lines}`` of several commands run in one script (``parts``: ``((key, command), ...)``).

    Each command runs in its own subshell with stderr dropped, as a fact's would have; the script exits 0.
    """

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {}

    def command(self, parts: tuple[tuple[str, str], ...]) -> str:
        self.mark = f"##tierfleet-part-{secrets.token_hex(8)}##"
        lines = [f"printf '%s\\n' {shlex.quote(self.mark + ' ' + key)}; ( {command}\n) 2>/dev/null"
                 for key, command in parts]
        return "\n".join([*lines, "true"])

    def process(self, output: list[str]) -> dict[str, list[str]]:
        mark = getattr(self, "mark", None)
        parts: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output:
            if mark and line.startswith(mark + " "):
                current = parts.setdefault(line[len(mark) + 1:].strip(), [])
            elif current is not None:
                current.append(line)
        return parts


def read(host: Any, wanted: dict[str, Wanted]) -> dict[str, Any]:
    """Every wanted fact of a connected pyinfra ``host`` in one round trip: ``{key: value}``.

    A value is the fact's ``process(lines)``, or its ``default()`` when its command printed nothing (as
    ``host.get_fact`` gives).
    """
    parts = tuple((key, _command_of(cls, args, kwargs)) for key, (cls, args, kwargs) in wanted.items())
    raw = host.get_fact(Bundle, parts=parts)
    values: dict[str, Any] = {}
    for key, (cls, _, _) in wanted.items():
        lines = raw.get(key) or []
        fact = cls()
        values[key] = fact.process(lines) if lines else fact.default()
    return values
