"""bench/mutate.py: the mutants it makes of the real modules, and how it finds each module's tests."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("bench_mutate", REPO / "bench" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_mutate"] = mod
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["bench_mutate"]


def changes(mutate, target):
    return {(m.kind, m.original.strip(), m.replacement) for m in mutate.mutants(target)}


def test_allowlist_mutants_include_the_dangerous_widenings(mutate):
    target = mutate.TARGETS["sysfs-allowlist"]
    got = mutate.mutants(target)
    kinds = {m.kind for m in got}
    text = {m.replacement for m in got}
    assert "(p.match)" in text and "(p.search)" in text                   # fullmatch -> match/search
    assert any(t.startswith("(os.O_WRONLY |") and t.endswith("| os.O_CREAT)") for t in text)  # creating knobs
    assert "(NotAllowedError)" in text and "(UnavailableError)" in text   # error classes swapped
    assert "('..' in rel.split('/'))" in text                             # absolute-path guard dropped
    assert "(rel.startswith('/'))" in text                                # '..' guard dropped
    assert "('devices/system/cpu/intel_pstate/[^/]+')" in text            # any intel_pstate file
    assert "('class/devfreq/[/A-Za-z0-9_.:-]+/(min_freq|max_freq)')" in text   # a name crossing /
    assert "regex: alternative [^/]+ added" in kinds
    assert {"delete", "compare", "negate condition"} <= kinds
    # nothing outside the scope: the CPU-list helpers are another target
    lines = {m.line for m in got}
    src = (REPO / target.path).read_text()
    first_cpulist = next(n.lineno for n in ast.parse(src).body
                         if isinstance(n, ast.FunctionDef) and n.name == "parse_cpulist")
    assert max(lines) < first_cpulist


def test_every_mutant_compiles_differs_and_has_a_unique_id(mutate):
    for target in (mutate.TARGETS["sysfs-allowlist"], mutate.TARGETS["selector"]):
        source = (REPO / target.path).read_text()
        base = ast.dump(ast.parse(source))
        got = mutate.mutants(target)
        assert len(got) > 50, target.name
        assert len({m.id for m in got}) == len(got), target.name
        for m in got:
            text = m.apply(source)
            compile(text, m.path, "exec")
            assert ast.dump(ast.parse(text)) != base, (target.name, m.describe())


def test_docstrings_fstrings_and_annotations_are_not_mutated(mutate):
    src = '''"""Module doc: 1 + 1 == 2."""
from __future__ import annotations
import logging
log = logging.getLogger(__name__)


def f(x: int = 3) -> "int":
    """Doc 2 < 3."""
    log.warning("%s failed", x)
    return f"{x + 1}" if x < 2 else x
'''
    target = mutate.Target("t", "t.py", ())
    got = mutate.mutants(target, src)
    described = [m.describe() for m in got]
    touched = [m.original for m in got if m.kind != "delete"]
    assert not [t for t in touched if "Doc" in t or "failed" in t or "x + 1" in t or "int" in t], touched
    assert "`3` -> `(4)`" in described and "`x < 2` -> `(x <= 2)`" in described
    assert "delete `log.warning(\"%s failed\", x)`" in described


def test_sampling_is_seeded(mutate):
    import random

    cands = mutate.mutants(mutate.TARGETS["selector"])
    a = random.Random("1:selector").sample(cands, 10)
    b = random.Random("1:selector").sample(cands, 10)
    c = random.Random("2:selector").sample(cands, 10)
    assert [m.id for m in a] == [m.id for m in b] != [m.id for m in c]


def test_test_targets_expand_globs_once_in_order(mutate, tmp_path):
    for name in ("test_b.py", "test_a.py", "test_c.py"):
        (tmp_path / "tests").mkdir(exist_ok=True)
        (tmp_path / "tests" / name).write_text("")
    target = mutate.Target("t", "x.py", ("tests/test_c.py", "tests/test_*.py", "tests/missing.py",
                                         "tests/test_a.py::test_one"))
    assert mutate.test_targets(target, tmp_path) == [
        "tests/test_c.py", "tests/test_a.py", "tests/test_b.py", "tests/test_a.py::test_one"]


def test_module_names(mutate):
    assert mutate.module_name("ops/tierfleet_ops/sysfs.py") == "tierfleet_ops.sysfs"
    assert mutate.module_name("tierfleet/operations/release.py") == "tierfleet.operations.release"
