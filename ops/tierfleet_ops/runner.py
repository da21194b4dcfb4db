"""Running external commands (nvpmodel, jetson_clocks, systemctl) through one injectable runner.

Commands are argument lists, never shell strings; they are logged with :func:`shlex.join` so a
logged line can be pasted into a shell safely.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess

from .errors import CommandError, UnavailableError

log = logging.getLogger(__name__)


class Runner:
    """Runs commands found on ``path`` (default: the process's ``PATH``)."""

    def __init__(self, path: str | None = None, timeout_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.path or os.environ.get("PATH"))

    def run(self, argv: list[str], input_text: str | None = None, check: bool = True) -> str:
        """Run ``argv`` and return its stdout; :class:`CommandError` on a non-zero exit."""
        exe = self.which(argv[0])
        if exe is None:
            raise UnavailableError(f"{argv[0]}: command not found")
        log.debug("run %s", shlex.join(argv))
        try:
            proc = subprocess.run([exe, *argv[1:]], input=input_text, capture_output=True,
                                  text=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandError(argv, -1, f"timed out after {self.timeout_s} s") from exc
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc.stdout
