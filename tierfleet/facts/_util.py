"""Small pure helpers shared by the fact parsers."""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpu_list(text: str | None) -> list[int] | None:
    """Parse a kernel CPU list (``0-3,8,10-11``) into sorted CPU numbers; ``None`` when garbled.

    >>> parse_cpu_list("0-3,8,10-11")
    [0, 1, 2, 3, 8, 10, 11]
    >>> parse_cpu_list("") == []
    True
    >>> parse_cpu_list("0-x") is None
    True
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return []
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, sep, hi = part.partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first or last - first > 65536:
                return None
            cpus.update(range(first, last + 1))
    except ValueError:
        return None
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
    """``int(text)`` or ``None`` for missing / non-numeric values (``[N/A]``, ``[Not Supported]``)."""
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def to_float(text: str | None) -> float | None:
    """``float(text)`` or ``None`` for missing / non-numeric values."""
    try:
        return float(str(text).strip())
    except (TypeError, ValueError):
        return None
