"""Typed, self-describing settings: each has a type, a default and a description in one place.

Backends (and the policy's own sections) declare their settings as :class:`Setting` tables;
:func:`section_model` turns a table into a pydantic model (unknown keys forbidden, the check
run as a validator, the description and the allowed values in the field's schema), and
:func:`config_error` turns pydantic's errors into :class:`~tierfleet_ops.errors.ConfigError`
that names the file, the key and what is allowed.

An explicit ``null`` is never a value: ``tick_s: null`` or an empty ``on_stop:`` is an error
that names the key and says what leaving the key out would give, rather than a silent default
or a value no code expects.

>>> from tierfleet_ops.settings import Setting, int_range, validate_section
>>> table = {"n": Setting("n", "integer 0..9", "a digit", int_range(0, 9), 3, int)}
>>> validate_section({}, table, "f.yaml", "sec")
{'n': 3}
>>> validate_section({"n": None}, table, "f.yaml", "sec")
Traceback (most recent call last):
...
tierfleet_ops.errors.ConfigError: f.yaml: sec.n: null is not a value; leave the key out for the default (3); allowed: integer 0..9
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One policy setting. ``check`` turns raw YAML into the typed value or raises ValueError;
    ``type`` is the Python type of the checked value."""

    name: str
    allowed: str
    description: str
    check: Callable[[Any], Any]
    default: Any = None
    type: Any = Any


class Section(BaseModel):
    """Base of every settings model: unknown keys are errors, values are not coerced twice."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def not_null(what: str, default: Any = None) -> Callable[[Any], Any]:
    """A before-validator that refuses an explicit ``null`` and says what leaving it out gives."""
    left_out = "leave the key out to leave it alone" if default is None else \
        f"leave the key out for the default ({default})"

    def check(v: Any) -> Any:
        if v is None:
            raise ValueError(f"null is not a value; {left_out}; allowed: {what}")
        return v
    return check


def checked(check: Callable[[Any], Any], allowed: str, default: Any = None) -> BeforeValidator:
    """A before-validator for an annotation: refuse null (naming ``default``), run ``check``, and
    add what is allowed to its message."""
    refuse_null = not_null(allowed, default)

    def run(v: Any) -> Any:
        refuse_null(v)
        try:
            return check(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{exc}; allowed: {allowed}") from None
    return BeforeValidator(run)


def setting_field(st: Setting) -> tuple[Any, Any]:
    """The ``(annotation, FieldInfo)`` pair of one setting, for :func:`pydantic.create_model`."""
    ann = Annotated[Optional[st.type], checked(st.check, st.allowed, st.default)]  # noqa: UP007 - 3.10 runtime
    return ann, Field(default=st.default, description=st.description, json_schema_extra={"allowed": st.allowed})


_MODELS: dict[tuple[str, int], type[Section]] = {}


def section_model(name: str, table: dict[str, Setting]) -> type[Section]:
    """A pydantic model with one optional, checked field per setting of ``table`` (built once per table)."""
    key = (name, id(table))
    if key not in _MODELS:
        fields = {k: setting_field(st) for k, st in table.items()}
        _MODELS[key] = create_model(name, __base__=Section, **fields)  # type: ignore[call-overload]
    return _MODELS[key]


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def config_error(exc: ValidationError, source: str, prefix: str = "",
                 allowed_keys: Callable[[tuple[Any, ...]], tuple[str, str]] | None = None) -> ConfigError:
    """The first of pydantic's errors as a :class:`ConfigError` (file, dotted key, what is allowed).

    ``allowed_keys(parent_loc)`` names, for an unknown key, what kind of key it is and which are
    allowed (``("setting", "boost, epp")``).
    """
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if p != "[key]")
    key = ".".join(p for p in (prefix, _path(loc)) if p) or "<document>"
    kind = err["type"]
    if kind == "value_error":
        problem = str(err.get("ctx", {}).get("error", err["msg"]))
    elif kind == "extra_forbidden":
        what, names = allowed_keys(loc[:-1]) if allowed_keys else ("key", "")
        problem = f"unknown {what}; allowed: {names}"
    elif kind == "missing":
        problem = "required"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        names = allowed_keys(loc)[1] if allowed_keys else ""
        problem = f"{err.get('input')!r} is not a mapping" + (f" with keys {names}" if names else "")
    else:
        problem = f"{err.get('input')!r}: {err['msg']}"
    return ConfigError(source, key, problem)


def validate_section(raw: Any, table: dict[str, Setting], source: str, prefix: str) -> dict[str, Any]:
    """Validate one mapping against ``table``; unset settings take their default (``None``: leave alone)."""
    model = section_model(prefix.rsplit(".", 1)[-1] or "section", table)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, f"must be a mapping with keys {sorted(table)}")
    try:
        return model.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise config_error(exc, source, prefix,
                           lambda _loc: ("setting", ", ".join(sorted(table)))) from None


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
            if not isinstance(item, str) or item not in choices:
                raise ValueError(f"{item!r} is not one of {', '.join(choices)}")
        return list(items)
    return check


def name(v: Any) -> str:
    if not isinstance(v, str) or not v or not all((c.isascii() and c.isalnum()) or c in "_-." for c in v):
        raise ValueError(f"{v!r} is not a name of letters, digits, '_', '-', '.'")
    return v
