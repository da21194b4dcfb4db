"""Persisted original values of every knob the daemon changed.

The original is recorded before the first write and kept on disk (atomically replaced and
fsynced), so a daemon killed with SIGKILL and started again still restores the values the host
had before the daemon ever touched it, not the values it had set itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class StateStore:
    """Originals by knob name, in first-write order, persisted at ``path`` (``None``: memory only)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self.originals: dict[str, str] = {}
        #: original CPU masks (CPU lists) of runtime threads this daemon pinned, by thread id
        self.pins: dict[int, str] = {}
        if self.path and self.path.exists():
            text = self.path.read_text()
            self.originals = parse_state(text, str(self.path))
            self.pins = parse_pins(text)

    def record(self, name: str, value: str) -> bool:
        """Record ``value`` as the original of ``name`` unless one is known; True when recorded."""
        if name in self.originals:
            return False
        self.originals[name] = value
        self._save()
        return True

    def forget(self, name: str) -> None:
        if self.originals.pop(name, None) is not None:
            self._save()

    def clear(self) -> None:
        self.originals.clear()
        self._save()

    def record_pins(self, masks: dict[int, str]) -> None:
        """Record original masks of threads not seen before (one write for the whole batch)."""
        new = {t: m for t, m in masks.items() if t not in self.pins}
        if new:
            self.pins.update(new)
            self._save()

    def forget_pins(self, tids: list[int]) -> None:
        if any(self.pins.pop(t, None) is not None for t in list(tids)):
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": 1, "originals": list(self.originals.items()),
                           "pins": {str(k): v for k, v in self.pins.items()}}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise


def parse_state(text: str, source: str = "state") -> dict[str, str]:
    """Parse a state file; a corrupt file is an error, never silently empty.

    >>> parse_state('{"version": 1, "originals": [["a", "1"], ["b", "x"]]}')
    {'a': '1', 'b': 'x'}
    """
    from .errors import ConfigError

    try:
        data = json.loads(text)
        return {str(k): str(v) for k, v in data["originals"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(source, "originals", f"unreadable state file ({exc}); "
                          "move it away to start without recorded originals") from exc


def parse_pins(text: str) -> dict[int, str]:
    """Original thread masks from a state file (absent in older files).

    >>> parse_pins('{"version": 1, "originals": [], "pins": {"4242": "0-15"}}')
    {4242: '0-15'}
    """
    try:
        return {int(k): str(v) for k, v in json.loads(text).get("pins", {}).items()}
    except (ValueError, AttributeError):
        return {}
