"""Commands are argument lists (never a shell); logged and reported quoted."""

from __future__ import annotations

import pytest

from tierfleet_ops.errors import CommandError, UnavailableError
from tierfleet_ops.runner import Runner


def test_hostile_argument_stays_one_argument(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"15W; touch {marker} $(touch {marker}) `touch {marker}`"
    out = Runner().run(["printf", "%s\\n", hostile])
    assert out == hostile + "\n"
    assert not marker.exists()


def test_failure_message_quotes_the_command(tmp_path):
    with pytest.raises(CommandError) as e:
        Runner().run(["sh", "-c", "echo 'NVPM ERROR: bad mode' >&2; exit 3", "x; y"])
    assert e.value.returncode == 3
    assert str(e.value).startswith("sh -c 'echo '\"'\"'NVPM ERROR: bad mode'\"'\"' >&2; exit 3' 'x; y' exited 3:")
    assert "NVPM ERROR: bad mode" in str(e.value)


def test_missing_command_is_unavailable(tmp_path):
    with pytest.raises(UnavailableError, match="nvpmodel: command not found"):
        Runner(path=str(tmp_path)).run(["nvpmodel", "-q"])
