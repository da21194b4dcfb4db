"""One exception root for tierfleet.

Every error the library raises on purpose derives from :class:`TierfleetError`. Branches also
subclass the matching built-in so callers that only know Python's exceptions still catch them.
The CLI maps these to exit codes and messages in one place (:func:`tierfleet.cli.main`).
"""

from __future__ import annotations


class TierfleetError(Exception):
    """Root of every error tierfleet raises on purpose."""

    #: process exit status the CLI uses for this error
    exit_code = 1


class ConfigError(TierfleetError, ValueError):
    """Bad input: a catalog, inventory, policy or artifact that does not validate.

    The message names the file, the key and what is allowed.
    """

    exit_code = 2

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class CatalogError(ConfigError):
    """The tier catalog does not validate, or a tier name is unknown."""


class InventoryError(ConfigError):
    """An inventory file, or a host's data in it, does not validate."""


class LabError(TierfleetError, RuntimeError):
    """The local lab fleet could not be brought up, changed or torn down."""

    exit_code = 3


class RuleError(TierfleetError, ValueError):
    """A value breaks one of the shared value rules (:mod:`tierfleet.rules`).

    The message says what is allowed; the caller adds where the value came from (a file and key in a
    :class:`ConfigError`, an argument name in an operation's error).
    """
