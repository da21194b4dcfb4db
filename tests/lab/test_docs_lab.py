"""The ``sh lab`` commands of README.md and docs/*.md, run in page order as a newcomer pastes them, as root, in a
fresh checkout with its own lab (state in its ``.lab``, addresses .151 onwards of the checkout's block): each must
exit as the page says (``# ... exits N``, else 0). README's ``make demo`` runs first, from nothing.

``molecule test`` (docs/molecule.md) is run, with each step checked, by ``test_molecule.py``.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import markdown_commands as md
from tierfleet.lab.spec import block_address

pytestmark = pytest.mark.lab

#: commands a dedicated test runs (and checks more closely than an exit code)
DEDICATED = {"molecule test": "tests/lab/test_molecule.py"}
PAGES = [p for p in md.PAGES if any(c.kind == "lab" for c in md.commands(p))]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A fresh checkout and its environment; its lab is taken down at the end whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from tierfleet.artifacts.llama_build import cached_runtime

    if cached_runtime(md.REPO / ".cache" / "runtime") is None:
        pytest.skip("no llama-server build under .cache/runtime: run `tierfleet lab publish` once (builds it)")
    stale = subprocess.run(["make", "-q", "-C", str(md.REPO), ".venv/bin/.installed"])
    assert stale.returncode == 0, "the venv is older than pyproject.toml: run `make demo` or `make test` once first"
    cwd = md.checkout(tmp_path_factory.mktemp("newcomer"))
    env = md.environment(cwd, TIERFLEET_LAB_ADDR_BASE=block_address(150))
    yield cwd, env
    subprocess.run(["tierfleet", "lab", "down"], cwd=cwd, env=env, capture_output=True, timeout=300)


def commands_to_run(page: str) -> list[md.Command]:
    out = []
    for c in md.commands(page):
        words = " ".join(md.argv_of(c.text))
        if c.kind == "setup" and words == "make demo":
            out.append(c)  # the set-up the page's lab commands follow
        elif c.kind == "lab" and words not in DEDICATED:
            out.append(c)
    return out


def test_dedicated_commands_have_their_test():
    for command, test in DEDICATED.items():
        assert command in (md.REPO / test).read_text(), (command, test)


@pytest.mark.parametrize("page", PAGES)
def test_page_lab_commands_exit_as_the_page_says(newcomer, page):
    cwd, env = newcomer
    for command in commands_to_run(page):
        done = md.run(command, cwd, env, timeout=1200)
        assert done.returncode == command.exit_code, f"{command}\n{done.stdout[-5000:]}"
