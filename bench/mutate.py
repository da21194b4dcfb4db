"""Mutation testing of the safety-critical modules: would their own tests notice a small bug?

Usage::

    .venv/bin/python bench/mutate.py                      # every module below (what `make mutate` runs)
    .venv/bin/python bench/mutate.py -m selector -m release --sample 30 --seed 7
    .venv/bin/python bench/mutate.py -m selector --all          # every candidate, not a sample
    .venv/bin/python bench/mutate.py --base main -m release     # the files of a git revision (a "before")
    .venv/bin/python bench/mutate.py -m selector --list         # the candidates, nothing run
    .venv/bin/python bench/mutate.py -m selector --show 3fa2c1d9e0   # one mutant as a diff

A mutant is one small change made at the AST level to one module: a comparison, boolean or arithmetic
operator swapped, one operand of an ``and``/``or`` dropped, a condition negated, a constant changed, a
regular expression widened or narrowed, a method swapped (``fullmatch`` -> ``match``), a flag added to or
dropped from an ``os.open`` (``O_CREAT``), a raised error class swapped, an ``except OSError`` narrowed, or a
statement deleted. Docstrings, f-strings, annotations (``TypedDict`` field declarations among them), imports and
logging arguments are left alone.

The candidates of a module are listed in source order and a sample seeded by ``--seed`` and the module's name
(60 by default; every candidate for the allowlist) is tried, one mutant at a time, on a copy of the working
tree (tracked and untracked, not ignored, files) or of ``--base``: the module's own tests run with
``pytest -x -q`` under a time limit (5 x the unmutated run, at least 60 s), each run in a child forked from a
process that has imported pytest and the large libraries but nothing of the project. A mutant is *killed*
when the tests fail or time out, *survived* when they pass: a bug the tests would not notice.

Prints, per module, the score (killed / tried) and every surviving mutant as ``file:line [id] kind: change``;
ids listed in :data:`EQUIVALENT` (changes no input can tell from the original) are shown with the reason and
left out of the adjusted score. The working tree itself is never modified. Not part of ``make test``: minutes
per module on two cores.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import glob
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """One module under test: its file, the pytest targets that are its own tests, an optional scope."""

    name: str
    path: str
    tests: tuple[str, ...]
    #: top-level names (functions, classes, assigned constants) whose code is mutated; empty: the whole file
    scope: tuple[str, ...] = ()
    #: try every candidate, never a sample (small, security-relevant code)
    exhaustive: bool = False


def _doctest(module: str) -> str:
    return f"tests/ops/test_doctests.py::test_docstring_examples[{module}]"


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sysfs-allowlist", "ops/tierfleet_ops/sysfs.py",
           ("tests/ops/test_sysfs*.py", "tests/ops/test_cpufreq.py", _doctest("tierfleet_ops.sysfs")),
           scope=("WRITABLE", "SYSFS_MAGIC", "fs_magic", "is_writable", "Sysfs"), exhaustive=True),
    Target("selector", "ops/tierfleet_ops/selector.py",
           ("tests/ops/test_selector*.py", "tests/ops/test_policy.py", _doctest("tierfleet_ops.selector"))),
    Target("topology", "ops/tierfleet_ops/topology.py",
           ("tests/ops/test_topology*.py", _doctest("tierfleet_ops.topology"))),
    Target("preflight", "tierfleet/preflight.py", ("tests/test_preflight*.py", "tierfleet/preflight.py")),
    Target("release", "tierfleet/operations/release.py",
           # the fast spec tests first: with -x most mutants are killed before the slower local runs start
           ("tests/operations/test_release_specs.py", "tests/operations/test_release_facts.py",
            "tests/operations/test_release_*.py", "tierfleet/operations/release.py")),
)}

#: further modules, run only when named with ``-m``
EXTRA: dict[str, Target] = {t.name: t for t in (
    Target("sysfs-cpulist", "ops/tierfleet_ops/sysfs.py",
           ("tests/ops/test_sysfs*.py", "tests/ops/test_topology*.py", _doctest("tierfleet_ops.sysfs")),
           scope=("parse_cpulist", "format_cpulist")),
    Target("cpu-facts", "tierfleet/facts/cpu.py",
           ("tests/facts/test_fact_specs.py", "tests/facts/test_cpu*.py", "tierfleet/facts/cpu.py")),
    Target("nvidia-facts", "tierfleet/facts/nvidia.py",
           ("tests/facts/test_fact_specs.py", "tests/facts/test_cpu_nvidia_parsers.py", "tests/facts/test_hostile_output.py",
            "tierfleet/facts/nvidia.py")),
    Target("rules", "tierfleet/rules.py",
           ("tests/test_inventory_validation.py", "tests/operations/test_release_choices.py", "tierfleet/rules.py")),
)}

#: surviving mutants judged equivalent (no input can tell them from the original): id -> why
EQUIVALENT: dict[str, str] = {
    # sysfs.is_writable: the absolute-path test is defence in depth. Every pattern begins with a literal
    # "devices/" or "class/" and is matched with fullmatch, so no string starting with "/" can pass them.
    "7f4df09748": "startswith('/') -> endswith('/'): no pattern matches a leading '/', and none a trailing one",
    "cfad66c4e6": "absolute-path test dropped: no pattern can match a string that starts with '/'",
    "e9fca90f59": "startswith('/') -> startswith('XX/XX'): no pattern can match a string that starts with '/'",
    "89d0ad26ae": "str.split -> str.rsplit without maxsplit: the same list",
    # sysfs.fs_magic: the ctypes prototype restates the defaults: an int argument is passed as a C int, a
    # string buffer as a pointer, and the result is a C int unless restype says otherwise
    "2a8eeb8d57": "fstatfs argtypes deleted: ctypes passes an int as c_int and a buffer as a pointer anyway",
    "f2388ce14c": "fstatfs restype deleted: c_int is ctypes' default result type",
    "f24dd473c3": "statfs buffer 512 -> 513 bytes: struct statfs is 120 bytes (64-bit), either size holds it",
    # sysfs.Sysfs.read: the last statement of the except block; falling off the end also returns None
    "2c8712501a": "'return None' deleted at the end of the function: the implicit return is None",
    # selector.by_load: range(i + 1, ...) -> range(i, ...) adds the current level to the 'higher' candidates;
    # it qualifies only when load >= up[current], where (down < up, checked by parse_policy) the down rule
    # cannot fire either, so the current level is returned both ways; order[0] never has an 'up'
    "2262a43867": "the current level among the 'higher' ones: returned only when it would be kept anyway",
    # selector.want: a profile outside `order` has level 0 (_level), never above a cap's, so the cap rule's
    # "d.profile in self.order" never decides
    "01932a3aaf": "'in order' dropped from the cap rule: an out-of-order profile is level 0, never above a cap",
    # topology.read_topology: a capacity <= 0 is replaced by 1024 on the next line, so a missing or unreadable
    # cpu_capacity read as 0 ends up 1024 as well
    # topology.choose_cores: `[c for c in rest if c in fast] or rest` never needs its fallback. The reserved cores
    # are the first `want` by os_rank, which puts the n - f cores outside `fast` first, so at most
    # max(0, want - (n - f)) fast cores are reserved, fewer than f because want <= n // 2 < n; the one-core SMT case
    # reserves one sibling and leaves the others, which are in `fast`
    "046157786d": "'or rest' dropped from the inference choice: some fast core is always left unreserved",
    "c031da4fb3": "cpu_capacity's default 1024 -> 0: a capacity of 0 is replaced by 1024 right after",
    # sysfs.Sysfs._write_file: os.open makes non-inheritable descriptors anyway (PEP 446), with or without the flag
    "38a2d2ac52": "O_CLOEXEC dropped from the write's open flags: Python's os.open sets close-on-exec itself",
    # facts/cpu.py: TypedDict fields are annotations only (the dicts are built with their keys all the same);
    # _NODE_RE and _POLICY_RE begin with '^', so match and search agree, and '.*^' can only match empty at 0
    "33b69bbd86": "a TypedDict field declaration deleted: annotations only, the dict keeps its keys",
    "47f86268a6": "a TypedDict field declaration deleted: annotations only, the dict keeps its keys",
    "ff56ad4b0b": "a TypedDict field declaration deleted: annotations only, the dict keeps its keys",
    "37bacc4f69": "a TypedDict field declaration deleted: annotations only, the dict keeps its keys",
    "2079c67a94": "_NODE_RE.match -> search: the pattern begins with '^'",
    "4878027b7d": "'.*' before '^' in _POLICY_RE: without MULTILINE '^' only matches at 0, so '.*' matches empty",
    "7b85462b93": "str.split() -> str.rsplit() without arguments: the same list",
    "d07f03fa55": "str.split() -> str.rsplit() without arguments: the same list",
    # facts/nvidia.py: Gpu's TypedDict fields are annotations only; _na is only given fields parse_gpu_line has
    # already stripped; _LIBRARY_RE begins with '^'
    **{i: "a TypedDict field declaration deleted: annotations only, the dict keeps its keys"
       for i in ("d031458f3c", "7947de365a", "8fa294af9b", "19f04f7882", "61f8389297", "d1aaf297bf", "3f904b34b0")},
    "7c61fc7cb7": "'.*' after the '$' of _LSPCI_RE: the line is stripped, so '$' is its end and '.*' matches empty",
    "e1ab56387a": "_na's strip -> rstrip: every field it is given was stripped by parse_gpu_line already",
    "ccca722e4f": "_LIBRARY_RE.match -> search: the pattern begins with '^'",
    "9432c8b412": "_LSPCI_RE.match -> search: the pattern begins with '^'",
    "2ebe8f6d49": "_SYSFS_PCI_RE.match -> search: the pattern begins with '^'",
    "aa88e65f2d": "_SYSFS_PCI_RE.match -> fullmatch: the pattern ends with '$' and the line is stripped",
    "b9f57df456": "_na's strip deleted: every field it is given was stripped by parse_gpu_line already",
    "df4cc944eb": "'.*' after the last '\\s' of _NVRM_RE: searched, so a suffix that matches anything changes nothing",
    "b0d8ca571d": "modinfo's empty output '' -> 'XXXX': neither is a version, both give None",
    "52dec502f7": "_NODE_RE.match -> fullmatch: the pattern ends with '$' and grep's paths carry no newline",
    # release.artifact's space estimate: need // 1024 + 1 KiB; one more byte per file changes it only when the
    # free space is within a KiB of the data, where the install cannot fit anyway (files take whole blocks,
    # and the manifest needs one more)
    "f1cf17e27d": "one byte per file added to the space estimate: never decides an install that could fit",
}


# --- mutants ----------------------------------------------------------------------------------------------

@dataclass
class Mutant:
    path: str
    line: int
    #: 0-based character offsets of the replaced span in the source
    start: int
    end: int
    replacement: str
    kind: str
    original: str = ""
    #: the source line, so that an id survives edits elsewhere in the file
    context: str = ""
    id: str = field(default="", init=False)

    def identify(self, occurrence: int) -> None:
        """A short id from the change, its line and how many identical changes precede it in the file."""
        self.id = hashlib.sha256(f"{self.path}\0{self.original}\0{self.replacement}\0{self.kind}\0"
                                 f"{self.context}\0{occurrence}".encode()).hexdigest()[:10]

    def apply(self, source: str) -> str:
        return source[:self.start] + self.replacement + source[self.end:]

    def describe(self) -> str:
        def short(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= 90 else text[:87] + "..."
        if self.kind == "delete":
            return f"delete `{short(self.original)}`"
        return f"`{short(self.original)}` -> `{short(self.replacement)}`"


CMP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
}
BIN_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.Div,), ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Mult,), ast.Mod: (ast.FloorDiv,), ast.Pow: (ast.Mult,), ast.BitOr: (ast.BitAnd,),
    ast.BitAnd: (ast.BitOr,), ast.LShift: (ast.RShift,), ast.RShift: (ast.LShift,),
}
METHOD_SWAPS = {
    "fullmatch": ("match", "search"), "match": ("fullmatch", "search"), "search": ("match",),
    "startswith": ("endswith",), "endswith": ("startswith",), "strip": ("rstrip",), "rstrip": ("lstrip",),
    "lstrip": ("rstrip",), "split": ("rsplit",), "rsplit": ("split",),
}
NAME_SWAPS = {"any": "all", "all": "any", "min": "max", "max": "min"}
RE_FUNCS = {"compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer"}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    out: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            out[child] = node
    return out


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    expr = parents.get(node)
    if not isinstance(expr, ast.Expr):
        return False
    body = parents.get(expr)
    return (isinstance(body, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body.body and body.body[0] is expr)


def _excluded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a docstring, an f-string, an annotation, a decorator, an import or a logging call."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.JoinedStr):
            return True
        if isinstance(cur, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(cur, ast.arg) and child is cur.annotation:
            return True
        if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                child is cur.returns or child in cur.decorator_list):
            return True
        if isinstance(cur, ast.ClassDef) and child in cur.decorator_list:
            return True
        if isinstance(cur, ast.AnnAssign) and child is cur.annotation:
            return True
        if (isinstance(cur, ast.Call) and isinstance(cur.func, ast.Attribute)
                and isinstance(cur.func.value, ast.Name) and cur.func.value.id in ("log", "logger", "logging")):
            return True
        child, cur = cur, parents.get(cur)
    return _is_docstring(node, parents)


def _is_regex(node: ast.Constant, parents: dict[ast.AST, ast.AST]) -> bool:
    """A string given to ``re.<func>``, or an element of the tuple a ``re.compile`` comprehension walks."""
    def re_call(n: ast.AST | None) -> bool:
        return (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in RE_FUNCS
                and isinstance(n.func.value, ast.Name) and n.func.value.id == "re")
    parent = parents.get(node)
    if re_call(parent) and parent.args and parent.args[0] is node:  # type: ignore[union-attr]
        return True
    if isinstance(parent, (ast.Tuple, ast.List)):
        comp = parents.get(parents.get(parent))  # comprehension -> GeneratorExp/ListComp
        gen = parents.get(parent)
        if isinstance(gen, ast.comprehension) and gen.iter is parent and isinstance(
                comp, (ast.GeneratorExp, ast.ListComp)) and re_call(comp.elt):
            return True
    return False


def _regex_variants(rx: str) -> Iterator[tuple[str, str]]:
    """(new regex, what changed) for a regular expression's source."""
    def at(m: re.Match[str], new: str) -> str:
        return rx[:m.start()] + new + rx[m.end():]
    for m in re.finditer(r"\\[dw]", rx):
        yield at(m, "."), f"{m.group()} -> ."
    for m in re.finditer(r"(?<!\\)\[(?:\\.|[^\]])+\]", rx):
        yield at(m, "."), f"{m.group()} -> ."
        if "/" not in m.group() and not m.group().startswith("[^"):
            yield at(m, "[/" + m.group()[1:]), f"{m.group()} admits /"
    for m in re.finditer(r"(?<!\\)[+*]", rx):
        yield at(m, "*" if m.group() == "+" else "+"), f"quantifier {m.group()} swapped"
    for m in re.finditer(r"(?<!\\)\(((?:[^()|\\]|\\.)+(?:\|(?:[^()|\\]|\\.)*)+)\)", rx):
        alts = m.group(1).split("|")
        for i, alt in enumerate(alts):
            if alt:
                yield at(m, "(" + "|".join(alts[:i] + alts[i + 1:]) + ")"), f"alternative {alt!r} dropped"
        yield at(m, "(" + m.group(1) + "|[^/]+)"), "alternative [^/]+ added"
    last = re.search(r"/([A-Za-z_][A-Za-z0-9_]*)$", rx)
    if last:
        yield rx[:last.start(1)] + "[^/]+", f"last component {last.group(1)!r} -> [^/]+"
    yield ".*" + rx, "prefix .* (unanchored start)"
    yield rx + ".*", "suffix .* (unanchored end)"


