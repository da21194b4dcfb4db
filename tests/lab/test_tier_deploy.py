"""The tier deploy against the lab: every profile group converges (or is refused), then changes nothing.

``pyinfra -y inventory/lab.py deploys/tier_basic.py --limit <group>`` with only the lab inventory's own data:
the lab mirror standing in for NVIDIA's CUDA and L4T repositories, the tiny model and llama-server from
the lab's artifact store. Then, inside each host: the served completion, the held driver branch,
nouveau blacklisted, nvidia-persistenced running, the L4T apt source.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import REPO, pyinfra
from tierfleet.lab.profiles import PROFILES
from tierfleet.lab.runner import grand_total

pytestmark = pytest.mark.lab

GROUPS = ("jetson", "cpu_servers", "gpu_nodes")
#: profiles that do not fit the basic tier, and the reasons preflight must give
REFUSED = {"cpu-small": ("preflight refused", "cores: needs 4, has 2")}


def host_lines(output: str, host: str) -> list[str]:
    return [l.strip() for l in output.splitlines() if re.match(rf"\s*\[{re.escape(host)}\]\s", l)]


@pytest.fixture(scope="module")
def published(lab):
    """The runtime and the tiny model in the session lab's store (the runtime build must be cached)."""
    from tierfleet.artifacts.llama_build import cached_runtime

    cache = REPO / ".cache" / "runtime"
    if cached_runtime(cache) is None:
        pytest.skip(f"no llama-server build under {cache}: run `tierfleet lab publish` once (builds it)")
    return lab.publish(cache)


def in_host(lab, host: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(lab.host(host).exec_argv(list(argv)), capture_output=True, text=True, timeout=60)


def check_serving(lab, host: str) -> None:
    health = in_host(lab, host, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "http://127.0.0.1:8080/health")
    assert health.stdout == "200", (host, health.stdout, health.stderr)
    completion = in_host(lab, host, "curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json",
                         "-d", json.dumps({"prompt": "The lab", "n_predict": 4}),
                         "http://127.0.0.1:8080/completion")
    assert completion.returncode == 0, (host, completion.stderr)
    body = json.loads(completion.stdout)
    assert isinstance(body["content"], str) and body["tokens_predicted"] > 0


def check_gpu_node(lab, host: str) -> None:
    branch = PROFILES[host].gpus[0].driver.split(".")[0]
    held = in_host(lab, host, "apt-mark", "showhold").stdout.split()
    assert held == [f"cuda-drivers-{branch}"]
    installed = in_host(lab, host, "dpkg-query", "-W", "-f", "${Version}", f"cuda-drivers-{branch}").stdout
    assert installed.startswith(PROFILES[host].gpus[0].driver)
    blacklist = in_host(lab, host, "cat", "/etc/modprobe.d/tierfleet-blacklist-nouveau.conf").stdout
    assert "blacklist nouveau" in blacklist.splitlines()
    assert in_host(lab, host, "systemctl", "is-active", "nvidia-persistenced").stdout.strip() == "active"
    assert in_host(lab, host, "systemctl", "is-enabled", "nvidia-persistenced").stdout.strip() == "enabled"
    for pkg in ("cuda-cudart-12-8", "libcublas-12-8"):
        assert in_host(lab, host, "dpkg-query", "-W", pkg).returncode == 0, pkg


def check_jetson(lab, host: str) -> None:
    spec = PROFILES[host].jetson
    suite = f"r{spec.l4t_release[1:]}.{spec.l4t_revision.split('.')[0]}"
    soc = "t" + spec.soc.removeprefix("tegra")
    sources = in_host(lab, host, "cat", "/etc/apt/sources.list.d/nvidia-l4t-apt-source.list").stdout
    keyring = "/usr/share/keyrings/nvidia-l4t-archive-keyring.asc"
    assert [l for l in sources.splitlines() if l.startswith("deb ")] == [
        f"deb [signed-by={keyring}] http://mirror.lab/jetson/common {suite} main",
        f"deb [signed-by={keyring}] http://mirror.lab/jetson/{soc} {suite} main"]
    key = in_host(lab, host, "cat", keyring).stdout
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    # trusted for the L4T source only, not for every apt source
    assert in_host(lab, host, "test", "-e", "/etc/apt/trusted.gpg.d/jetson-ota-public.asc").returncode == 1
    cuda = in_host(lab, host, "dpkg-query", "-W", "-f", "${Version}", "nvidia-cuda").stdout
    assert cuda.startswith(spec.jetpack)


@pytest.mark.parametrize("group", GROUPS)
def test_tier_basic_converges_then_changes_nothing(lab, published, group):
    names = [n for n, h in lab.store.load().hosts.items() if PROFILES[h.profile].kind == group]
    refused = [n for n in names if n in REFUSED]

    first = pyinfra(lab, "deploys/tier_basic.py", "--limit", group)
    assert first.returncode == (1 if refused else 0), first.stdout[-4000:]
    total = grand_total(first.stdout)
    # success > 0 on a fresh host; a module that ran before (the energy policy tests) may have converged it
    assert total["error"] == len(refused) and total["success"] + total["no_change"] > 0, first.stdout[-4000:]
    for name in names:
        lines = " ".join(host_lines(first.stdout, name))
        if name in refused:
            for reason in REFUSED[name]:
                assert reason in lines
        else:
            assert "Error" not in lines, (name, lines)

    second = pyinfra(lab, "deploys/tier_basic.py", "--limit", group)
    total = grand_total(second.stdout)
    assert total["success"] == 0 and total["error"] == len(refused), second.stdout[-4000:]
    assert total["no_change"] == total["hosts"] - len(refused)

    for name in names:
        if name in refused:
            # refused before anything ran: no unit, no runtime
            assert in_host(lab, name, "test", "-e", "/etc/systemd/system/llama-server.service").returncode == 1
            continue
        check_serving(lab, name)
        if group == "gpu_nodes":
            check_gpu_node(lab, name)
        elif group == "jetson":
            check_jetson(lab, name)


def test_signing_keys_served_in_hosts(lab):
    for path in ("/apt/tierfleet-lab.asc", "/jetson/jetson-ota-public.asc"):
        out = in_host(lab, "cpu-server", "curl", "-sf", f"http://mirror.lab{path}")
        assert out.returncode == 0 and out.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"), path


@pytest.mark.parametrize(("host", "key"), [("gpu-node-t4", "nvidia_repo_key_sha256"),
                                           ("jetson-nano", "l4t_repo_key_sha256")])
def test_a_repository_key_that_does_not_match_its_pinned_sha256_is_not_installed(lab, published, host, key):
    keyring = {"nvidia_repo_key_sha256": "/usr/share/keyrings/cuda-archive-keyring.asc",
               "l4t_repo_key_sha256": "/usr/share/keyrings/nvidia-l4t-archive-keyring.asc"}[key]
    before = in_host(lab, host, "sha256sum", keyring).stdout
    run = pyinfra(lab, "deploys/tier_basic.py", "--limit", host, "--data", f"{key}={'f' * 64}")
    assert run.returncode == 1, run.stdout[-3000:]
    assert f"does not have the pinned sha256 {'f' * 64}; {keyring} was left as it was" in run.stdout
    assert in_host(lab, host, "sha256sum", keyring).stdout == before  # the key apt trusts is unchanged
