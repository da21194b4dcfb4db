"""The energy records: one JSON line per sample and per profile switch, appended to ``energy.jsonl``.

The file lives in the daemon's state directory (``/var/lib/tierfleet-ops/energy.jsonl`` next to
``state.json``: the unit's ``StateDirectory=``, the only place outside sysfs it may write) and is
what ``tierfleet report energy`` reads from every host (``tierfleet.report.parse_records``).
Two kinds of line::

    {"t": 1800000000.123, "profile": "eco", "power_w": {"gpu": 151.2, "cpu_package": 38.5},
     "energy_j": {"gpu": 912345.6, "cpu_package": 12345.6}, "load_pct": 12.5}
    {"t": 1800000012.456, "event": "switch", "from": "eco", "to": "performance",
     "reason": "mean load 82% over 5 s"}

``t`` is the wall clock (epoch seconds). ``power_w`` and ``energy_j`` hold the readings the
daemon's tick already took (the same ones ``/metrics`` serves, under the same source labels as
``tierfleet_ops_power_watts{source}``); a source the host lacks is left out, and ``load_pct`` is
``null`` while there is no load signal. ``from`` is ``null`` for the profile applied at start.

Writing is built so the file stays readable whatever happens:

- **Whole lines, appended.** The file is opened ``O_APPEND`` and each record is one ``write(2)``
  of a complete line. A write the kernel cuts short (a disk that fills half-way) is truncated
  back to where it started; if even that fails, and after a crash, the next record starts with a
  newline, so a torn line stays one garbled line that the reader skips and never swallows the
  next record.
- **Bounded.** Past ``max_bytes`` the file is renamed to ``energy.jsonl.1`` (replacing the
  older one) and a new one is started: at most two files, ``2 * max_bytes`` on disk.
- **Safe paths.** The file is opened with ``O_NOFOLLOW`` (a symlink planted in its place is
  refused, not followed) and must be a regular file; the directory is created ``0700`` when
  missing, and one that is a symlink, or writable by group or others, is refused.
- **Moved away.** A file renamed or deleted behind the daemon's back (by hand, by logrotate) is
  noticed at the next record, which starts a new file at the path.
- **Never fatal.** Any ``OSError`` (a full disk, a read-only filesystem, a refused path) drops
  the record, is logged once until a record is written again, and is shown in ``status``; the
  next record tries again.

:mod:`logging.handlers.RotatingFileHandler` is not used: it writes through a buffered text stream
(a long line may take several ``write(2)`` calls), follows symlinks, and reports every failed
record with a traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: the records' file name, in the state directory
RECORDS_NAME = "energy.jsonl"
#: readings key -> source label, for power (W) and energy (J); the labels of ``/metrics``
POWER = {"gpu_power_w": "gpu", "board_power_w": "board", "cpu_power_w": "cpu_package"}
ENERGY = {"gpu_energy_j": "gpu", "cpu_energy_j": "cpu_package", "board_energy_j": "board"}
#: the longest reason kept in a switch record
MAX_REASON = 200


def _finite(v: Any, digits: int) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return round(float(v), digits)


def sample_record(t: float, profile: str, readings: dict[str, Any], load: float | None) -> dict[str, Any]:
    """A sample record from a tick's readings (pure).

    >>> sample_record(1800000000.0, "eco", {"gpu_power_w": 151.23456, "gpu_energy_j": 9.5,
    ...               "cpu_energy_j": float("nan"), "gpu_util_pct": 3.0}, None)
    {'t': 1800000000.0, 'profile': 'eco', 'power_w': {'gpu': 151.235}, 'energy_j': {'gpu': 9.5}, 'load_pct': None}
    """
    power = {label: w for key, label in POWER.items() if (w := _finite(readings.get(key), 3)) is not None}
    energy = {label: j for key, label in ENERGY.items() if (j := _finite(readings.get(key), 3)) is not None}
    return {"t": round(t, 3), "profile": profile, "power_w": power, "energy_j": energy,
            "load_pct": _finite(load, 2)}


def switch_record(t: float, from_profile: str | None, to_profile: str, reason: str) -> dict[str, Any]:
    """A switch record (pure).

    >>> switch_record(1800000000.0, None, "eco", "start")
    {'t': 1800000000.0, 'event': 'switch', 'from': None, 'to': 'eco', 'reason': 'start'}
    """
    return {"t": round(t, 3), "event": "switch", "from": from_profile, "to": to_profile,
            "reason": str(reason)[:MAX_REASON]}


def encode(record: dict[str, Any]) -> bytes:
    """One record as one line (no NaN, no raw newline can get in: JSON escapes them)."""
    return (json.dumps(record, separators=(",", ":"), allow_nan=False, ensure_ascii=True) + "\n").encode()


class EnergyRecorder:
    """Appends records to ``path`` (``None``: records are off), rotating past ``max_bytes``."""

    def __init__(self, path: str | os.PathLike[str] | None, max_bytes: int = 8 << 20,
                 clock: Any = time.time) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.max_bytes = max_bytes
        self.clock = clock
        self.written = 0
        self.dropped = 0
        self.rotations = 0
        #: why the last record was dropped; None once one is written again
        self.error: str | None = None
        self._fd: int | None = None
        #: the tick and the control threads (a held profile) both write; one record at a time
        self._lock = threading.Lock()
        #: the file may end in a torn line: start the next record on a line of its own
        self._torn = False

    @property
    def old_path(self) -> str | None:
        return self.path + ".1" if self.path else None

    # --- what the daemon calls --------------------------------------------------------------

    def sample(self, profile: str, readings: dict[str, Any], load: float | None) -> bool:
        return self.write(sample_record(self.clock(), profile, readings, load))

    def switch(self, from_profile: str | None, to_profile: str, reason: str) -> bool:
        return self.write(switch_record(self.clock(), from_profile, to_profile, reason))

    def status(self) -> dict[str, Any]:
        return {"path": self.path, "written": self.written, "dropped": self.dropped, "rotations": self.rotations,
                "error": self.error}

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (and logged once per spell of failures) when it was dropped."""
        if self.path is None:
            return False
        with self._lock:
            return self._write(record)

    def _write(self, record: dict[str, Any]) -> bool:
        try:
            self._append(encode(record))
        except (OSError, ValueError) as exc:
            self.dropped += 1
            self._close()  # reopen next time: the file may have been replaced, the disk mended
            why = f"{self.path}: {exc.strerror or exc}" if isinstance(exc, OSError) else f"{self.path}: {exc}"
            if self.error is None:
                log.error("energy records: %s; records are dropped until writing works again", why)
            self.error = why
            return False
        if self.error is not None:
            log.info("energy records: writing again", extra={"fields": {"dropped": self.dropped}})
            self.error = None
        self.written += 1
        return True

    # --- the file ---------------------------------------------------------------------------

    def _check_dir(self, directory: str) -> None:
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"{directory} is not a directory (a symlink is refused)")
        if st.st_mode & 0o022:
            raise OSError(errno.EPERM, f"{directory} is writable by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); records stay off")

    def _open(self) -> int:
        assert self.path is not None
        self._check_dir(os.path.dirname(os.path.abspath(self.path)))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "it is a symbolic link; refused") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file; refused")
            # a crash (or a cut write) may have left a torn last line
            self._torn = st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n"
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _rotate(self) -> None:
        assert self.path is not None and self.old_path is not None
        self._close()
        os.replace(self.path, self.old_path)
        self.rotations += 1
        log.info("energy records rotated", extra={"fields": {"old": self.old_path}})

    def _replaced(self, fd: int) -> bool:
        """True when the path no longer names the open file (moved away, deleted, replaced)."""
        assert self.path is not None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return True
        fst = os.fstat(fd)
        return (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino)

    def _append(self, line: bytes) -> None:
        if self._fd is not None and self._replaced(self._fd):
            self._close()
        if self._fd is None:
            self._fd = self._open()
        size = os.fstat(self._fd).st_size
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            self._fd = self._open()
            size = os.fstat(self._fd).st_size
        data = (b"\n" + line) if self._torn else line
        n = os.write(self._fd, data)  # an error closes the file: the next open looks at its last byte again
        if n != len(data):
            # cut short (the disk filled up half-way): take the piece back; if that fails too, the next
            # open sees the torn line and starts a new one
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")
        self._torn = False