def _segment(source: str, offsets: list[int], node: ast.AST) -> tuple[int, int]:
    start = offsets[node.lineno - 1] + _col(source, offsets, node.lineno, node.col_offset)
    end = offsets[node.end_lineno - 1] + _col(source, offsets, node.end_lineno, node.end_col_offset)
    return start, end


def _col(source: str, offsets: list[int], lineno: int, col: int) -> int:
    """AST columns are UTF-8 byte offsets; turn one into a character offset."""
    line = source[offsets[lineno - 1]:offsets[lineno] if lineno < len(offsets) else len(source)]
    return len(line.encode()[:col].decode(errors="ignore"))


def _in_scope(node: ast.AST, tree: ast.Module, scope: tuple[str, ...]) -> bool:
    if not scope:
        return True
    for top in tree.body:
        names: list[str] = []
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [top.name]
        elif isinstance(top, (ast.Assign, ast.AnnAssign)):
            targets = top.targets if isinstance(top, ast.Assign) else [top.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        if set(names) & set(scope) and top.lineno <= node.lineno <= top.end_lineno:
            return True
    return False


def mutants(target: Target, source: str | None = None) -> list[Mutant]:
    """Every candidate mutant of ``target``, in source order, each one parsing and changing the AST."""
    path = target.path
    source = source if source is not None else (REPO / path).read_text()
    tree = ast.parse(source)
    parents = _parents(tree)
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    error_names = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id.endswith("Error")}
                         | {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                            for a in n.names if (a.asname or a.name).endswith("Error")})
    out: list[Mutant] = []

    def expr(node: ast.AST, new: ast.AST, kind: str) -> None:
        start, end = _segment(source, offsets, node)
        out.append(Mutant(path, node.lineno, start, end, "(" + ast.unparse(new) + ")", kind,
                          original=source[start:end]))

    def swapped(node: ast.AST, **changes) -> ast.AST:
        new = copy.deepcopy(node)
        for k, v in changes.items():
            setattr(new, k, v)
        return new

    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or not _in_scope(node, tree, target.scope) or _excluded(node, parents):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for new_op in CMP_SWAPS.get(type(op), ()):
                    ops = list(node.ops)
                    ops[i] = new_op()
                    expr(node, swapped(node, ops=ops), "compare")
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            expr(node, swapped(node, op=other), "boolean")
            for i in range(len(node.values)):
                rest = node.values[:i] + node.values[i + 1:]
                new = rest[0] if len(rest) == 1 else swapped(node, values=rest)
                expr(node, new, "drop operand")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
                continue  # -1 is a constant: the constant rule changes it
            expr(node, node.operand, "unary")
        elif isinstance(node, ast.BinOp):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                continue  # "%" formatting or string concatenation
            for new_op in BIN_SWAPS.get(type(node.op), ()):
                expr(node, swapped(node, op=new_op()), "arithmetic")
            flags = _os_flags(node)
            if flags:
                expr(node, ast.BinOp(node, ast.BitOr(), ast.parse("os.O_CREAT", mode="eval").body), "open flag")
                for i in range(len(flags)):
                    rest = flags[:i] + flags[i + 1:]
                    new = ast.parse(" | ".join(ast.unparse(f) for f in rest), mode="eval").body
                    expr(node, new, "open flag")
        elif isinstance(node, ast.AugAssign) and type(node.op) in BIN_SWAPS:
            new = swapped(node, op=BIN_SWAPS[type(node.op)][0]())
            start, end = _segment(source, offsets, node)
            out.append(Mutant(path, node.lineno, start, end, ast.unparse(new), "arithmetic",
                              original=source[start:end]))
        elif isinstance(node, ast.Constant):
            _constant_mutants(node, parents, expr)
        elif isinstance(node, ast.Attribute) and node.attr in METHOD_SWAPS and isinstance(
                parents.get(node), ast.Call) and parents[node].func is node:
            for new_attr in METHOD_SWAPS[node.attr]:
                expr(node, swapped(node, attr=new_attr), "method")
        elif isinstance(node, ast.Name) and node.id in NAME_SWAPS and isinstance(
                parents.get(node), ast.Call) and parents[node].func is node:
            expr(node, ast.Name(NAME_SWAPS[node.id]), "builtin")
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(
                node.exc.func, ast.Name) and node.exc.func.id.endswith("Error"):
            others = [n for n in error_names if n != node.exc.func.id] or ["RuntimeError"]
            for other in others:
                expr(node.exc.func, ast.Name(other), "error class")
        elif isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "OSError":
            expr(node.type, ast.Name("FileNotFoundError"), "narrower except")
        if isinstance(node, (ast.If, ast.While)) and not isinstance(node.test, ast.Constant):
            expr(node.test, ast.UnaryOp(ast.Not(), node.test), "negate condition")
        if isinstance(node, ast.stmt):
            _delete(node, parents, source, offsets, out, path)
    return _valid(source, out)


