"""Small pure helpers shared by the fact parsers."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: CPU numbers the kernel can have (NR_CPUS is at most 8192 today): a list naming more is garbled
MAX_CPUS = 65536
#: a count, size or index as the tools print it: ASCII digits only (``int()`` also takes ``١٢``, ``１``,
#: ``1_0``, ``+1``), at most 19 of them (64 bits), so a hostile figure cannot become a number no hardware has
_INT_RE = re.compile(r"[0-9]{1,19}")
_FLOAT_RE = re.compile(r"[0-9]{1,19}(?:\.[0-9]{1,19})?")
_CPU_RANGE_RE = re.compile(r"(?P<lo>[0-9]{1,5})(?:-(?P<hi>[0-9]{1,5}))?")
_ASCII_SPACE = " \t\r\n\v\f"


def parse_cpu_list(text: str | None) -> list[int] | None:
    """Parse a kernel CPU list (``0-3,8,10-11``) into sorted CPU numbers; ``None`` when garbled.

    >>> parse_cpu_list("0-3,8,10-11")
    [0, 1, 2, 3, 8, 10, 11]
    >>> parse_cpu_list("") == []
    True
    >>> parse_cpu_list("0-x") is None, parse_cpu_list("٠-٣") is None, parse_cpu_list("0-65536") is None
    (True, True, True)
    """
    if text is None:
        return None
    text = text.strip(_ASCII_SPACE)
    if not text:
        return []
    cpus: set[int] = set()
    named = 0
    for part in text.split(","):
        match = _CPU_RANGE_RE.fullmatch(part)
        if not match:
            return None
        first = int(match["lo"])
        last = int(match["hi"]) if match["hi"] is not None else first
        named += last - first + 1
        if last < first or named > MAX_CPUS:  # the kernel names each CPU once
            return None
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """Format CPU numbers as a kernel CPU list.

    >>> format_cpu_list([0, 1, 2, 3, 8, 10, 11])
    '0-3,8,10-11'
    """
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_grep_h(lines: Iterable[str]) -> dict[str, str]:
    """Parse ``grep -s -H . FILES...`` output (``path:value`` per line) into ``{path: value}``.

    Multi-line files keep their first line. Lines without a ``:`` are ignored.

    >>> parse_grep_h(["/sys/a/online:0-3", "/sys/b:x:y", "junk"])
    {'/sys/a/online': '0-3', '/sys/b': 'x:y'}
    """
    values: dict[str, str] = {}
    for line in lines:
        path, sep, value = line.partition(":")
        if not sep or not path.startswith("/"):
            continue
        values.setdefault(path, value.strip())
    return values


def parse_key_values(lines: Iterable[str], sep: str = "=") -> dict[str, str]:
    """Parse ``key=value`` lines (first separator splits; surrounding quotes removed).

    >>> parse_key_values(['ID=debian', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', 'junk'])
    {'ID': 'debian', 'PRETTY_NAME': 'Debian GNU/Linux 12 (bookworm)'}
    """
    values: dict[str, str] = {}
    for line in lines:
        key, found, value = line.partition(sep)
        key = key.strip()
        if not found or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def to_int(text: str | None) -> int | None:
    """The count, size or index a tool printed, or ``None`` for missing / non-numeric values (``[N/A]``,
    ``[Not Supported]``).

    Only ASCII digits count, at most 19 (64 bits), no sign; surrounding ASCII white space is ignored.

    >>> to_int(" 15360 "), to_int("[N/A]"), to_int("²"), to_int("١٢"), to_int("1_0"), to_int("9" * 20), to_int("-1")
    (15360, None, None, None, None, None, None)
    """
    if not isinstance(text, str):
        return None
    text = text.strip(_ASCII_SPACE)
    return int(text) if _INT_RE.fullmatch(text) else None


def to_float(text: str | None) -> float | None:
    """The non-negative decimal a tool printed (``70.00``), or ``None``; never ``inf``, ``nan`` or an exponent.

    >>> to_float("70.00"), to_float("inf"), to_float("nan"), to_float("1e400"), to_float("７０")
    (70.0, None, None, None, None)
    """
    if not isinstance(text, str):
        return None
    text = text.strip(_ASCII_SPACE)
    return float(text) if _FLOAT_RE.fullmatch(text) else None
