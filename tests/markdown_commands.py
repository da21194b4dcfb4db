"""The commands shown in README.md and docs/*.md, read from their fenced code blocks, and how to check them.

Every fenced block carries an info string. Command blocks are ``sh`` plus at most one word that says where
they run:

- ```` ```sh ````: runs anywhere, as is (the fast test tier runs it);
- ```` ```sh lab ````: runs as root against a lab fleet, in page order (the ``lab`` tier runs it);
- ```` ```sh fleet ````: needs real hosts (Jetsons, GPU nodes, VMs, the example inventories' machines);
- ```` ```sh setup ````: the set-up commands: the ``lab`` tier runs ``make demo``; CI runs ``make test`` itself;
- ```` ```sh bench ````: benchmarks (minutes, many hosts): they print figures and are only parsed.

Every command of every kind is parsed (:func:`parse_check`: bash syntax, the program's own option parser, the
files it names); ``fleet`` and ``setup`` commands are only parsed. Other blocks (``text``, ``yaml``, ``python``,
``ruby``, ``json``) hold no commands. A trailing comment ``# ... exits N`` states the exit status a command
gives (0 otherwise).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: the pages whose commands the tests run
PAGES = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
COMMAND_KINDS = ("run", "lab", "fleet", "setup", "bench")
OTHER_LANGUAGES = ("text", "yaml", "python", "ruby", "json", "ini")
FENCE = re.compile(r"^```(.*)$")
EXITS = re.compile(r"#.*\bexits (\d+)\b")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    kind: str  # one of COMMAND_KINDS
    text: str
    exit_code: int

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    info: str
    body: list[str]


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of a page, with the line of their opening fence."""
    out, current = [], None
    for number, line in enumerate((REPO / page).read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and current is None:
            current = Block(page, number, m.group(1).strip(), [])
        elif m and current is not None:
            if m.group(1).strip():
                raise ValueError(f"{page}:{number}: a fence that closes a block takes no info string")
            out.append(current)
            current = None
        elif current is not None:
            current.body.append(line)
    if current is not None:
        raise ValueError(f"{page}:{current.line}: code block never closed")
    return out


def block_kind(block: Block) -> str | None:
    """``run``/``lab``/``fleet``/``setup`` for a command block, None for another language; ValueError otherwise."""
    words = block.info.split()
    if words and words[0] == "sh" and len(words) <= 2:
        kind = words[1] if len(words) == 2 else "run"
        if kind in COMMAND_KINDS[1:] or len(words) == 1:
            return kind
    if len(words) == 1 and words[0] in OTHER_LANGUAGES:
        return None
    allowed = ", ".join(["sh", *(f"sh {k}" for k in COMMAND_KINDS[1:]), *OTHER_LANGUAGES])
    raise ValueError(f"{block.page}:{block.line}: info string {block.info!r}; allowed: {allowed}")


def commands(page: str) -> list[Command]:
    """Every command of a page's command blocks (backslash continuations joined, comment lines left out)."""
    out = []
    for block in blocks(page):
        kind = block_kind(block)
        if kind is None:
            continue
        pending, start = "", 0
        for offset, line in enumerate(block.body, 1):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if not pending:
                start = block.line + offset
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            m = EXITS.search(pending)
            out.append(Command(page, start, kind, pending.strip(), int(m.group(1)) if m else 0))
            pending = ""
    return out


def all_commands() -> list[Command]:
    return [c for page in PAGES for c in commands(page)]


# --- parsing without running ----------------------------------------------------------------------------------

def argv_of(text: str) -> list[str]:
    """The command's words, without a trailing comment and without the ``.venv/bin/`` prefix."""
    words = shlex.split(text, comments=True)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # NAME=value before the program
        words.pop(0)
    for i, word in enumerate(words):  # the program's own words end at a redirection or the next command
        if word in (">", ">>", "<", "|", "&&", "||", ";", "2>", "2>&1"):
            del words[i:]
            break
    if words and words[0].startswith(".venv/bin/"):
        words[0] = words[0].removeprefix(".venv/bin/")
    return words


def _click_parse(command, args: list[str], prog: str) -> None:
    """Parse ``args`` with a click command the way invoking it would, down every subcommand, running nothing."""
    import click

    ctx = command.make_context(prog, list(args))
    if isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]  # what the group hands its subcommand
        if not rest:
            raise click.UsageError(f"{prog}: no subcommand given")
        _name, sub, sub_args = command.resolve_command(ctx, rest)
        _click_parse(sub, sub_args, f"{prog} {_name}")


