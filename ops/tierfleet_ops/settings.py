"""Typed, self-describing settings: each has a type, a default and a description in one place.

Backends declare their settings as :class:`Setting` tables; the policy loader validates a
profile's section against the table and reports the file, the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One policy setting. ``check`` turns raw YAML into the typed value or raises ValueError."""

    name: str
    allowed: str
    description: str
    check: Callable[[Any], Any]
    default: Any = None


def validate_section(raw: Any, table: dict[str, Setting], source: str, prefix: str) -> dict[str, Any]:
    """Validate one mapping against ``table``; unset settings take their default (``None``: leave alone)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"must be a mapping with keys {sorted(table)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in table:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown setting; allowed: {', '.join(sorted(table))}")
        st = table[key]
        try:
            out[key] = None if value is None else st.check(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(source, f"{prefix}.{key}", f"{exc}; allowed: {st.allowed}") from None
    for key, st in table.items():
        out.setdefault(key, st.default)
    return out


# --- small checkers -----------------------------------------------------------------------------

def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"{v!r} is not true/false")


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{v!r} is not an integer in {lo}..{hi}")
        return v
    return check


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise ValueError(f"{v!r} is not one of {', '.join(choices)}")
        return v
    return check


def fallback_list(choices: tuple[str, ...]) -> Callable[[Any], list[str]]:
    """A preference list like tuned's ``schedutil|ondemand|powersave`` (string or YAML list)."""
    def check(v: Any) -> list[str]:
        items = v.split("|") if isinstance(v, str) else v
        if not isinstance(items, list) or not items:
            raise ValueError(f"{v!r} is not a name or a list of names")
        for item in items:
            if item not in choices:
                raise ValueError(f"{item!r} is not one of {', '.join(choices)}")
        return list(items)
    return check


def name(v: Any) -> str:
    if not isinstance(v, str) or not v or not all(c.isalnum() or c in "_-." for c in v):
        raise ValueError(f"{v!r} is not a name of letters, digits, '_', '-', '.'")
    return v
