"""Spec tests for the platform operations (apt holds, NVIDIA driver consistency), each run twice."""

from __future__ import annotations

import pytest
from pyinfra.api import FunctionCommand

from tierfleet.operations import nvidia, packages

from .harness import SpecHost, run_operation


def held_facts(lines):
    return {"tierfleet.facts.packages.AptHeld": {"": lines}}


@pytest.mark.parametrize(
    ("args", "before", "commands", "noop", "after"),
    [
        ({"packages": ["cuda-drivers-570"]}, [], ["apt-mark hold cuda-drivers-570"], None, ["cuda-drivers-570"]),
        ({"packages": ["cuda-drivers-570", "nvidia-utils-570-server"]}, ["cuda-drivers-570"],
         ["apt-mark hold nvidia-utils-570-server"], None, ["cuda-drivers-570", "nvidia-utils-570-server:amd64"]),
        ({"packages": ["cuda-drivers-570"]}, ["cuda-drivers-570"], [], "cuda-drivers-570 already held", None),
        ({"packages": ["cuda-drivers-570"], "present": False}, ["cuda-drivers-570"],
         ["apt-mark unhold cuda-drivers-570"], None, []),
        ({"packages": ["x; reboot"]}, [], ["apt-mark hold 'x; reboot'"], None, None),
    ],
)
def test_held(args, before, commands, noop, after):
    got, noops = run_operation(packages.held, args, held_facts(before))
    assert got == commands
    assert noops == ([noop] if noop else [])
    if after is not None:
        again, _ = run_operation(packages.held, args, held_facts(after))
        assert again == []


H200 = "0, NVIDIA H200, 143771, 9.0, 580.159.04, Enabled, 700.00, 700.00, 200.00, 700.00, 1980, Disabled"
NVRM = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {}  Release Build  (dvs-builder@U22)  Thu Oct 23 2025"


def driver_facts(smi, loaded, installed=None):
    return {
        "tierfleet.facts.nvidia.NvidiaGpus": {"": smi},
        "tierfleet.facts.nvidia.NvidiaDriverInstalled": {"": [installed] if installed else []},
        "tierfleet.facts.nvidia.NvidiaDriverLoaded": {"": [NVRM.format(loaded)] if loaded else []},
    }


def _inner(args, facts):
    from pyinfra.context import ctx_host

    fake = SpecHost(facts)
    with ctx_host.use(fake):
        return list(nvidia.driver_consistent._inner(**args)), fake.noops


@pytest.mark.parametrize(
    ("smi", "loaded", "installed", "branch", "problem"),
    [
        ([H200], "580.159.04", "580.159.04", "580", None),
        ([H200], "580.159.04", None, None, None),
        (["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 580.159"],
         "570.172.08", "580.159.04", "580",
         "driver/library mismatch: loaded 570.172.08, installed 580.159.04 (reboot needed)"),
        (["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 580.159"],
         "570.172.08", None, None, "driver/library mismatch: loaded 570.172.08, installed 580.159 (reboot needed)"),
        ([H200], None, "580.159.04", None, "no NVIDIA kernel module loaded (/proc/driver/nvidia/version missing)"),
        (["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."], "580.159.04", None, None,
         "nvidia-smi sees no GPU (NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.)"),
        ([H200], "580.159.04", None, "570-open", "driver 580.159.04 is not on branch 570-open"),
    ],
)
def test_driver_consistent(smi, loaded, installed, branch, problem):
    commands, noops = _inner({"branch": branch}, driver_facts(smi, loaded, installed))
    if problem is None:
        assert commands == [] and noops == ["NVIDIA driver 580.159.04 loaded and consistent"]
        return
    assert noops == []
    assert len(commands) == 1 and isinstance(commands[0], FunctionCommand)
    assert commands[0].args == (f"tierfleet: NVIDIA driver check failed: {problem}",)


def test_preflight_check_noop_and_refusal(monkeypatch):
    """preflight.check is a no-op naming the tier when the host fits, one failing callback otherwise."""
    from tests.fleets import MATCHERS, fake_responses
    from tierfleet.operations import preflight
    from tierfleet.profile import FACTS

    def facts_of(kind):
        responses = fake_responses(kind)
        out = {}
        for key, (fact, takes_dir) in FACTS.items():
            lines = responses.get(MATCHERS[key], [])
            out[fact.name] = {"": lines} if not takes_dir else {"": lines}
        return out

    class Data(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    def run(kind, tier):
        fake = SpecHost(facts_of(kind))
        fake.name, fake.data = kind, Data()
        fake.get_fact = lambda cls, *args, **kwargs: cls().process(fake.facts[cls.name][""]) if fake.facts[cls.name][""] else cls().default()
        from pyinfra.context import ctx_host

        with ctx_host.use(fake):
            return list(preflight.check._inner(tier=tier)), fake.noops

    commands, noops = run("orin-nano", "basic")
    assert commands == [] and noops == ["fits tier basic"]
    commands, noops = run("nano", "advanced")
    assert noops == [] and len(commands) == 1
    assert commands[0].args == ("tierfleet: preflight refused: unified memory: needs 5.5 GB, has 4.2 GB; cores: needs 8, has 4",)


INSTALL = ("python3 -m venv --clear /opt/tierfleet-ops/venvs/0.1.0 && /opt/tierfleet-ops/venvs/0.1.0/bin/pip install "
           "--quiet --no-index --find-links /opt/tierfleet/ops/current/wheels tierfleet-ops==0.1.0 && "
           "ln -sfn /opt/tierfleet-ops/venvs/0.1.0 /opt/tierfleet-ops/venv.tmp && "
           "mv -T /opt/tierfleet-ops/venv.tmp /opt/tierfleet-ops/venv")


@pytest.mark.parametrize(
    ("installed", "commands", "noop"),
    [
        (["tierfleet-ops, version 0.1.0"], [], "tierfleet-ops 0.1.0 installed in /opt/tierfleet-ops/venv"),
        (["tierfleet-ops, version 0.0.9"], [INSTALL], None),
        ([], [INSTALL], None),
    ],
    ids=["same-version", "older-version", "no-venv"],
)
def test_ops_daemon_installed(installed, commands, noop):
    from tierfleet.operations import daemon

    args = {"venv": "/opt/tierfleet-ops/venv", "wheels": "/opt/tierfleet/ops/current/wheels", "version": "0.1.0"}
    fact = "tierfleet.facts.ops.OpsInstalled"
    got, noops = run_operation(daemon.installed, args, {fact: {"venv=/opt/tierfleet-ops/venv": installed}})
    assert got == commands
    assert noops == ([noop] if noop else [])
    after = {fact: {"venv=/opt/tierfleet-ops/venv": ["tierfleet-ops, version 0.1.0"]}}
    assert run_operation(daemon.installed, args, after)[0] == []


def test_ops_daemon_installed_quotes_paths():
    from tierfleet.operations import daemon

    venv = "/opt/x y;reboot"
    facts = {"tierfleet.facts.ops.OpsInstalled": {f"venv={venv}": []}}
    [command], _ = run_operation(daemon.installed, {"venv": venv, "wheels": "/w", "version": "1"}, facts)
    assert command.startswith("python3 -m venv --clear '/opt/x y;reboots/1' && '/opt/x y;reboots/1/bin/pip' install")