def _repo_paths(words: list[str], cwd: Path) -> list[str]:
    """Arguments that name a file of the repository (inventory/, deploys/, docs/, ...) but do not exist."""
    prefixes = ("inventory/", "deploys/", "docs/", "templates/", "molecule/", "tests/")
    return [w for w in words if w.startswith(prefixes) and not (cwd / w).exists()]


def parse_check(command: Command, cwd: Path = REPO) -> str | None:
    """Why ``command`` would not parse (None when it does): bash syntax, then the program's own parser."""
    syntax = subprocess.run(["bash", "-n", "-c", command.text], capture_output=True, text=True)
    if syntax.returncode:
        return f"bash -n: {syntax.stderr.strip()}"
    words = argv_of(command.text)
    if not words:
        return "no command"
    program, args = words[0], words[1:]
    missing = _repo_paths(args, cwd)
    if missing:
        return f"no such file in the repository: {', '.join(missing)}"
    try:
        if program == "tierfleet":
            from tierfleet.cli import make_cli

            _click_parse(make_cli(), args, "tierfleet")
        elif program == "tierfleet-ops":
            from tierfleet_ops.cli import make_cli as make_ops_cli

            _click_parse(make_ops_cli(), args, "tierfleet-ops")
        elif program == "pyinfra":
            from pyinfra_cli.main import cli as pyinfra_cli

            _click_parse(pyinfra_cli, args, "pyinfra")
            positional = [a for a in args if not a.startswith("-")]
            if not positional or not (positional[0].startswith("@") or (cwd / positional[0]).is_file()):
                return f"pyinfra: inventory {positional[:1]} is neither a file nor @connector"
        elif program == "molecule":
            from molecule.shell import main as molecule_cli

            _click_parse(molecule_cli, args, "molecule")
        elif program == "make":
            dry = subprocess.run(["make", "-n", "-C", str(cwd), *args], capture_output=True, text=True)
            if dry.returncode:
                return f"make -n: {dry.stderr.strip()}"
        elif program == "python":
            if not args or not (cwd / args[0]).is_file():
                return f"python: no script {args[:1]}"
            compiled = subprocess.run([sys.executable, "-m", "py_compile", str(cwd / args[0])], capture_output=True)
            if compiled.returncode:
                return f"python: {args[0]} does not compile"
        elif program == "vagrant":
            return _vagrant_check(args, cwd)
        elif program in ("ssh", "curl", "ruby", "cat", "ls", "test"):
            return None  # run-only programs: their commands are run, and `fleet` blocks may not use them
        else:
            return f"no parse check for {program!r}: add one to tests/markdown_commands.py"
    except Exception as exc:  # noqa: BLE001 - click's usage errors and anything a parser raises
        message = str(getattr(exc, "format_message", lambda: exc)())
        if command.kind in ("fleet", "lab") and "does not exist" in message:
            return None  # files on the operator's machine, or made by an earlier lab command (its run checks them)
        return f"{program}: {type(exc).__name__}: {getattr(exc, 'format_message', lambda: exc)()}"
    return None


#: vagrant's subcommands the pages may use (vagrant 2.3)
VAGRANT_COMMANDS = ("up", "validate", "status", "ssh-config", "destroy", "halt", "provision", "ssh", "reload")


def _vagrant_check(args: list[str], cwd: Path) -> str | None:
    if not args or args[0] not in VAGRANT_COMMANDS:
        return f"vagrant: {args[:1]} is not one of {', '.join(VAGRANT_COMMANDS)}"
    names = [a for a in args[1:] if not a.startswith("-")]
    defined = re.findall(r'^\s*"([a-z0-9-]+)"\s*=>', (cwd / "Vagrantfile").read_text(), re.M)
    unknown = [n for n in names if n not in defined]
    return f"vagrant: no machine {unknown} in the Vagrantfile" if unknown else None


# --- running ---------------------------------------------------------------------------------------------------

def checkout(tmp: Path) -> Path:
    """A directory that looks like a fresh clone for a newcomer: every top-level entry of the repository linked,
    except the lab's state (``.lab``) and files a command writes, which land in ``tmp`` itself."""
    tmp.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name in (".lab", ".git", ".tierfleet", ".ansible") or (tmp / entry.name).exists():
            continue
        (tmp / entry.name).symlink_to(entry)
    return tmp


def environment(cwd: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["TIERFLEET_LAB_DIR"] = str(cwd / ".lab")
    env.update(extra)
    return env


def run(command: Command, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command as a newcomer pastes it into bash in ``cwd``; stdout and stderr merged."""
    return subprocess.run(["bash", "-c", command.text], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
