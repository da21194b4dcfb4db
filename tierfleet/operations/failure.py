"""The one way tierfleet fails a host: a red ``tierfleet: <what>: <why>`` line, and nothing after it runs there.

- Inside an operation that decides from facts that the host cannot go on (a refused preflight, a broken
  driver, a release id reused for other content), ``yield fail_host(message)``.
- In a deploy, where a check of its own fails before any operation (bad inventory data, a manifest missing
  from the store), call the operation :func:`fail` (``failure.fail(name=..., message=...)``).

Both run nothing on the host (a pyinfra ``FunctionCommand``), so they work on every connector and leave the
host as it was; pyinfra marks the host failed and runs nothing more there, other hosts go on. Commands that
fail *while running* (a checksum mismatch, a full disk, the health gate) print the same shape on stderr
(``tierfleet: <what>: <why>``) and exit 1.
"""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api import FunctionCommand, operation

PREFIX = "tierfleet: "


def message_of(message: str) -> str:
    """``message`` with the one prefix every failure carries.

    >>> message_of("preflight refused: cores: needs 8, has 4")
    'tierfleet: preflight refused: cores: needs 8, has 4'
    >>> message_of("tierfleet: already prefixed")
    'tierfleet: already prefixed'
    """
    return message if message.startswith(PREFIX) else PREFIX + message


def _log_and_fail(state, host, message: str) -> bool:  # noqa: ARG001 - pyinfra passes state and host by name
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


def fail_host(message: str) -> FunctionCommand:
    """A command that logs ``tierfleet: <message>`` in red against the host and fails it; nothing reaches
    the host."""
    return FunctionCommand(_log_and_fail, (message_of(message),), {})


@operation(is_idempotent=True)
def fail(message: str):
    """Fail this host with ``message`` (a deploy's own check that found something wrong), running nothing.

    **Example:**

    .. code:: python

        from tierfleet.operations import failure
        failure.fail(name="Artifacts are in the store", message="model manifest ...: 404")
    """
    yield fail_host(message)
