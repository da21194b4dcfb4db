"""Fixtures for the lab tests.

Fast tests (no marker) run the stand-ins and the dressing on temporary trees. Tests marked
``lab`` use one real lab fleet per session (root, systemd-nspawn; ``lab up`` installs what it
needs), in its own state dir and on its own addresses (127.0.0.101 onwards; with
``$TIERFLEET_LAB_ADDR_BASE`` set, the same last octets in that address's /24, so two checkouts
testing on one machine do not collide).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tierfleet.lab import dress
from tierfleet.lab.profiles import PROFILES
from tierfleet.lab.runner import run_pyinfra
from tierfleet.lab.spec import block_address

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # tests/lab is no package: make the shared test helpers (tests.*) importable
    sys.path.insert(0, str(REPO))
STANDINS = REPO / "tierfleet" / "lab" / "stand-ins"
RECORDINGS = REPO / "tierfleet" / "lab" / "recordings"
#: one host per profile, named after it
SESSION_SPEC = [(name, name) for name in PROFILES]
#: the session fleet's addresses: .101 onwards in the checkout's address block
SESSION_ADDR_BASE = block_address(100)


def pyinfra(lab, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``pyinfra -y inventory/lab.py ARGS`` against ``lab``, under an outer timeout, output merged."""
    return run_pyinfra("-y", "inventory/lab.py", *args, lab_dir=lab.root, timeout=timeout)


def make_root(tmp: Path, profile_name: str) -> Path:
    """A directory laid out like a lab host's / for the stand-ins (dressed /sys and /proc, profile)."""
    import json

    from tierfleet.lab import jetson

    profile = PROFILES[profile_name]
    root = tmp / profile_name
    tree = dress.dress_tree(profile)
    dress.write_tree(root, tree, real_sys_class=None)
    # the in-host copy of the /proc dressing, as lab hosts have it
    dress.write_tree(root / "usr/lib/tierfleet-lab/dress",
                     {k: v for k, v in tree.items() if k.startswith("proc/")}, real_sys_class=None)
    share = root / "usr/share/tierfleet-lab"
    (share / "nvml").mkdir(parents=True)
    (share / "profile.json").write_text(json.dumps(profile.to_json()))
    for rec in RECORDINGS.iterdir():
        (share / "nvml" / rec.name).write_bytes(rec.read_bytes())
    if profile.jetson:
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/nvpmodel.conf").write_text(jetson.nvpmodel_conf(profile.jetson))
        (root / "etc/nvpmodel").mkdir()
        for conf in jetson.MODES:
            if conf.startswith(profile.jetson.nvpmodel_conf):
                (root / f"etc/nvpmodel/nvpmodel_{conf}.conf").write_text(jetson.nvpmodel_conf(profile.jetson, conf))
        (root / "root").mkdir(exist_ok=True)
    return root


@pytest.fixture
def standin(tmp_path):
    """run(profile, tool, *args) -> CompletedProcess, on a fresh dressed tree per profile."""
    roots: dict[str, Path] = {}

    def run(profile_name: str, tool: str, *args: str) -> subprocess.CompletedProcess:
        if profile_name not in roots:
            roots[profile_name] = make_root(tmp_path, profile_name)
        env = dict(os.environ, TIERFLEET_LAB_STANDIN_ROOT=str(roots[profile_name]),
                   HOME="/root",
                   PATH=f"{STANDINS}:{os.environ.get('PATH', '')}")
        return subprocess.run([sys.executable, str(STANDINS / tool), *args], capture_output=True, text=True,
                              env=env)

    run.roots = roots
    return run


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The session's lab fleet: one host per profile, brought up once and down at the end."""
    _need_root()
    from tierfleet.lab.fleet import Lab

    root = tmp_path_factory.mktemp("lab")
    saved = {k: os.environ.get(k) for k in ("TIERFLEET_LAB_DIR", "TIERFLEET_LAB_ADDR_BASE")}
    os.environ["TIERFLEET_LAB_DIR"] = str(root)
    os.environ["TIERFLEET_LAB_ADDR_BASE"] = SESSION_ADDR_BASE
    the_lab = Lab(root)
    try:
        the_lab.up(SESSION_SPEC)
        yield the_lab
    finally:
        the_lab.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def ssh(lab):
    """ssh(host, command) -> CompletedProcess over real SSH with the lab's ssh_config."""

    def run(host: str, command: str, timeout: float = 60, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(lab.root / "ssh_config"), *extra, host, command],
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def testinfra_host(lab):
    import testinfra

    hosts = {}

    def get(name: str):
        if name not in hosts:
            hosts[name] = testinfra.get_host(f"ssh://{name}", ssh_config=str(lab.root / "ssh_config"))
        return hosts[name]

    return get
