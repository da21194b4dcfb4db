"""Failing a host from an operation without running anything on it."""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api import FunctionCommand


def _log_and_fail(state, host, message: str) -> bool:  # noqa: ARG001 - pyinfra passes state and host by name
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


def fail_host(message: str) -> FunctionCommand:
    """A command that logs ``message`` in red against the host and fails it; nothing reaches the host."""
    return FunctionCommand(_log_and_fail, (message,), {})