def _os_flags(node: ast.BinOp) -> list[ast.AST]:
    """The ``os.O_*`` operands of a ``|`` chain (empty when it is not one)."""
    if not isinstance(node.op, ast.BitOr):
        return []
    flags: list[ast.AST] = []
    for part in (node.left, node.right):
        if isinstance(part, ast.BinOp):
            sub = _os_flags(part)
            if not sub:
                return []
            flags += sub
        elif isinstance(part, ast.Attribute) and part.attr.startswith("O_"):
            flags.append(part)
        else:
            return []
    return flags


def _constant_mutants(node: ast.Constant, parents, expr) -> None:
    v = node.value
    if isinstance(v, bool):
        expr(node, ast.Constant(not v), "constant")
    elif isinstance(v, int):
        for new in sorted({v + 1, 0 if v != 0 else 1} - {v}):
            expr(node, ast.Constant(new), "constant")
    elif isinstance(v, float):
        expr(node, ast.Constant(v + 1.0), "constant")
        if v != 0.0:
            expr(node, ast.Constant(0.0), "constant")
    elif isinstance(v, str):
        if _is_regex(node, parents):
            for rx, what in _regex_variants(v):
                try:
                    re.compile(rx)
                except re.error:
                    continue
                expr(node, ast.Constant(rx), f"regex: {what}")
        else:
            expr(node, ast.Constant("XX" + v + "XX"), "string")


