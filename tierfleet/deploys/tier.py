"""The tier deploy: converge a host to a serving model of its tier, or refuse it untouched.

Per host, in order: preflight (a host that does not fit is failed before anything runs) -> platform stack
(:mod:`tierfleet.deploys.stack`) -> runtime (llama-server from the artifact store, a verified release) ->
model (a verified release) -> service user and unit -> switch both releases atomically -> restart ->
health gate (``/health`` and one completion, else both releases go back to ``previous``) -> prune.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationValueError, deploy
from pyinfra.operations import files, server, systemd

from tierfleet.artifacts import wheelhouse
from tierfleet.artifacts.llama_build import variant_name
from tierfleet.catalog import load_catalog
from tierfleet.exceptions import ConfigError
from tierfleet.facts.artifacts import StoreManifest, manifest_of, manifest_url
from tierfleet.facts.cpu import AllowedCpus
from tierfleet.operations import preflight as preflight_ops
from tierfleet.facts.ops import PythonVersion
from tierfleet.operations import daemon, release, runtime
from tierfleet.placement import place
from tierfleet.profile import build_profile, gather_facts
from tierfleet.deploys import stack
from tierfleet.preflight import check_host
from tierfleet.settings import HostSettings, host_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
RUNTIME_ROOT = "/opt/tierfleet/runtime"
OPS_ROOT = "/opt/tierfleet/ops"
OPS_VENV = "/opt/tierfleet-ops/venv"
SERVICE_USER = "tierfleet"
UNIT = "llama-server.service"


def runtime_variant(profile) -> str:
    """The llama-server build a host runs, as named in the artifact store.

    - GPU node: ``linux-<arch>-cuda``; Jetson: ``linux-aarch64-cuda-l4t<major>`` (built against that L4T's CUDA)
    - CPU: ``linux-x86_64-cpu-v3`` (AVX2/FMA and up), ``linux-x86_64-cpu`` (older x86), ``linux-aarch64-cpu``

    >>> from types import SimpleNamespace as P
    >>> runtime_variant(P(platform="cpu", arch="x86_64", cpu_variant="avx512", jetson=None))
    'linux-x86_64-cpu-v3'
    >>> runtime_variant(P(platform="cpu", arch="x86_64", cpu_variant="generic", jetson=None))
    'linux-x86_64-cpu'
    >>> runtime_variant(P(platform="jetson", arch="aarch64", cpu_variant="neon", jetson={"l4t": "36.4.3"}))
    'linux-aarch64-cuda-l4t36'
    >>> runtime_variant(P(platform="gpu", arch="x86_64", cpu_variant="avx2", jetson=None))
    'linux-x86_64-cuda'
    """
    machine = profile.arch or "x86_64"
    if profile.platform == "jetson":
        major = ((profile.jetson or {}).get("l4t") or "0").split(".")[0]
        return f"linux-{machine}-cuda-l4t{major}"
    if profile.platform == "gpu":
        return f"linux-{machine}-cuda"
    if machine == "x86_64" and profile.cpu_variant not in ("avx2", "avx512"):
        return "linux-x86_64-cpu"
    return variant_name(machine)


def _manifest(url: str, what: str):
    value = host.get_fact(StoreManifest, url)
    if "error" in value:
        return None, f"tierfleet: {what} manifest {url}: {value['error']}"
    try:
        return manifest_of(value), None
    except ConfigError as exc:
        return None, f"tierfleet: {what} manifest {url}: {exc}"


def _settings(name: str | None):
    try:
        catalog = load_catalog()
        data = {key: host.data.get(key) for key in HostSettings.model_fields}
        if name is not None:
            data["tier"] = name
        return catalog, host_settings(data, catalog, f"inventory: host {host.name}")
    except ConfigError as exc:
        raise OperationValueError(str(exc)) from None


def model_release_id(settings: HostSettings, model) -> str:
    """The release directory name of a model version: ``<name>-<quant>-<version>``."""
    return f"{model.name}-{model.quant}-{settings.model_version}"


@deploy("tierfleet rollback")
def rollback() -> None:
    """Move the model's ``current`` off the release of the host's ``model_version`` (the bad one) to the
    previous release, restart llama-server and check it answers.

    ``pyinfra inventory/lab.py deploys/rollback.py --data model_version=2`` rolls version 2 back; set the
    inventory's ``model_version`` to the good one afterwards, or the next tier deploy installs 2 again.
    """
    catalog, settings = _settings(None)
    model = settings.model or catalog.tier(settings.tier if settings.tier != "auto" else "basic").model
    back = release.rollback(name=f"Roll back model {settings.model_version}", root=settings.model_dir.rstrip("/"),
                            release=model_release_id(settings, model))
    systemd.service(name="llama-server restarted", service=UNIT, running=True, restarted=True, _if=back.did_change)
    runtime.healthy(name="Health gate", port=settings.runtime_port, timeout=settings.health_timeout, unit=UNIT,
                    _if=back.did_change)


@deploy("tierfleet tier")
def tier(name: str | None = None) -> None:
    """Converge this host to tier ``name`` (default: its ``tier`` inventory data)."""
    catalog, settings = _settings(name)

    facts = gather_facts(host, settings.model_dir)
    profile = build_profile(host.name, facts)
    verdict = check_host(profile, catalog, settings.tier, settings.model)
    preflight_ops.check(name=f"Host fits tier {settings.tier}", verdict=verdict)
    if not verdict.fits:
        return
    chosen = catalog.tier(verdict.tier)
    model = settings.model or chosen.model

    if profile.platform == "gpu":
        stack.gpu_stack(settings, profile)
    elif profile.platform == "jetson":
        stack.jetson_stack(settings, profile)

    store = settings.artifact_store.rstrip("/")
    runtime_release = f"{settings.runtime_version}+{settings.runtime_variant or runtime_variant(profile)}"
    model_name = f"{model.name}-{model.quant}"
    runtime_manifest, runtime_error = _manifest(manifest_url(store, "llama-server", runtime_release), "runtime")
    model_manifest, model_error = _manifest(manifest_url(store, model_name, settings.model_version), "model")
    if runtime_error or model_error:
        preflight_ops.fail(name="Artifacts are in the store", message=runtime_error or model_error)
        return

    model_root = settings.model_dir.rstrip("/")
    runtime_art = release.artifact(
        name="llama-server runtime", root=RUNTIME_ROOT, release=runtime_release, manifest=runtime_manifest,
        source=f"{store}/llama-server/{runtime_release}/", compressed=runtime_manifest.compressed, unpack=True,
    )
    model_release = model_release_id(settings, model)
    model_art = release.artifact(
        name=f"model {model_name} {settings.model_version}", root=model_root, release=model_release,
        manifest=model_manifest, source=f"{store}/{model_name}/{settings.model_version}/",
        compressed=model_manifest.compressed,
    )

    user = server.user(name="Service user", user=SERVICE_USER, system=True, shell="/usr/sbin/nologin",
                       home="/nonexistent", create_home=False)
    placement = place(facts["topology"], host.get_fact(AllowedCpus), chosen.reserved_cores)
    unit = files.template(
        name="llama-server unit",
        src=str(TEMPLATES / "llama-server.service.j2"),
        dest=f"/etc/systemd/system/{UNIT}",
        mode="644",
        runtime_root=RUNTIME_ROOT,
        model_path=f"{model_root}/current/{model_manifest.entrypoint}",
        port=settings.runtime_port,
        threads=placement.threads,
        cpus=" ".join(str(c) for c in placement.cpus),
        context_size=chosen.runtime.context_size,
        gpu_layers=chosen.runtime.gpu_layers if profile.platform != "cpu" else 0,
        parallel=chosen.runtime.parallel,
        tier=chosen.name,
        service_user=SERVICE_USER,
        mlock=False,
    )
    switch_runtime = release.switch(name="Switch runtime", root=RUNTIME_ROOT, release=runtime_release)
    switch_model = release.switch(name="Switch model", root=model_root, release=model_release)
    changed = (runtime_art, model_art, unit, switch_runtime, switch_model, user)

    def any_changed() -> bool:
        return any(op.did_change() for op in changed)

    systemd.daemon_reload(name="Reload units", _if=unit.did_change)
    systemd.service(name="llama-server running", service=UNIT, running=True, enabled=True,
                    restarted=True, _if=any_changed)
    systemd.service(name="llama-server enabled", service=UNIT, running=True, enabled=True)
    runtime.healthy(name="Health gate", port=settings.runtime_port, timeout=settings.health_timeout, unit=UNIT,
                    roots=[RUNTIME_ROOT, model_root], _if=any_changed)
    release.prune(name="Prune runtime releases", root=RUNTIME_ROOT, keep=settings.keep_releases)
    release.prune(name="Prune model releases", root=model_root, keep=settings.keep_releases)
    ops_daemon(settings, profile, chosen.reserved_cores)


@deploy("tierfleet ops daemon")
def ops_daemon(settings: HostSettings, profile, reserve: int) -> None:
    """Install the ops daemon (its own venv, from a verified wheelhouse release), its policy and unit."""
    python = host.get_fact(PythonVersion)
    if python is None:
        preflight_ops.fail(name="python3 for the ops daemon", message="tierfleet: no python3 on the host for the ops daemon")
        return
    store = settings.artifact_store.rstrip("/")
    version = wheelhouse.ops_version()
    ops_release = wheelhouse.release_name(version, python, profile.arch or "x86_64")
    manifest, error = _manifest(manifest_url(store, wheelhouse.NAME, ops_release), "ops daemon")
    if error:
        preflight_ops.fail(name="Ops daemon in the store", message=error)
        return
    art = release.artifact(name="ops daemon wheels", root=OPS_ROOT, release=ops_release, manifest=manifest,
                           source=f"{store}/{wheelhouse.NAME}/{ops_release}/", compressed=manifest.compressed,
                           unpack=True)
    switch = release.switch(name="Switch ops daemon", root=OPS_ROOT, release=ops_release)
    venv = daemon.installed(name="ops daemon venv", venv=OPS_VENV, wheels=f"{OPS_ROOT}/current/wheels",
                            version=version)
    policy = files.template(
        name="ops policy", src=str(TEMPLATES / "ops-policy.yaml.j2"), dest="/etc/tierfleet-ops/policy.yaml",
        mode="644", create_remote_dir=True,
        ops_host_kind=profile.platform, ops_runtime_port=settings.runtime_port, ops_runtime_unit=UNIT,
        ops_reserve_cores=reserve,
    )
    unit = files.template(
        name="ops daemon unit", src=str(TEMPLATES / "tierfleet-ops.service.j2"),
        dest="/etc/systemd/system/tierfleet-ops.service", mode="644",
        ops_venv=OPS_VENV, ops_socket_group=SERVICE_USER, ops_runtime_unit=UNIT,
    )
    systemd.daemon_reload(name="Reload units (ops)", _if=unit.did_change)
    restart = lambda: any(op.did_change() for op in (art, switch, venv, unit))  # noqa: E731
    systemd.service(name="ops daemon restarted", service="tierfleet-ops.service", running=True, enabled=True,
                    restarted=True, _if=restart)
    systemd.service(name="ops daemon running", service="tierfleet-ops.service", running=True, enabled=True)
    systemd.service(name="ops daemon reloads its policy", service="tierfleet-ops.service", reloaded=True,
                    _if=lambda: policy.did_change() and not restart())
