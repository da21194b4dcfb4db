"""Spec tests for every tierfleet fact: recorded command output -> parsed value (pyinfra's layout).

Each ``specs/<module>.<Fact>/<case>.json`` holds ``output`` (stdout lines as recorded), the expected ``fact``,
optional ``arg`` (fact arguments) and optional ``command`` (the exact shell command expected).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

SPECS = Path(__file__).parent / "specs"
CASES = sorted(SPECS.glob("*/*.json"))


def _fact_class(dirname: str):
    module, name = dirname.rsplit(".", 1)
    return getattr(importlib.import_module(f"tierfleet.facts.{module}"), name)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_fact_spec(path: Path) -> None:
    spec = json.loads(path.read_text())
    fact = _fact_class(path.parent.name)()
    if "command" in spec:
        assert fact.command(*spec["arg"]) == spec["command"]
    # pyinfra only calls process() when the command printed something; otherwise the default stands.
    value = fact.process(spec["output"]) if spec["output"] else fact.default()
    assert json.loads(json.dumps(value)) == spec["fact"]


def test_every_fact_has_a_spec() -> None:
    from tierfleet.profile import FACTS

    covered = {p.parent.name for p in CASES}
    for fact, _ in FACTS.values():
        assert f"{fact.__module__.rsplit('.', 1)[1]}.{fact.__name__}" in covered


def test_hostile_path_runs_quoted(tmp_path: Path) -> None:
    """The DiskFree command, run for real by bash, treats metacharacters in the path as data."""
    from tierfleet.facts.system import DiskFree

    marker = tmp_path / "pwned"
    path = f"{tmp_path}/m'; touch {marker}; echo '$(touch {marker})`touch {marker}`"
    fact = DiskFree()
    out = subprocess.run(["sh", "-c", fact.command(path)], capture_output=True, text=True, check=True)
    assert not marker.exists()
    value = fact.process(out.stdout.splitlines())
    assert value["path"] == path
    assert value["measured"] == str(tmp_path)
    assert value["free"] > 0


ALL_FACTS = sorted({p.parent.name for p in CASES})
GARBAGE = [["\x00\xff binary"], ["::::", "====", ""], ["a" * 10000], ["/sys/devices/system/cpu/online:"]]


@pytest.mark.parametrize("fact_path", ALL_FACTS)
@pytest.mark.parametrize("garbage", GARBAGE, ids=["binary", "separators", "long", "empty-online"])
def test_garbage_gives_unknown(fact_path: str, garbage: list[str]) -> None:
    """Garbled output parses to the "unknown" value: the default, None, nothing found, or an error field."""
    fact = _fact_class(fact_path)()
    value = fact.process(garbage)
    unknown = value == fact.default() or value in (None, [], {})
    if isinstance(value, dict) and "error" in value:
        unknown = unknown or (value["error"] and not value.get("gpus"))
    if isinstance(value, dict) and "flags" in value:  # CpuIsa: no flags -> the generic build
        unknown = unknown or (value["flags"] == [] and value["variant"] == "generic")
    assert unknown, value


SHELLS = [["sh", "-c"], ["dash", "-c"]] + ([["busybox", "sh", "-c"]] if shutil.which("busybox") else [])


@pytest.mark.parametrize("shell", SHELLS, ids=[s[0] for s in SHELLS])
def test_commands_run_here_and_exit_zero(shell: list[str]) -> None:
    """Every fact command is valid POSIX shell and exits 0 on a host without the hardware it looks for."""
    from tierfleet.profile import FACTS

    if not shutil.which(shell[0]):
        pytest.skip(f"{shell[0]} not installed")
    for fact, takes_dir in FACTS.values():
        args = ["/var/lib/tierfleet/models"] if takes_dir else []
        result = subprocess.run([*shell, fact().command(*args)], capture_output=True, text=True)
        assert result.returncode == 0, (fact.__name__, result.stderr)
