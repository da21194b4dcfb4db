"""The inference runtime in a container on the host's Docker engine (``runtime_mode: container``).

Three parts, all through the engine's API (the docker SDK, ``pip install 'tierfleet-ops[container]'``):

- :func:`build_image` turns a verified runtime release (``<runtime root>/releases/<id>``, ``bin/llama-server``)
  into an image without any registry: one layer holding the release under :data:`RUNTIME_DIR` and the shared
  libraries its programs load (``ldd``), written with sorted names, zero owners and zero times, so the same
  release gives the same layer digest on every host (``docker import``; the image's ``RootFS.Layers[0]`` is
  the tarball's sha256). Tagged ``tierfleet/llama-server:<release id>``.
- :class:`RuntimeContainer` runs llama-server from that image with the model release root mounted read-only
  (``current`` resolved when the container starts, so a model switch is a new container), host networking
  bound to 127.0.0.1, and labels naming the runtime and the hash of everything it was started with. A run
  whose hash matches the running container changes nothing; otherwise the new container must answer
  ``/health`` before the old one is removed: a failed gate removes the new one and starts the old one again.
  The container it replaced is kept stopped, so :meth:`RuntimeContainer.rollback` returns to it.
- :class:`ContainerCpus` is the ops daemon's view: the runtime's containers, found by label, each with a
  ``CpusetCpus`` knob written with ``container.update(cpuset_cpus=...)`` (as kubelet's CPU manager does), so
  the original goes through the same record -> apply -> verify -> restore path as every other knob.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OpsError, UnavailableError
from .knobs import Change, Knob
from .sysfs import format_cpulist, parse_cpulist

log = logging.getLogger(__name__)

#: where the runtime release lives inside the image
RUNTIME_DIR = "/opt/tierfleet/runtime"
IMAGE_REPO = "tierfleet/llama-server"
#: label every runtime container carries: ``tierfleet.runtime=<name>``
LABEL_RUNTIME = "tierfleet.runtime"
LABEL_SPEC = "tierfleet.spec"
LABEL_RELEASE = "tierfleet.release"
LABEL_MODEL = "tierfleet.model"

_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}=[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$")
_LDD_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


class ContainerError(OpsError):
    """The engine refused something, or a runtime container failed its health gate."""


def check_release_id(release: str) -> str:
    """A release id is usable as an image tag: letters, digits and ``_.+-`` (``+`` becomes ``_``).

    >>> check_release_id("0.3.36+linux-x86_64-cpu-v3")
    '0.3.36_linux-x86_64-cpu-v3'
    >>> check_release_id("x; rm -rf /")
    Traceback (most recent call last):
    ...
    tierfleet_ops.containers.ContainerError: release id 'x; rm -rf /': letters, digits and _.+- only, 1..128
    """
    if not _RELEASE_RE.match(release or ""):
        raise ContainerError(f"release id {release!r}: letters, digits and _.+- only, 1..128")
    return release.replace("+", "_")


def check_label(label: str) -> tuple[str, str]:
    """``key=value`` of a container label the daemon searches for.

    >>> check_label("tierfleet.runtime=llama-server")
    ('tierfleet.runtime', 'llama-server')
    """
    if not _LABEL_RE.match(label or ""):
        raise ContainerError(f"container label {label!r}: key=value, lower-case key, letters/digits/_.+- value")
    k, v = label.split("=", 1)
    return k, v


def check_model_file(name: str) -> str:
    """The model's file name inside its release: one path component, no dot-dot.

    >>> check_model_file("model.gguf")
    'model.gguf'
    >>> check_model_file("../../etc/shadow")
    Traceback (most recent call last):
    ...
    tierfleet_ops.containers.ContainerError: model file '../../etc/shadow': a file name inside the release, no '/'
    """
    if not name or "/" in name or "\0" in name or name in (".", "..") or name.startswith("-"):
        raise ContainerError(f"model file {name!r}: a file name inside the release, no '/'")
    return name


def parse_ldd(text: str) -> list[str]:
    """Absolute library paths from ``ldd`` output (vdso and unresolved names left out).

    >>> parse_ldd("\\tlinux-vdso.so.1 (0x00007ff)\\n\\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\\n"
    ...           "\\t/lib64/ld-linux-x86-64.so.2 (0x00007f8)\\n\\tlibfoo.so => not found\\n")
    ['/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2']
    """
    out = []
    for ln in text.splitlines():
        m = _LDD_RE.match(ln)
        if m and ".." not in m.group(1).split("/"):
            out.append(m.group(1))
    return out


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def libraries(programs: list[Path]) -> list[str]:
    """Every shared library the programs load (their ``ldd`` closure), sorted."""
    libs: set[str] = set()
    for p in programs:
        proc = subprocess.run(["ldd", str(p)], capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise ContainerError(f"ldd {p}: {proc.stderr.strip() or proc.stdout.strip()}")
        libs.update(parse_ldd(proc.stdout))
    return sorted(libs)


def _entry(tar: tarfile.TarFile, src: Path, arcname: str, seen: set[str]) -> None:
    """Add ``src`` (following symlinks: the file a library name resolves to) with zeroed metadata, after its
    parent directories."""
    parts = arcname.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    if arcname in seen:
        return
    seen.add(arcname)
    data = src.read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = len(data), (0o755 if os.access(src, os.X_OK) else 0o644)
    tar.addfile(info, io.BytesIO(data))


def layer_tar(release_dir: Path) -> bytes:
    """The image's single layer: the release's files under :data:`RUNTIME_DIR` and the libraries its ELF
    programs load, at their own paths; sorted, owners and times zero (same release, same bytes)."""
    release_dir = Path(release_dir)
    files = sorted(p for p in release_dir.rglob("*") if p.is_file() and not p.is_symlink())
    if not (release_dir / "bin" / "llama-server").is_file():
        raise ContainerError(f"{release_dir}: no bin/llama-server; not a runtime release")
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for lib in libraries([p for p in files if _is_elf(p)]):
            _entry(tar, Path(lib), lib.lstrip("/"), seen)
        for p in files:
            _entry(tar, p, f"{RUNTIME_DIR.lstrip('/')}/{p.relative_to(release_dir).as_posix()}", seen)
    return buf.getvalue()


def client(base_url: str | None = None) -> Any:
    """A docker SDK client (``DOCKER_HOST`` or the default socket unless ``base_url``)."""
    try:
        import docker
    except ImportError as exc:
        raise UnavailableError("the docker SDK is not installed: pip install 'tierfleet-ops[container]'") from exc
    try:
        c = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        c.ping()
    except docker.errors.DockerException as exc:
        raise UnavailableError(f"no Docker engine answers ({base_url or os.environ.get('DOCKER_HOST', 'default')}): "
                               f"{exc}") from exc
    return c


def build_image(dc: Any, release_dir: Path, release: str | None = None) -> str:
    """Import the runtime release as ``tierfleet/llama-server:<release id>`` unless that tag already holds the
    same layer; returns the image's id. ``release`` defaults to the release directory's name."""
    tag = check_release_id(release or Path(release_dir).name)
    data = layer_tar(release_dir)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    name = f"{IMAGE_REPO}:{tag}"
    import docker

    try:
        img = dc.images.get(name)
        if img.attrs.get("RootFS", {}).get("Layers") == [digest]:
            return img.id
        log.warning("%s holds another layer than release %s packs to; importing again", name, tag)
    except docker.errors.ImageNotFound:
        pass
    changes = [f"ENTRYPOINT [\"{RUNTIME_DIR}/bin/llama-server\"]",
               f"LABEL {LABEL_RELEASE}={tag}", "ENV LD_LIBRARY_PATH="]
    try:
        dc.api.import_image_from_data(data, repository=IMAGE_REPO, tag=tag, changes=changes)
        img = dc.images.get(name)
    except docker.errors.DockerException as exc:
        raise ContainerError(f"import {name}: {exc}") from exc
    if img.attrs.get("RootFS", {}).get("Layers") != [digest]:
        raise ContainerError(f"{name}: the engine's layer {img.attrs.get('RootFS')} is not {digest}")
    return img.id


@dataclass
class RuntimeSpec:
    """What a runtime container runs: image, model, llama-server arguments."""

    image: str
    model_root: str  # release root of the model: ``current`` under it, mounted read-only
    model_file: str  # file name inside the model release
    port: int
    threads: int
    args: list[str] = field(default_factory=list)
    name: str = "llama-server"
    cpuset: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def model_release(self) -> str:
        """The release ``current`` points at now (the container mounts this one)."""
        check_model_file(self.model_file)
        cur = Path(self.model_root) / "current"
        real = cur.resolve(strict=False)
        if not (real / self.model_file).is_file():
            raise ContainerError(f"{cur}/{self.model_file}: no such model file")
        return str(real)

    def command(self) -> list[str]:
        return ["--model", f"/model/{self.model_file}", "--host", "127.0.0.1", "--port", str(int(self.port)),
                "--threads", str(int(self.threads)), *self.args]

    def digest(self, image_id: str, release: str) -> str:
        body = json.dumps({"image": image_id, "model": release, "command": self.command(), "env": self.env,
                           "cpuset": self.cpuset}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:32]


@dataclass
class EnsureResult:
    changed: bool
    container: str  # id of the serving container
    replaced: str | None = None  # id of the container it replaced (kept stopped for rollback)


class RuntimeContainer:
    """Runs the runtime as a container with the native mode's guarantees (see the module docstring)."""

    def __init__(self, dc: Any, spec: RuntimeSpec, gate_timeout: float = 120.0) -> None:
        self.dc = dc
        self.spec = spec
        self.gate_timeout = gate_timeout

    def containers(self) -> list[Any]:
        """This runtime's containers, newest first."""
        found = self.dc.containers.list(all=True, filters={"label": f"{LABEL_RUNTIME}={self.spec.name}"})
        return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)

    def running(self) -> Any | None:
        return next((c for c in self.containers() if c.status == "running"), None)

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{int(self.spec.port)}/health", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def gate(self, ctr: Any) -> None:
        """Wait for ``/health`` to answer 200; raise when the container exits or time runs out."""
        deadline = time.monotonic() + self.gate_timeout
        while True:
            ctr.reload()  # first: an answer from another process on the port must not pass the gate
            if ctr.status == "running" and self.health():
                return
            if ctr.status not in ("created", "running"):
                tail = ctr.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
                raise ContainerError(f"{ctr.name}: exited ({ctr.attrs['State'].get('ExitCode')}) before /health "
                                     f"answered: {tail}")
            if time.monotonic() > deadline:
                raise ContainerError(f"{ctr.name}: /health did not answer 200 within {self.gate_timeout:g} s")
            time.sleep(0.25)

    def _run(self, image: Any, release: str, digest: str) -> Any:
        s = self.spec
        kw: dict[str, Any] = {}
        if s.cpuset:
            kw["cpuset_cpus"] = s.cpuset
        return self.dc.containers.run(
            image.id, s.command(), detach=True, init=True, network_mode="host", read_only=True,
            name=f"{s.name}-{digest[:12]}", environment=dict(s.env),
            volumes={release: {"bind": "/model", "mode": "ro"}},
            labels={LABEL_RUNTIME: s.name, LABEL_SPEC: digest, LABEL_MODEL: release,
                    LABEL_RELEASE: image.labels.get(LABEL_RELEASE, "")},
            security_opt=["no-new-privileges"], cap_drop=["ALL"], **kw)

    def ensure(self) -> EnsureResult:
        """Make the serving container match the spec; nothing happens when it already does and is healthy."""
        import docker

        release = self.spec.model_release()
        try:
            image = self.dc.images.get(self.spec.image)
        except docker.errors.ImageNotFound:
            raise ContainerError(f"no image {self.spec.image} on this engine: tierfleet-ops container image "
                                 "<runtime release> first") from None
        digest = self.spec.digest(image.id, release)
        old = self.running()
        if old is not None and old.labels.get(LABEL_SPEC) == digest:
            if self.health():
                return EnsureResult(False, old.id)
            old.restart(timeout=10)  # the same container, not answering: restarted behind the gate
            self.gate(old)
            return EnsureResult(True, old.id)
        for c in self.containers():  # a stopped twin of the new one (an earlier spec come back) is re-created
            if c.name == f"{self.spec.name}-{digest[:12]}" and c.id != getattr(old, "id", None):
                c.remove(force=True)
        if old is not None:
            old.stop(timeout=10)
        try:
            new = self._run(image, release, digest)
        except docker.errors.DockerException as exc:
            self._back(old)
            raise ContainerError(f"start {self.spec.name}: {exc}") from exc
        try:
            self.gate(new)
        except ContainerError:
            new.remove(force=True)
            self._back(old)
            raise
        for c in self.containers():  # keep the one replaced (rollback), drop older ones
            if c.id not in (new.id, getattr(old, "id", None)):
                c.remove(force=True)
        return EnsureResult(True, new.id, getattr(old, "id", None))

    def _back(self, old: Any | None) -> None:
        if old is not None:
            old.start()
            self.gate(old)

    def rollback(self) -> EnsureResult:
        """Stop the serving container and start the one it replaced (which must pass the gate)."""
        cur = self.running()
        prev = next((c for c in self.containers() if c.status != "running"), None)
        if prev is None:
            raise ContainerError(f"{self.spec.name}: no previous container to go back to")
        if cur is not None:
            cur.stop(timeout=10)
        prev.start()
        try:
            self.gate(prev)
        except ContainerError:
            prev.stop(timeout=10)
            if cur is not None:
                cur.start()
            raise
        return EnsureResult(True, prev.id, getattr(cur, "id", None))


