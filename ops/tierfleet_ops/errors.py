"""One exception root for the ops daemon.

Every error ``tierfleet_ops`` raises on purpose derives from :class:`OpsError`. Branches also
subclass the matching built-in. The CLI maps them to exit codes in one place
(:func:`tierfleet_ops.cli.main`).
"""

from __future__ import annotations


class OpsError(Exception):
    """Root of every error the ops daemon raises on purpose."""

    #: process exit status the CLI uses for this error
    exit_code = 1


class ConfigError(OpsError, ValueError):
    """A policy or setting that does not validate; names the file, the key and what is allowed."""

    exit_code = 2

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class NotAllowedError(OpsError, PermissionError):
    """A write outside the allowlist of sysfs paths was attempted."""

    exit_code = 3


class UnavailableError(OpsError, LookupError):
    """A knob the host does not have (missing file, EACCES, NVML NotSupported)."""


class VerifyError(OpsError, RuntimeError):
    """A knob read back a different value than the one written."""


class CommandError(OpsError, RuntimeError):
    """An external command (nvpmodel, jetson_clocks, systemctl) failed."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        import shlex

        self.argv = argv
        self.returncode = returncode
        self.output = output
        super().__init__(f"{shlex.join(argv)} exited {returncode}: {output.strip()[:300]}")


class FatalError(OpsError, RuntimeError):
    """The daemon stopped on an error it cannot run on with (its control server died, its loop
    crashed); the recorded originals were restored before it was raised."""


class ControlError(OpsError, ConnectionError):
    """The control socket could not be reached or answered with an error."""

    exit_code = 4
