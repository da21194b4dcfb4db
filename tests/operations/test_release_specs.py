"""One JSON spec per operation case (tests/operations/specs/<module.op>/<case>.json), run twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api import OperationValueError

from tierfleet.operations import release

from .harness import load_specs, run_operation

SPECS = Path(__file__).parent / "specs"
OPS = {
    "release.artifact": release.artifact,
    "release.switch": release.switch,
    "release.rollback": release.rollback,
    "release.prune": release.prune,
}
CASES = [(op, name, spec) for op in OPS for name, spec in load_specs(SPECS / op)]


def test_every_operation_has_specs():
    assert {op for op, _, _ in CASES} == set(OPS)
    assert sorted(p.name for p in SPECS.iterdir()) == sorted(OPS)


@pytest.mark.parametrize(("op", "name", "spec"), CASES, ids=[f"{op}/{name}" for op, name, _ in CASES])
def test_operation_spec(op, name, spec):
    if "exception" in spec:
        with pytest.raises(OperationValueError) as info:
            run_operation(OPS[op], spec["args"], spec["facts"])
        assert type(info.value).__name__ == spec["exception"]["name"]
        assert str(info.value) == spec["exception"]["message"]
        return

    commands, noops = run_operation(OPS[op], spec["args"], spec["facts"])
    assert commands == spec["commands"]
    assert noops == ([spec["noop"]] if spec["noop"] else [])

    if spec.get("fails"):
        # a host-state failure is one command that fails that host with a message, running nothing there
        assert len(commands) == 1 and commands[0].startswith("fail_host: tierfleet: ")
        return
    if commands:
        # idempotence: against the state the commands produce, a second run yields nothing
        assert "facts_after" in spec, f"{name}: a changing case needs facts_after"
        again, noops_after = run_operation(OPS[op], spec["args"], spec["facts_after"])
        assert again == []
        assert noops_after == [spec["noop_after"]]


def test_artifact_quotes_hostile_root_and_url():
    spec = dict(load_specs(SPECS / "release.artifact"))["quotes_injection.json"]
    quoted_root = "'/srv/it'\"'\"'s $(reboot)"
    assert all(quoted_root in command for command in spec["commands"])
    assert "'http://127.0.0.1:8000/a b/$(id)`id`'\"'\"'/tiny.gguf'" in spec["commands"][0]
