"""``molecule test`` (molecule/default) end to end on its own lab: every step's result, and an idempotence step
that fails when pyinfra really changed something (the "changed" it reports is pyinfra's, never forced)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
STEPS = ("destroy", "syntax", "create", "converge", "idempotence", "verify")


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def molecule(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from tierfleet.artifacts.llama_build import cached_runtime

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        pytest.skip("no llama-server build under .cache/runtime: run `tierfleet lab publish` once (builds it)")
    # a short directory: ssh's ControlPath (<lab>/cm-<40 hex>) must fit a unix socket's 107 bytes
    ephemeral = Path(tempfile.mkdtemp(prefix="tfm-"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral),
           "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"}
    env.pop("TIERFLEET_LAB_DIR", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "molecule"), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1800)
        return subprocess.CompletedProcess(done.args, done.returncode, plain(done.stdout))

    run.lab = ephemeral / "lab"
    yield run
    run("destroy")
    shutil.rmtree(ephemeral, ignore_errors=True)


def recaps(output: str) -> list[int]:
    """The ``changed=`` count of every PLAY RECAP line for localhost, in order."""
    return [int(n) for n in re.findall(r"localhost\s+: ok=\d+\s+changed=(\d+)", output)]


def test_molecule_test_converges_is_idempotent_verifies_and_destroys(molecule):
    done = molecule("test", "--destroy=never", "--report")
    out = done.stdout
    assert done.returncode == 0, out[-6000:]
    for step in STEPS:
        # molecule draws the arrow as "➜" on a UTF-8 terminal and as ">" otherwise
        assert re.search(rf"default (?:➜|>) {step}: Executed: Successful", out), (step, out[-6000:])
    # create (changed=1), converge (changed=1), idempotence (changed=0); the first destroy has nothing to do
    # (changed=0) or is skipped by molecule when no instance was ever created (no recap)
    counts = recaps(out)
    assert counts[-3:] == [1, 1, 0] and not any(counts[:-3]), counts
    assert re.search(r"Grand total\s+\d+\s+[1-9]", out)  # the first converge changed something, as pyinfra counted
    verified = re.search(r"(\d+) passed", out)
    assert verified and int(verified.group(1)) == 6, out[-3000:]

    # a host changed behind molecule's back: the next converge changes it back, and idempotence says so
    ssh = ["ssh", "-F", str(molecule.lab / "ssh_config"), "cpu-server"]
    subprocess.run([*ssh, "rm", "/etc/tierfleet-ops/policy.yaml"], check=True, timeout=60)
    again = molecule("idempotence")
    assert again.returncode != 0
    assert "Idempotence test failed because of the following tasks:" in again.stdout
    assert "=> pyinfra -y inventory/lab.py deploys/tier_basic.py" in again.stdout  # the task that changed
    assert molecule("verify").returncode == 0

    gone = molecule("destroy")
    assert gone.returncode == 0, gone.stdout[-3000:]
    status = subprocess.run([str(BIN / "tierfleet"), "lab", "status", "--json"], capture_output=True, text=True,
                            env={**os.environ, "TIERFLEET_LAB_DIR": str(molecule.lab)})
    assert json.loads(status.stdout) == []