DELETABLE = (ast.Expr, ast.Return, ast.Raise, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.If, ast.For,
             ast.While, ast.With, ast.Try, ast.Assert, ast.Continue, ast.Break)


def _is_typeddict_field(node: ast.stmt, parents) -> bool:
    """A bare annotation in a ``TypedDict`` class: a type declaration only (the dicts are built with their keys
    all the same), left alone like every other annotation."""
    if not isinstance(node, ast.AnnAssign) or node.value is not None:
        return False
    owner = parents.get(node)
    return isinstance(owner, ast.ClassDef) and any(
        (isinstance(b, ast.Name) and b.id == "TypedDict") or (isinstance(b, ast.Attribute) and b.attr == "TypedDict")
        for b in owner.bases)


def _delete(node: ast.stmt, parents, source: str, offsets: list[int], out: list[Mutant], path: str) -> None:
    if not isinstance(node, DELETABLE) or _is_docstring_stmt(node, parents) or _is_typeddict_field(node, parents):
        return
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return
    start, end = _segment(source, offsets, node)
    line_start = offsets[node.lineno - 1]
    indent = source[line_start:start]
    line_end = source.find("\n", end)
    line_end = len(source) if line_end < 0 else line_end
    tail = source[end:line_end]
    if indent.strip() or (tail.strip() and not tail.strip().startswith("#")):
        return  # shares its line with other code
    out.append(Mutant(path, node.lineno, start, end, "pass", "delete", original=source[start:end]))


