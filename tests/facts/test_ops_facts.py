"""The ops daemon facts, run for real by sh: the installed version without starting the program, the Python
version without starting Python, and hostile paths treated as data."""

from __future__ import annotations

import subprocess
import sys

from tierfleet.facts.ops import OpsInstalled, PythonVersion


def _run(command: str) -> list[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines()


def _venv(root, version="0.1.0"):
    site = root / "lib" / "python3.11" / "site-packages" / f"tierfleet_ops-{version}.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tierfleet-ops\nVersion: {version}\n\n"
                                   "Version: 9.9.9 (a line of the description)\n")
    (root / "bin").mkdir()
    for prog in ("tierfleet-ops", "python3"):
        (root / "bin" / prog).write_text("#!/bin/sh\nexit 1\n")
        (root / "bin" / prog).chmod(0o755)
    return root


def test_ops_installed_reads_the_metadata(tmp_path):
    venv = _venv(tmp_path / "venv")
    fact = OpsInstalled()
    assert fact.process(_run(fact.command(str(venv)))) == "0.1.0"


def test_ops_installed_needs_the_program_and_python(tmp_path):
    venv = _venv(tmp_path / "venv")
    (venv / "bin" / "tierfleet-ops").unlink()
    fact = OpsInstalled()
    assert fact.process(_run(fact.command(str(venv)))) is None
    assert fact.process(_run(fact.command(str(tmp_path / "missing")))) is None


def test_ops_installed_hostile_path(tmp_path):
    marker = tmp_path / "pwned"
    venv = _venv(tmp_path / f"v'; touch {marker}; echo '$(touch {marker})")
    fact = OpsInstalled()
    assert fact.process(_run(fact.command(str(venv)))) == "0.1.0"
    assert not marker.exists()


def test_python_version_matches_python():
    fact = PythonVersion()
    real = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True).stdout.strip()
    assert fact.process(_run(fact.command())) == real


def test_python_version_of_an_unversioned_python(tmp_path):
    """A ``python3`` whose name carries no version (a shim) is asked for it."""
    shim = tmp_path / "python3"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    fact = PythonVersion()
    out = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout.splitlines()
    assert fact.process(out) == "%d.%d" % sys.version_info[:2]
