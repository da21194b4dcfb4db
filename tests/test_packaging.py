"""Both packages as users get them: built as wheels (not editable), installed into fresh virtual environments.

A plain ``pip install`` of the control package must bring the ops package with it (placement and the Jetson
mode facts use its rules), and the ops package must run on Python 3.10 without pyinfra or tierfleet. The
dependencies' wheels are downloaded once into ``.cache/test-wheels/`` and installed offline from there.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
WHEEL_CACHE = REPO / ".cache" / "test-wheels"


def _run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, **kw)


def _venv(path: Path, python: str) -> Path:
    _run([python, "-m", "venv", path]).check_returncode()
    return path / "bin"


def _install(bindir: Path, *args, find_links: tuple[Path, ...] = ()) -> None:
    """``pip install`` offline from the wheel cache; fill the cache from the index once when it lacks something."""
    tag = _run([bindir / "python", "-c", "import sys; print(f'py{sys.version_info[0]}{sys.version_info[1]}')"])
    cache = WHEEL_CACHE / tag.stdout.strip()
    cache.mkdir(parents=True, exist_ok=True)
    links = [x for d in (*find_links, cache) for x in ("--find-links", d)]
    offline = [bindir / "python", "-m", "pip", "install", "-q", "--no-index", *links, *args]
    if _run(offline).returncode == 0:
        return
    fetch = _run([bindir / "python", "-m", "pip", "download", "-q", "-d", cache, *links[:-2], *args])
    for own in cache.glob("tierfleet*"):  # only dependencies are cached: this checkout's wheels are built fresh
        own.unlink()
    assert fetch.returncode == 0, f"pip download {args}: {fetch.stderr[-3000:]}"
    done = _run(offline)
    assert done.returncode == 0, done.stderr[-3000:]


def _python310() -> str | None:
    """A working Python 3.10 (on PATH, or a pyenv build; pyenv's shim fails when 3.10 is not selected)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")), reverse=True)
    for python in [shutil.which("python3.10"), *candidates]:
        if python and _run([python, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 10)"]).returncode == 0:
            return python
    return None


def test_control_package_pins_the_ops_package_it_is_released_with():
    control = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ops = tomllib.loads((REPO / "ops" / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in control["dependencies"]]
    pins = [r for r in reqs if r.name == ops["name"]]
    assert len(pins) == 1 and str(pins[0].specifier) == f"=={ops['version']}", pins
    assert not any(r.name.startswith(("pyinfra", "tierfleet")) for r in map(Requirement, ops["dependencies"]))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path]:
    """(a fresh venv's bin dir with setuptools, the dir holding both packages' wheels) built from a copy of
    the sources, so the build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("tierfleet", "ops"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist"))
    bindir = _venv(tmp / "build-venv", sys.executable)
    _install(bindir, "setuptools>=77")
    dist = tmp / "dist"
    built = _run([bindir / "python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", dist, src / "ops", src])
    assert built.returncode == 0, built.stderr[-3000:]
    return tmp, dist


CHECK_CONTROL = """
import importlib.metadata as md, json, sys
import tierfleet, tierfleet_ops
import tierfleet.deploys.tier
from tierfleet.artifacts.wheelhouse import ops_version
from tierfleet.deploys.tier import TEMPLATES
from tierfleet.placement import place
hybrid = {"online": list(range(20)), "packages": 1, "numa_nodes": {0: list(range(20))}, "capacity": {}, "smt": True,
          "cores": [[2 * k, 2 * k + 1] for k in range(6)] + [[c] for c in range(12, 20)],
          "efficiency": list(range(12, 20))}
p = place(hybrid, None)
print(json.dumps({"files": [tierfleet.__file__, tierfleet_ops.__file__], "prefix": sys.prefix,
                  "requires": md.requires("tierfleet"), "cpus": list(p.cpus), "threads": p.threads,
                  "templates": sorted(t.name for t in TEMPLATES.glob("*.j2")), "ops_version": ops_version()}))
"""


def test_control_wheel_installs_the_ops_wheel_and_the_tier_deploy_places(wheels):
    tmp, dist = wheels
    control = next(dist.glob("tierfleet-*.whl"))
    bindir = _venv(tmp / "control-venv", sys.executable)
    # only the control wheel is named: the ops wheel must come in as its declared dependency
    _install(bindir, control, find_links=(dist,))
    run = _run([bindir / "python", "-I", "-c", CHECK_CONTROL], cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    site = str(tmp / "control-venv")
    assert all(f.startswith(site) for f in got["files"]), got["files"]  # the wheels, not this checkout
    assert any(r.startswith("tierfleet-ops==") for r in got["requires"])
    assert (got["cpus"], got["threads"]) == (list(range(12)), 6)
    # what the tier deploy reads from its own package: the templates it renders and the ops version it installs
    assert got["templates"] == sorted(t.name for t in (REPO / "templates").glob("*.j2"))
    assert got["ops_version"] == tomllib.loads((REPO / "ops" / "pyproject.toml").read_text())["project"]["version"]


CHECK_OPS = """
import importlib, json, pkgutil, sys
import tierfleet_ops
for m in pkgutil.walk_packages(tierfleet_ops.__path__, "tierfleet_ops."):
    if not m.name.endswith("__main__") and ".testing." not in m.name:
        importlib.import_module(m.name)
from tierfleet_ops.topology import Cpu, Topology, choose_cores
cpus = {c: Cpu(c, (c,), capacity=1024 if c < 4 else 446) for c in range(8)}
p = choose_cores(Topology(cpus, list(range(8))))
bad = sorted(n for n in sys.modules if n.split(".")[0] in ("pyinfra", "tierfleet"))
print(json.dumps({"version": list(sys.version_info[:2]), "bad": bad, "inference": p.inference, "threads": p.threads}))
"""


def test_ops_wheel_runs_on_python_310_without_the_control_side(wheels):
    python = _python310()
    if python is None:
        pytest.skip("no python3.10 interpreter here (PATH or ~/.pyenv/versions/3.10*)")
    tmp, dist = wheels
    bindir = _venv(tmp / "ops-venv", python)
    _install(bindir, next(dist.glob("tierfleet_ops-*.whl")), find_links=(dist,))
    run = _run([bindir / "python", "-I", "-c", CHECK_OPS], cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    assert got == {"version": [3, 10], "bad": [], "inference": [0, 1, 2, 3], "threads": 4}
