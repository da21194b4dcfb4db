"""The ops daemon as an artifact: a tarball of wheels (tierfleet-ops and its dependencies) per Python and arch.

Hosts install it offline (``pip install --no-index --find-links``) into their own venv, so a fleet needs
no PyPI access. Published as name ``tierfleet-ops``, version ``<version>+py<major><minor>-<machine>``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tierfleet.artifacts.manifest import Manifest, publish

NAME = "tierfleet-ops"
OPS_DIR = Path(__file__).resolve().parents[2] / "ops"


def ops_version(ops_dir: Path = OPS_DIR) -> str:
    """The ops daemon's version: ``ops/pyproject.toml`` in a checkout, else the installed ``tierfleet-ops``
    (the control package pins the one it is released with)."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    project = ops_dir / "pyproject.toml"
    if project.is_file():
        return tomllib.loads(project.read_text())["project"]["version"]
    try:
        return version(NAME)
    except PackageNotFoundError:
        raise FileNotFoundError(f"{project} is missing and {NAME} is not installed") from None


def release_name(version: str, python: str, machine: str) -> str:
    """Store version of a wheelhouse for a host's Python (``3.11``) and machine (``x86_64``).

    >>> release_name("0.1.0", "3.11", "x86_64")
    '0.1.0+py311-x86_64'
    """
    return f"{version}+py{python.replace('.', '')}-{machine}"


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def pack_ops(store: Path, ops_dir: Path = OPS_DIR) -> Manifest:
    """Build wheels of the ops daemon and its dependencies for this interpreter and publish them."""
    version = release_name(ops_version(ops_dir), f"{sys.version_info.major}.{sys.version_info.minor}",
                           platform.machine())
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        # SOURCE_DATE_EPOCH: the same sources build the same wheel bytes, so re-publishing is a no-op
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(ops_dir)],
            check=True, env=env,
        )
        tarball = Path(tmp) / f"{NAME}-{version}.tar"
        with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
            for wheel in sorted(wheels.iterdir()):
                tar.add(wheel, arcname=f"wheels/{wheel.name}", filter=_tar_filter)
        return publish(store, [tarball], kind="runtime", name=NAME, version=version, compress=True)