def _is_docstring_stmt(node: ast.stmt, parents) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and _is_docstring(node.value, parents)


def _valid(source: str, cands: list[Mutant]) -> list[Mutant]:
    base = ast.dump(ast.parse(source))
    seen: set[str] = set()
    occurrences: dict[tuple[str, str, str, str], int] = {}
    out: list[Mutant] = []
    for m in sorted(cands, key=lambda m: (m.start, m.end, m.kind, m.replacement)):
        text = m.apply(source)
        try:
            dumped = ast.dump(ast.parse(text))
        except SyntaxError:
            continue
        if dumped == base or dumped in seen:
            continue
        seen.add(dumped)
        m.context = source.splitlines()[m.line - 1].strip()
        key = (m.original, m.replacement, m.kind, m.context)
        occurrences[key] = occurrences.get(key, 0) + 1
        m.identify(occurrences[key])
        out.append(m)
    return out


# --- running ----------------------------------------------------------------------------------------------

def _files() -> list[str]:
    res = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True)
    return [f for f in res.stdout.decode().split("\0") if f]


def make_copy(dest: Path, rev: str | None = None) -> None:
    """The working tree's files (tracked and untracked, not ignored), or those of ``rev``, under ``dest``."""
    if rev:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    else:
        for rel in _files():
            src = REPO / rel
            if not src.is_file() and not src.is_symlink():
                continue  # deleted in the working tree
            dst = dest / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    if (REPO / ".cache").exists():
        (dest / ".cache").symlink_to(REPO / ".cache")  # the cached llama-server build


