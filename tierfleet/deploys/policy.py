"""Energy-policy deploys a rollout runs on one host (:mod:`tierfleet.rollout.worker`)."""

from __future__ import annotations

from pyinfra.api import deploy

from tierfleet.deploys.tier import OPS_VENV
from tierfleet.operations import daemon

OPS_CLI = f"{OPS_VENV}/bin/tierfleet-ops"
OPS_PYTHON = f"{OPS_VENV}/bin/python"


@deploy("tierfleet energy policy")
def apply_policy(text: str, expected_hash: str, port: int) -> None:
    """Install ``text`` as the daemon's policy and check it runs it (else the previous one goes back)."""
    daemon.policy_applied(name="Energy policy", text=text, expected_hash=expected_hash, cli=OPS_CLI,
                          python=OPS_PYTHON, port=port)


@deploy("tierfleet energy policy revert")
def revert_policy() -> None:
    """Put back the policy the last rollout replaced."""
    daemon.policy_reverted(name="Previous energy policy", cli=OPS_CLI, python=OPS_PYTHON)