def _engine_errors() -> tuple[type[BaseException], ...]:
    """What a call to the engine raises when the engine, the container or the SDK is not there."""
    try:
        import docker
        import requests
    except ImportError:
        return (UnavailableError,)
    return (UnavailableError, docker.errors.DockerException, requests.exceptions.RequestException)


class ContainerCpus:
    """The runtime's containers (by label) and their ``CpusetCpus`` as knobs ``docker.<id12>.cpuset_cpus``.

    An empty ``CpusetCpus`` means every CPU; it is written back as the online CPU list (the SDK sends no
    empty value), and both compare equal. A container that is gone has no knob any more.
    """

    def __init__(self, label: str, online: str, base_url: str | None = None) -> None:
        self.key, self.value = check_label(label)
        self.label = label
        self.online = online
        self.base_url = base_url
        self._client: Any = None
        self._warned: str | None = None

    def _warn(self, exc: Exception) -> None:
        if str(exc) != self._warned:  # once per problem, not every pinning pass
            self._warned = str(exc)
            log.warning("container_label %s: %s", self.label, exc)

    def _dc(self) -> Any:
        if self._client is None:
            self._client = client(self.base_url)
        return self._client

    def containers(self) -> list[Any]:
        return self._dc().containers.list(filters={"label": f"{self.key}={self.value}", "status": "running"})

    def _cpus(self, value: str) -> set[int]:
        return set(parse_cpulist(value or self.online))

    def _knob(self, cid: str) -> Knob:
        def read() -> str | None:
            try:
                return self._dc().containers.get(cid).attrs["HostConfig"].get("CpusetCpus") or ""
            except _engine_errors():
                return None

        def write(value: str) -> None:
            try:
                self._dc().containers.get(cid).update(cpuset_cpus=format_cpulist(self._cpus(value)))
            except _engine_errors() as exc:
                raise UnavailableError(f"container {cid[:12]}: update cpuset_cpus: {exc}") from exc

        return Knob(f"docker.{cid[:12]}.cpuset_cpus", "docker", f"container {cid[:12]} CpusetCpus", read, write,
                    equal=lambda want, have: self._cpus(want) == self._cpus(have))

    def knobs(self, recorded: list[str] = ()) -> dict[str, Knob]:
        """Knobs of the running containers, and of recorded ones (to restore)."""
        try:
            ids = {c.id for c in self.containers()}
            known = {c.id[:12]: c.id for c in self._dc().containers.list(all=True)}
        except _engine_errors() as exc:
            self._warn(exc)
            return {}
        self._warned = None
        ids |= {known[n.split(".")[1]] for n in recorded if n.startswith("docker.") and n.split(".")[1] in known}
        return {k.name: k for k in (self._knob(i) for i in sorted(ids))}

    def changes(self, cpus: list[int]) -> list[Change]:
        return [Change(k, format_cpulist(cpus)) for k in self.knobs().values()]

    def gone(self, recorded: list[str]) -> list[str]:
        """Recorded knob names whose container the engine no longer has (its cpuset went with it); none when
        the engine does not answer."""
        try:
            known = {c.id[:12] for c in self._dc().containers.list(all=True)}
        except _engine_errors() as exc:
            self._warn(exc)
            return []
        return [n for n in recorded if n.startswith("docker.") and n.split(".")[1] not in known]

    def ids(self) -> list[str]:
        try:
            return sorted(c.id for c in self.containers())
        except _engine_errors() as exc:
            self._warn(exc)
            return []