def test_targets(target: Target, root: Path) -> list[str]:
    """The target's pytest arguments that exist under ``root``, globs expanded, each once, in order."""
    out: list[str] = []
    for pattern in target.tests:
        file_part = pattern.split("::", 1)[0]
        if glob.has_magic(file_part):
            found = sorted(str(Path(p).relative_to(root)) for p in glob.glob(str(root / file_part)))
        else:
            found = [pattern] if (root / file_part).exists() else []
        out += [f for f in found if f not in out]
    return out


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[1:] if parts[0] == "ops" else parts)


@dataclass
class Run:
    killed: bool
    seconds: float
    detail: str
    output: str = ""


#: third-party modules imported once before forking, so that each test run starts without their import time
PRELOAD = ("pytest", "yaml", "pydantic", "psutil", "jinja2", "click", "rich", "paramiko", "pyinfra.api", "pyinfra.api.operation", "pyinfra.api.operations", "pyinfra.api.connect",
           "pyinfra.connectors.local", "prometheus_client", "zstandard", "numpy", "gguf")


class Runner:
    """Runs pytest against the copy at ``root``, each run in a fresh forked child (or a new interpreter).

    Forking saves the interpreter start and the import of pytest and the big libraries on every mutant; the
    parent never imports the project, so each child imports the (mutated) modules from the copy afresh.
    """

    def __init__(self, root: Path, fork: bool = True) -> None:
        self.root = root
        self.fork = fork
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
            p for p in (str(root), str(root / "ops"), os.environ.get("PYTHONPATH", "")) if p))
        if fork:
            os.environ.update(self.env)  # for the processes the tests start
            sys.dont_write_bytecode = True
            here = str(Path(__file__).resolve().parent)
            sys.path[:] = [str(root), str(root / "ops")] + [p for p in sys.path if p != here]
            for name in PRELOAD:
                try:
                    __import__(name)
                except Exception:  # noqa: BLE001 - optional: a module that is not installed stays unloaded
                    pass
            leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tierfleet", "tierfleet_ops", "tests"))
            if leaked:
                raise SystemExit(f"the runner imported project modules before forking: {leaked}")

    def run(self, tests: list[str], timeout: float) -> Run:
        args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
        if self.fork:  # plugins the preload imported cannot have their asserts rewritten; they need not
            args[:0] = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as out:
            if self.fork:
                pid = os.fork()
                if pid == 0:  # child
                    code = 3
                    try:
                        os.setsid()
                        os.dup2(out.fileno(), 1)
                        os.dup2(out.fileno(), 2)
                        os.chdir(self.root)
                        import pytest
                        code = int(pytest.main(args))
                    finally:
                        os._exit(code)
                status = self._wait(pid, timeout)
            else:
                proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=self.root, env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                status = self._wait(proc.pid, timeout)
            seconds = time.monotonic() - t0
            if status is None:
                return Run(True, seconds, "timeout")
            out.seek(0)
            lines = out.read().decode(errors="replace").strip().splitlines()
        summary = next((ln for ln in reversed(lines) if ln.strip()), "")
        return Run(status != 0, seconds, summary, "\n".join(lines[-60:]))

    @staticmethod
    def _wait(pid: int, timeout: float) -> int | None:
        """The exit status of ``pid``, or None after killing its process group at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return None
            time.sleep(0.05)

    def check_import(self, target: Target) -> None:
        """Make sure the tests will import the copy's module, not the working tree's."""
        mod = module_name(target.path)
        res = subprocess.run([sys.executable, "-c", f"import {mod} as m; print(m.__file__)"], cwd=self.root,
                             env=self.env, capture_output=True, text=True, check=True)
        got = Path(res.stdout.strip()).resolve()
        if got != (self.root / target.path).resolve():
            raise SystemExit(f"{mod} resolves to {got}, not to the copy under {self.root}")


def run_target(target: Target, sample: int | None, seed: int, runner: Runner, verbose: bool,
               only: list[str] | None = None) -> dict:
    root = runner.root
    source = (root / target.path).read_text()
    cands = mutants(target, source)
    if target.exhaustive:
        sample = None
    chosen = cands if sample is None or sample >= len(cands) else sorted(
        random.Random(f"{seed}:{target.name}").sample(cands, sample), key=lambda m: (m.start, m.end))
    if only:
        chosen = [m for m in cands if m.id in only]
    tests = test_targets(target, root)
    print(f"\n== {target.name}: {target.path}, {len(cands)} candidates, trying {len(chosen)}"
          f"{'' if sample is None else f' (seed {seed})'}\n   tests: {' '.join(tests)}", flush=True)
    runner.check_import(target)
    base = runner.run(tests, timeout=900)
    if base.killed:
        raise SystemExit(f"{base.output}\n{target.name}: the tests fail without any mutant: {base.detail}")
    limit = max(60.0, 5 * base.seconds)  # generous: other work on a shared machine slows runs down
    print(f"   baseline: {base.detail} ({base.seconds:.1f} s); limit per mutant {limit:.0f} s", flush=True)
    dest = root / target.path
    survivors: list[Mutant] = []
    timeouts: list[Mutant] = []
    try:
        for i, m in enumerate(chosen, 1):
            dest.write_text(m.apply(source))
            res = runner.run(tests, limit)
            if not res.killed:
                survivors.append(m)
            elif res.detail == "timeout":
                timeouts.append(m)
            if verbose or not res.killed:
                state = ("timeout" if res.detail == "timeout" else "killed ") if res.killed else "SURVIVED"
                why = f"  ({res.detail})" if res.killed and verbose else ""
                print(f"   [{i:>3}/{len(chosen)}] {state} {res.seconds:5.1f} s {Path(m.path).name}:{m.line} "
                      f"[{m.id}] {m.kind}: {m.describe()}{why}",
                      flush=True)
    finally:
        dest.write_text(source)
    equivalent = [m for m in survivors if m.id in EQUIVALENT]
    killed = len(chosen) - len(survivors)
    result = {"name": target.name, "tried": len(chosen), "killed": killed, "equivalent": len(equivalent),
              "candidates": len(cands)}
    print(f"   score: {killed}/{len(chosen)} = {_pct(killed, len(chosen))}"
          + (f" ({len(timeouts)} killed by the time limit: {', '.join(m.id for m in timeouts)})"
             if timeouts else ""), end="")
    if equivalent:
        print(f"; without {len(equivalent)} equivalent: {killed}/{len(chosen) - len(equivalent)} = "
              f"{_pct(killed, len(chosen) - len(equivalent))}", end="")
    print()
    if survivors:
        print("   surviving mutants:")
        for m in survivors:
            why = f"\n        equivalent: {EQUIVALENT[m.id]}" if m.id in EQUIVALENT else ""
            print(f"     {m.path}:{m.line} [{m.id}] {m.kind}: {m.describe()}{why}")
    return result


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f} %" if b else "n/a"


def show(target: Target, mid: str) -> None:
    source = (REPO / target.path).read_text()
    for m in mutants(target, source):
        if m.id == mid:
            sys.stdout.writelines(difflib.unified_diff(
                source.splitlines(keepends=True), m.apply(source).splitlines(keepends=True),
                f"a/{m.path}", f"b/{m.path}"))
            return
    raise SystemExit(f"no mutant {mid} in {target.name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    every = {**TARGETS, **EXTRA}
    ap.add_argument("-m", "--module", action="append", choices=sorted(every),
                    help="module to test (repeatable; default: " + ", ".join(TARGETS) + ")")
    ap.add_argument("--sample", type=int, default=60, help="mutants tried per module (default 60)")
    ap.add_argument("--all", action="store_true", help="try every candidate instead of a sample")
    ap.add_argument("--seed", type=int, default=1, help="sampling seed (default 1)")
    ap.add_argument("--list", action="store_true", help="list the candidates and stop")
    ap.add_argument("--show", metavar="ID", help="print one mutant as a diff and stop")
    ap.add_argument("--only", metavar="ID", action="append", help="try only this mutant (repeatable)")
    ap.add_argument("--base", metavar="REV", help="test the files of a git revision instead of the working tree")
    ap.add_argument("--no-fork", action="store_true", help="start a new interpreter for every test run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mutant, not only survivors")
    args = ap.parse_args(argv)
    targets = [every[n] for n in (args.module or TARGETS)]
    if args.show:
        for t in targets:
            try:
                return show(t, args.show) or 0
            except SystemExit:
                continue
        raise SystemExit(f"no mutant {args.show}")
    if args.list:
        for t in targets:
            cands = mutants(t)
            print(f"== {t.name}: {len(cands)} candidates")
            for m in cands:
                print(f"  {Path(m.path).name}:{m.line} [{m.id}] {m.kind}: {m.describe()}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="tierfleet-mutate-") as tmp:
        root = Path(tmp)
        make_copy(root, args.base)
        runner = Runner(root, fork=not args.no_fork)
        for t in targets:
            results.append(run_target(t, None if args.all else args.sample, args.seed, runner,
                                      args.verbose or bool(args.only), args.only))
        if not args.module and not args.only:  # a full run: equivalent ids whose line changed must be judged again
            known = {m.id for t in TARGETS.values() for m in mutants(t, (root / t.path).read_text())}
            stale = sorted(set(EQUIVALENT) - known)
            if stale:
                print(f"\nequivalent ids no longer produced (their line changed; judge again): {', '.join(stale)}")
    print(f"\n{'module':<18} {'tried':>5} {'killed':>6} {'score':>6} {'w/o equivalent':>15}")
    for r in results:
        adj = _pct(r["killed"], r["tried"] - r["equivalent"]) if r["equivalent"] else ""
        print(f"{r['name']:<18} {r['tried']:>5} {r['killed']:>6} {_pct(r['killed'], r['tried']):>6} {adj:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
