"""Turn pydantic validation errors into :class:`~tierfleet.exceptions.ConfigError` messages.

Every message names the file (or inventory host), the dotted key and what is allowed, e.g.::

    inventory/edge.py: host nano-01: runtime_mode: input should be 'native' or 'container' (got 'k8s')
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic

from tierfleet.exceptions import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


#: the longest ``(got ...)`` an error message quotes
MAX_QUOTED = 120


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


def _problem(error: dict[str, Any]) -> str:
    message = error["msg"]
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])  # a validator's own words, without pydantic's "Value error, "
    message = message[0].lower() + message[1:] if message else "invalid value"
    if error["type"] == "missing":
        return "required key is missing"
    if "input" in error and error["type"] not in ("extra_forbidden",):
        return f"{message} (got {_got(error['input'])})"
    return message


def validate(model: type[M], data: Any, source: str, error: type[ConfigError] = ConfigError) -> M:
    """Validate ``data`` against ``model``; raise ``error(source, key, problem)`` on the first problem.

    >>> class Tiny(pydantic.BaseModel):
    ...     cores: pydantic.PositiveInt
    >>> validate(Tiny, {"cores": 4}, "t.yaml").cores
    4
    >>> validate(Tiny, {"cores": "many"}, "t.yaml")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.ConfigError: t.yaml: cores: input should be a valid integer, unable to parse string as an integer (got 'many')
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        problem = _problem(first)
        field = model.model_fields.get(str(first["loc"][0])) if first["loc"] else None
        if first["type"] == "string_pattern_mismatch" and field is not None and field.description:
            problem = f"allowed: {field.description} (got {_got(first['input'])})"
        raise error(source, _key(first["loc"]), problem) from None
