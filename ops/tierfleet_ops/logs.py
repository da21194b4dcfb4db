"""Structured log lines: ``<prio>logger: message key=value ...``.

Under systemd (``$JOURNAL_STREAM`` set) the ``<N>`` prefix gives journald each line's priority
(``SyslogLevelPrefix=`` is on by default); elsewhere lines carry a timestamp instead.
Configured by the daemon's entry point only, never at import time.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            msg += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if self.journal:
            return f"<{_PRIO.get(record.levelno, 6)}>{record.name}: {msg}"
        return f"{self.formatTime(record)} {record.levelname.lower()} {record.name}: {msg}"


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger("tierfleet_ops")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
