"""The container runtime mode against a real Docker engine and a real llama-server in a container.

The engine is Debian's ``docker.io`` started by the lab (:mod:`tierfleet.lab.engine`); the image is imported
from a runtime release holding the llama-server this checkout built (``.cache/runtime``); the model is a tiny
real GGUF. Skips, saying why, without root, without docker.io, or before the runtime is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tierfleet.lab import engine as lab_engine

WHY = lab_engine.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Docker engine here: {WHY}")

SERVER = Path(os.environ.get("TIERFLEET_CACHE", ".cache")) / "runtime" / "build" / "bin" / "llama-server"
PORT = 18731


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = lab_engine.Engine(tmp_path_factory.mktemp("engine"))
    eng.start()
    yield eng
    dc = eng.client()
    for c in dc.containers.list(all=True):
        c.remove(force=True)
    eng.stop()
    assert eng.pid() is None


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """A runtime release and a model root with two good releases and a corrupt one."""
    if not SERVER.is_file():
        pytest.skip(f"{SERVER} is not built yet (tierfleet artifacts build-runtime)")
    from tierfleet.artifacts.gguf_tiny import write_tiny_gguf

    root = tmp_path_factory.mktemp("rel")
    rt = root / "runtime" / "releases" / "b1-cpu"
    (rt / "bin").mkdir(parents=True)
    shutil.copy2(SERVER, rt / "bin" / "llama-server")
    models = root / "model"
    for name, seed in (("m1", 0), ("m2", 1)):
        (models / "releases" / name).mkdir(parents=True)
        write_tiny_gguf(models / "releases" / name / "model.gguf", seed=seed)
    (models / "releases" / "bad").mkdir(parents=True)
    (models / "releases" / "bad" / "model.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    return rt, models


def point(models: Path, release: str) -> None:
    tmp = models / "current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(f"releases/{release}")
    tmp.rename(models / "current")


def health() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=5) as r:
        return r.status


def test_image_is_the_release_byte_for_byte_and_import_is_idempotent(engine, releases):
    from tierfleet_ops.containers import build_image, layer_tar

    rt, _ = releases
    dc = engine.client()
    first = layer_tar(rt)
    assert layer_tar(rt) == first  # same release, same bytes
    image_id = build_image(dc, rt)
    img = dc.images.get("tierfleet/llama-server:b1-cpu")
    assert img.id == image_id
    assert img.attrs["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(first).hexdigest()]
    assert build_image(dc, rt) == image_id  # nothing imported again
    assert len(dc.images.list(name="tierfleet/llama-server")) == 1


def test_hostile_release_id_is_refused_before_the_engine(engine, releases):
    from tierfleet_ops.containers import ContainerError, build_image

    with pytest.raises(ContainerError, match="letters, digits"):
        build_image(engine.client(), releases[0], release="x;touch /tmp/pwned")


def test_runtime_container_serves_replaces_after_gate_rolls_back(engine, releases):
    from tierfleet_ops.containers import LABEL_MODEL, ContainerError, RuntimeContainer, RuntimeSpec, build_image

    rt, models = releases
    dc = engine.client()
    build_image(dc, rt)
    point(models, "m1")
    rc = RuntimeContainer(dc, RuntimeSpec(image="tierfleet/llama-server:b1-cpu", model_root=str(models),
                                          model_file="model.gguf", port=PORT, threads=1), gate_timeout=60)
    first = rc.ensure()
    assert first.changed and first.replaced is None and health() == 200
    ctr = dc.containers.get(first.container)
    mount = next(m for m in ctr.attrs["Mounts"] if m["Destination"] == "/model")
    assert mount["RW"] is False and mount["Source"] == str(models / "releases" / "m1")
    assert ctr.attrs["HostConfig"]["ReadonlyRootfs"] is True

    # a no-op run: same container, not re-created
    again = rc.ensure()
    assert (again.changed, again.container) == (False, first.container)
    assert dc.containers.get(first.container).attrs["State"]["StartedAt"] == ctr.attrs["State"]["StartedAt"]

    # a new model release: a new container, the old one kept stopped
    point(models, "m2")
    second = rc.ensure()
    assert second.changed and second.replaced == first.container and health() == 200
    assert dc.containers.get(second.container).labels[LABEL_MODEL] == str(models / "releases" / "m2")
    assert dc.containers.get(first.container).status == "exited"

    # a model llama-server cannot load fails the gate: the serving container comes back, the failed one is gone
    point(models, "bad")
    with pytest.raises(ContainerError, match="exited|did not answer"):
        rc.ensure()
    assert rc.running().id == second.container and health() == 200
    assert {c.id for c in rc.containers()} == {first.container, second.container}

    # rollback returns to the container it replaced
    point(models, "m1")
    back = rc.rollback()
    assert (back.container, back.replaced) == (first.container, second.container) and health() == 200
    assert rc.running().id == first.container

    # the host's command line (what a deploy runs) sees the same container and changes nothing
    out = subprocess.run([str(Path(sys.executable).parent / "tierfleet-ops"), "container", "ensure",
                          "--docker-host", engine.url, "--image", "tierfleet/llama-server:b1-cpu",
                          "--model-root", str(models), "--model-file", "model.gguf", "--port", str(PORT),
                          "--threads", "1"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"changed": False, "container": first.container, "replaced": None}

    # a serving container that stopped (crash, engine restart) is started again as the same spec
    spec_label = dc.containers.get(first.container).labels["tierfleet.spec"]
    dc.containers.get(first.container).stop(timeout=5)
    revived = rc.ensure()
    assert revived.changed and revived.container != first.container and health() == 200
    assert dc.containers.get(revived.container).labels["tierfleet.spec"] == spec_label
    assert first.container not in {c.id for c in rc.containers()}  # its stopped twin is not kept beside it

    # an image that was never imported is named, and nothing is stopped
    missing = RuntimeContainer(dc, RuntimeSpec(image="tierfleet/llama-server:nope", model_root=str(models),
                                               model_file="model.gguf", port=PORT, threads=1))
    with pytest.raises(ContainerError, match="no image tierfleet/llama-server:nope"):
        missing.ensure()
    assert rc.running().id == revived.container and health() == 200


def test_daemon_pins_the_container_by_label_and_restores_on_stop(engine, releases, tmp_path):
    """The daemon finds the container by label, sets its cpuset through the engine, pins every thread, and
    puts the container's cpuset back on stop."""
    from tierfleet_ops.containers import RuntimeContainer, RuntimeSpec, build_image
    from tierfleet_ops.daemon import Daemon, DaemonConfig
    from tierfleet_ops.sysfs import Sysfs

    from tests.ops import machines
    from tierfleet_ops.backends.base import HostContext

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    rt, models = releases
    dc = engine.client()
    build_image(dc, rt)
    point(models, "m1")
    rc = RuntimeContainer(dc, RuntimeSpec(image="tierfleet/llama-server:b1-cpu", model_root=str(models),
                                          model_file="model.gguf", port=PORT, threads=1, name="pinned"),
                          gate_timeout=60)
    for c in dc.containers.list(all=True):  # one runtime serves the port
        if c.labels.get("tierfleet.runtime") != "pinned":
            c.remove(force=True)
    ctr = dc.containers.get(rc.ensure().container)
    assert ctr.attrs["HostConfig"]["CpusetCpus"] == ""
    pid = ctr.attrs["State"]["Pid"]
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    server = next(p.pid for p in procs if p.name() == "llama-server")

    sysroot = machines.topology(tmp_path / "sys", [(cpus[0],), (cpus[1],)])
    pol = tmp_path / "p.yaml"
    pol.write_text(json.dumps({"profiles": {"eco": {}}, "runtime": {"container_label": "tierfleet.runtime=pinned"},
                               "pinning": {"reserve_cores": 1}}))
    d = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "s.json"), socket_path=None,
                            metrics_port=None, backends=["cpufreq"], ctx=HostContext(sysfs=Sysfs(sysroot)),
                            allowed_cpus=set(cpus), docker_host=engine.url))
    d.start()
    rep = d.pin_now()
    want = str(d.placement.inference[0]) if len(d.placement.inference) == 1 else None
    assert want is not None and server in rep.pids
    assert d.status()["pinning"]["containers"] == [ctr.id]
    ctr.reload()
    assert ctr.attrs["HostConfig"]["CpusetCpus"] == want
    name = f"docker.{ctr.id[:12]}.cpuset_cpus"
    assert json.loads((tmp_path / "s.json").read_text())["originals"] == [[name, ""]]
    for task in Path(f"/proc/{server}/task").iterdir():
        status = (task / "status").read_text()
        assert f"Cpus_allowed_list:\t{want}\n" in status

    d.stop()
    ctr.reload()
    assert set(map(int, _cpulist(ctr.attrs["HostConfig"]["CpusetCpus"]))) == set(
        _cpulist(Path("/sys/devices/system/cpu/online").read_text().strip()))
    assert json.loads((tmp_path / "s.json").read_text())["originals"] == []

    # a container removed while pinned: its recorded original goes with it at the next pass
    d2 = Daemon(DaemonConfig(policy_path=str(pol), state_path=str(tmp_path / "s2.json"), socket_path=None,
                             metrics_port=None, backends=["cpufreq"], ctx=HostContext(sysfs=Sysfs(sysroot)),
                             allowed_cpus=set(cpus), docker_host=engine.url))
    d2.start()
    d2.pin_now()
    online = ctr.attrs["HostConfig"]["CpusetCpus"]  # what the first daemon put back
    assert json.loads((tmp_path / "s2.json").read_text())["originals"] == [[name, online]]
    ctr.remove(force=True)
    d2.pin_now()
    assert json.loads((tmp_path / "s2.json").read_text())["originals"] == []
    assert d2.status()["pinning"]["containers"] == []
    d2.stop()


def _cpulist(text: str) -> list[int]:
    from tierfleet_ops.sysfs import parse_cpulist

    return parse_cpulist(text)
