"""Every command shown in README.md and docs/*.md: labelled, parsed by its own program, and run where it can be.

``sh`` blocks run here; ``sh lab`` blocks run in the lab tier (``tests/lab/test_docs_lab.py``); ``fleet``,
``setup`` and ``bench`` commands are parsed (bash syntax, the program's own option parser, the repository files
they name). See ``tests/markdown_commands.py`` for the conventions.
"""

from __future__ import annotations

import pytest

from tests import markdown_commands as md

COMMANDS = md.all_commands()


@pytest.mark.parametrize("page", md.PAGES)
def test_every_code_block_says_what_it_holds(page):
    for block in md.blocks(page):
        md.block_kind(block)  # ValueError names the page, the line and the allowed info strings


def test_the_pages_show_commands_of_every_kind():
    kinds = {c.kind for c in COMMANDS}
    assert kinds == set(md.COMMAND_KINDS)
    assert [md.argv_of(c.text) for c in COMMANDS if c.kind == "setup"] == [["make", "demo"], ["make", "test"]]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_parses(command):
    assert md.parse_check(command) is None, md.parse_check(command)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.kind == "run"], ids=str)
def test_command_runs_as_the_page_says(command, tmp_path):
    cwd = md.checkout(tmp_path / "checkout")
    done = md.run(command, cwd, md.environment(cwd), timeout=300)
    assert done.returncode == command.exit_code, done.stdout[-3000:]


@pytest.mark.parametrize(("text", "problem"), [
    ("tierfleet upgrade -i inventory/edge.py --model-version 2 --serial", "requires an argument"),
    ("tierfleet upgrade -i inventory/edge.py --max-fail-pct 500", "500"),
    ("tierfleet staus -i inventory/edge.py", "No such command"),
    ("tierfleet lab fault unplug cpu-server", "No such command"),
    ("pyinfra inventory/nope.py deploys/tier_basic.py", "no such file"),
    ("pyinfra inventory/edge.py deploys/tier_basic.py --limt x", "No such option"),
    ("molecule tset", "No such command"),
    ("make dmeo", "make -n"),
    ("vagrant up gpu-nod", "no machine"),
    ("tierfleet status -i inventory/edge.py | (", "bash -n"),
    ("frobnicate --all", "no parse check"),
])
def test_parse_check_catches_what_a_newcomer_would_trip_on(text, problem):
    problem_found = md.parse_check(md.Command("x.md", 1, "fleet", text, 0))
    assert problem_found is not None and problem in problem_found, problem_found


def test_unlabelled_and_unknown_blocks_are_refused(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    monkeypatch.setattr(md, "REPO", tmp_path)
    for info in ("", "bash", "sh prod", "sh lab extra"):
        page.write_text(f"intro\n\n```{info}\nls\n```\n")
        with pytest.raises(ValueError, match=r"page.md:3: info string"):
            md.commands("page.md")


def test_continuations_comments_and_exit_codes(tmp_path, monkeypatch):
    monkeypatch.setattr(md, "REPO", tmp_path)
    (tmp_path / "page.md").write_text("```sh lab\n# a comment\ntierfleet status \\\n    -i inventory/lab.py"
                                      "   # exits 1: a host is down\n\ntierfleet lab status\n```\n")
    assert md.commands("page.md") == [
        md.Command("page.md", 3, "lab", "tierfleet status      -i inventory/lab.py   # exits 1: a host is down", 1),
        md.Command("page.md", 6, "lab", "tierfleet lab status", 0)]
