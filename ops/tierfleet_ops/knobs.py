"""Knobs: one named value a backend can read and write, and the changes a policy asks for.

Every backend exposes its settings as :class:`Knob` objects with the same small interface, so
the save -> apply -> verify -> restore lifecycle (:mod:`tierfleet_ops.apply`) is written once.
A knob whose file is missing, unreadable or not supported reads as ``None``: "unavailable".
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from .sysfs import Sysfs


class Knob:
    """A readable, writable setting. Values are strings as the kernel or tool prints them."""

    def __init__(self, name: str, backend: str, description: str,
                 read: Callable[[], str | None], write: Callable[[str], None],
                 equal: Callable[[str, str], bool] | None = None) -> None:
        self.name = name
        self.backend = backend
        self.description = description
        self._read = read
        self._write = write
        self._equal = equal or (lambda want, have: want == have)

    def read(self) -> str | None:
        """The live value, or ``None`` when the host does not have this knob."""
        return self._read()

    def available(self) -> bool:
        return self.read() is not None

    def write(self, value: str) -> None:
        """Set the knob; raises :class:`~tierfleet_ops.errors.UnavailableError` when refused."""
        self._write(value)

    def matches(self, want: str, have: str | None) -> bool:
        """True when the live value ``have`` already satisfies ``want``."""
        return have is not None and self._equal(want, have)

    def __repr__(self) -> str:
        return f"Knob({self.name!r})"


def sysfs_knob(sysfs: Sysfs, rel: str, name: str, backend: str, description: str) -> Knob:
    """A knob backed by one sysfs file (``cat /sys/<rel>`` / ``echo v > /sys/<rel>``)."""
    return Knob(name, backend, description, lambda: sysfs.read(rel),
                lambda v: sysfs.write(rel, v))


@dataclass
class Change:
    """One knob and the value a policy wants; ``note`` says why (e.g. a governor fallback)."""

    knob: Knob
    value: str
    note: str = ""


@dataclass
class Outcome:
    """What happened to one change: unchanged, changed, would-change (dry run), unavailable,
    failed or verify-failed."""

    name: str
    before: str | None
    want: str
    after: str | None
    status: str
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"knob": self.name, "before": self.before, "want": self.want,
                "after": self.after, "status": self.status, "note": self.note}


@dataclass
class Skipped:
    """A setting the policy asked for that this host cannot honour, with the reason."""

    name: str
    reason: str
