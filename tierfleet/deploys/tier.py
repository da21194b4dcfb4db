"""The tier deploy: converge a host to a serving model of its tier, or refuse it untouched.

Per host, in order: preflight (a host that does not fit is failed before anything runs) -> every artifact's
manifest from the store (a missing one fails the host before anything changes) -> host tools -> platform
stack (:mod:`tierfleet.deploys.stack`) -> runtime and model as verified releases -> service user, control group
and unit -> switch both releases atomically -> health gate (restart, ``/health`` and one completion; on failure every
release this run switched goes back to what served before) -> prune -> the ops daemon.
"""

from __future__ import annotations

import io
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from tierfleet import energy
from tierfleet.artifacts import wheelhouse
from tierfleet.artifacts.llama_build import variant_name
from tierfleet.artifacts.signing import keyring_b64
from tierfleet.catalog import ModelArtifact
from tierfleet.deploys import stack
from tierfleet.deploys.shards import PRESET_PATH, effective_shards, shard_plan
from tierfleet.exceptions import ConfigError
from tierfleet.facts import bundle
from tierfleet.facts.artifacts import StoreManifest, manifest_of, manifest_url
from tierfleet.facts.cpu import AllowedCpus
from tierfleet.facts.ops import PythonVersion
from tierfleet.facts.release import Releases
from tierfleet.operations import account, daemon, failure, release, runtime
from tierfleet.operations import preflight as preflight_ops
from tierfleet.placement import place
from tierfleet.profile import HostProfile
from tierfleet.resolve import Resolved, resolve_host
from tierfleet.settings import HostSettings

#: the jinja2 templates rendered onto hosts (``templates/`` at the top of the repository, shipped in the package)
TEMPLATES = Path(__file__).parents[1] / "templates"
RUNTIME_ROOT = "/opt/tierfleet/runtime"
OPS_ROOT = "/opt/tierfleet/ops"
OPS_VENV = "/opt/tierfleet-ops/venv"
SERVICE_USER = "tierfleet"
#: the ops daemon's control group: owns /run/tierfleet-ops and the control socket; operators join it, the
#: service user never does
CONTROL_GROUP = "tierfleet-ops"
CONTROL_DIR = "/run/tierfleet-ops"
UNIT = "llama-server.service"
#: what the deploy itself runs on the host: curl fetches artifacts, zstd unpacks them, python3-venv holds the
#: ops daemon
HOST_TOOLS = ["ca-certificates", "curl", "zstd", "python3-venv"]


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


def model_release_id(settings: HostSettings, model: ModelArtifact) -> str:
    """The release directory name of a model version: ``<name>-<quant>-<version>``."""
    return f"{model.name}-{model.quant}-{settings.model_version}"


def _resolve(tier: str | None) -> Resolved | None:
    """This host's settings, facts, profile and verdict (:mod:`tierfleet.resolve`); bad data fails the host."""
    try:
        return resolve_host(host, tier)
    except ConfigError as exc:
        failure.fail(name="Inventory data is valid", message=str(exc))
        return None


def _manifests(wanted: dict[str, tuple[str, str]], key: str | None) -> tuple[dict, str | None]:
    """The manifests at the URLs of ``wanted`` (name -> (url, what)) as the host fetched them, all in one round
    trip, each verified there against ``key`` when one is pinned; ``({name: Manifest}, None)`` or ``({}, error)``
    naming the first that failed."""
    keyring = keyring_b64(key) if key else None
    values = bundle.read(host, {name: (StoreManifest, (url,), {"key": keyring}) for name, (url, _) in wanted.items()})
    manifests = {}
    for name, (url, what) in wanted.items():
        value = values[name]
        if "error" in value:
            return {}, f"{what} manifest {url}: {value['error']}"
        if key and not value.get("signed_by"):
            return {}, f"{what} manifest {url}: not verified against artifact_key; refusing it"
        try:
            manifests[name] = manifest_of(value)
        except ConfigError as exc:
            return {}, f"{what} manifest {url}: {exc}"
    return manifests, None


@deploy("tierfleet tier")
def tier(tier: str | None = None) -> None:
    """Converge this host to ``tier`` (default: its ``tier`` inventory data)."""
    resolved = _resolve(tier)
    if resolved is None:
        return
    catalog, settings, facts, profile, verdict = (resolved.catalog, resolved.settings, resolved.facts,
                                                  resolved.profile, resolved.verdict)
    preflight_ops.check(name=f"Host fits tier {settings.tier}", verdict=verdict)
    if not verdict.fits:
        return
    chosen = catalog.tier(verdict.tier)
    model = settings.model or chosen.model
    store = settings.artifact_store.rstrip("/")
    model_root = settings.model_dir.rstrip("/")
    # model shards (tierfleet.shards): one is the host's model, put to sleep when idle; several run in router mode
    shards = effective_shards(settings.shards, chosen, settings.model_version, settings.shard_versions)
    model_version = settings.model_version
    if len(shards) == 1:
        model, model_version = shards[0].model, shards[0].version
    routed = len(shards) > 1

    # what the host has now, in one round trip: its Python, its CPUs, where current points
    early = bundle.read(host, {
        "python": (PythonVersion, (), {}),
        "allowed": (AllowedCpus, (), {}),
        RUNTIME_ROOT: (Releases, (), {"root": RUNTIME_ROOT}),
        model_root: (Releases, (), {"root": model_root}),
    })
    # every artifact's manifest first: a missing one fails the host before anything changes
    runtime_release = f"{settings.runtime_version}+{settings.runtime_variant or runtime_variant(profile)}"
    model_name = f"{model.name}-{model.quant}"
    python = early["python"] or "3"
    ops_release = wheelhouse.release_name(wheelhouse.ops_version(), python, profile.arch or "x86_64")
    wanted = {"runtime": (manifest_url(store, "llama-server", runtime_release), "runtime")}
    if routed:
        wanted.update({f"shard:{sh.name}": (manifest_url(store, f"{sh.model.name}-{sh.model.quant}", sh.version),
                                            f"shard {sh.name}") for sh in shards})
    else:
        wanted["model"] = (manifest_url(store, model_name, model_version), "model")
    wanted["ops"] = (manifest_url(store, wheelhouse.NAME, ops_release), "ops daemon")
    manifests, error = _manifests(wanted, settings.artifact_key)
    if error:
        failure.fail(name="Artifacts are in the store", message=error)
        return

    placement = place(facts["topology"], early["allowed"], chosen.reserved_cores)
    plan = None
    if shards:
        try:
            plan = shard_plan(shards, {sh.name: manifests[f"shard:{sh.name}"] if routed else manifests["model"]
                                       for sh in shards}, tier=chosen, platform=profile.platform,
                              model_root=model_root, runtime_port=settings.runtime_port, threads=placement.threads,
                              mlock=settings.mlock, budget_gb=settings.shard_memory_budget_gb,
                              ram_bytes=profile.ram_bytes, gpu_memory_bytes=profile.gpu_memory_bytes,
                              source=f"host {host.name}")
        except ConfigError as exc:
            failure.fail(name="Model shards fit the host", message=str(exc))
            return

    apt.packages(name="Host tools for the deploy", packages=HOST_TOOLS, no_recommends=True)
    if profile.platform == "gpu":
        stack.gpu_stack(settings, profile)
    elif profile.platform == "jetson":
        stack.jetson_stack(settings, profile)

    if routed and plan:  # each shard's own release root, read in one more round trip
        model_roots = [root for root, _ in plan.roots.values()]
        now = bundle.read(host, {r: (Releases, (), {"root": r}) for r in model_roots})
        before = {RUNTIME_ROOT: early[RUNTIME_ROOT]["current_target"] or "",
                  **{r: now[r]["current_target"] or "" for r in model_roots}}
    else:
        model_roots = [model_root]
        before = {root: early[root]["current_target"] or "" for root in (RUNTIME_ROOT, model_root)}
    runtime_manifest = manifests["runtime"]
    runtime_art = release.artifact(
        name="llama-server runtime", root=RUNTIME_ROOT, release=runtime_release, manifest=runtime_manifest,
        source=f"{store}/llama-server/{runtime_release}/", compressed=runtime_manifest.compressed, unpack=True,
        verify=settings.verify_releases,
    )
    model_ops = []
    if routed and plan:
        for sh in shards:
            m, (root, rid) = manifests[f"shard:{sh.name}"], plan.roots[sh.name]
            art_name = f"{sh.model.name}-{sh.model.quant}"
            model_ops.append(release.artifact(
                name=f"shard {sh.name}: {art_name} {sh.version}", root=root, release=rid, manifest=m,
                source=f"{store}/{art_name}/{sh.version}/", compressed=m.compressed, verify=settings.verify_releases))
    else:
        model_manifest = manifests["model"]
        model_release = f"{model.name}-{model.quant}-{model_version}"
        model_ops.append(release.artifact(
            name=f"model {model_name} {model_version}", root=model_root, release=model_release,
            manifest=model_manifest, source=f"{store}/{model_name}/{model_version}/",
            compressed=model_manifest.compressed, env={"LLAMA_ARG_MODEL": "{release}/" + model_manifest.entrypoint},
            verify=settings.verify_releases,
        ))

    groups = ["video"] if profile.platform == "jetson" else []
    user = account.system_user(name="Service user", user=SERVICE_USER, shell="/usr/sbin/nologin",
                               home="/nonexistent", groups=groups or None)
    control_group()
    for warning in placement.warnings:
        host.log_styled(f"placement: {warning}", fg="yellow", log_func=logger.warning)
    unit_vars = dict(
        runtime_root=RUNTIME_ROOT,
        model_root=model_root,
        port=settings.runtime_port,
        threads=placement.threads,
        cpus=" ".join(str(c) for c in placement.cpus),
        context_size=chosen.runtime.context_size,
        gpu_layers=chosen.runtime.gpu_layers if profile.platform != "cpu" else 0,
        parallel=chosen.runtime.parallel,
        tier=chosen.name,
        service_user=SERVICE_USER,
        groups=" ".join(groups),
        platform=profile.platform,
        mlock=settings.mlock,
    )
    unit_vars.update(plan.unit_args if plan else {})  # shards: the router's port and preset, or the sleep TTL
    unit = files.template(name="llama-server unit", src=str(TEMPLATES / "llama-server.service.j2"),
                          dest=f"/etc/systemd/system/{UNIT}", mode="644", **unit_vars)
    preset = files.put(name="Model shards preset", src=io.StringIO(plan.preset), dest=PRESET_PATH, mode="644",
                       create_remote_dir=True) if plan and plan.preset else None
    switch_runtime = release.switch(name="Switch runtime", root=RUNTIME_ROOT, release=runtime_release)
    if routed and plan:
        switches = [release.switch(name=f"Switch shard {n}", root=root, release=rid)
                    for n, (root, rid) in plan.roots.items()]
    else:
        switches = [release.switch(name="Switch model", root=model_root, release=model_release)]
    changed = (runtime_art, *model_ops, unit, switch_runtime, *switches, user, *([preset] if preset else []))

    systemd.daemon_reload(name="Reload units", _if=unit.did_change)
    systemd.service(name="llama-server enabled", service=UNIT, running=True, enabled=True)
    runtime.healthy(name="Health gate", port=plan.health_port if plan else settings.runtime_port,
                    timeout=settings.health_timeout, unit=UNIT, restore=before,
                    model=plan.health_model if plan else None, _if=lambda: any(op.did_change() for op in changed))
    release.prune(name="Prune runtime releases", root=RUNTIME_ROOT, keep=settings.keep_releases)
    for root in model_roots:
        release.prune(name=f"Prune model releases ({root})", root=root, keep=settings.keep_releases)
    ops_daemon(settings, profile, chosen.reserved_cores, manifests["ops"], ops_release,
               shards=plan.policy if plan else None)


def control_group() -> None:
    """The control group and its directory, before the runtime's unit starts.

    llama-server's unit hides :data:`CONTROL_DIR` (``InaccessiblePaths=``), which needs the directory to
    exist when it starts: tmpfiles.d makes it at every boot before any service, and this run makes it now.
    The ops daemon's unit keeps it across its own restarts (``RuntimeDirectoryPreserve=yes``).
    """
    server.group(name="Control group", group=CONTROL_GROUP, system=True)
    files.put(name="Control directory at boot", src=io.StringIO(f"d {CONTROL_DIR} 0750 root {CONTROL_GROUP} -\n"),
              dest="/etc/tmpfiles.d/tierfleet-ops.conf", mode="644")
    files.directory(name="Control directory", path=CONTROL_DIR, user="root", group=CONTROL_GROUP, mode="750")


@deploy("tierfleet ops daemon")
def ops_daemon(settings: HostSettings, profile: HostProfile, reserve: int, manifest, ops_release: str,
               shards: dict | None = None) -> None:
    """Install the ops daemon (its own venv, from a verified wheelhouse release), its policy and unit.

    ``shards``: the policy's ``shards`` section (:func:`tierfleet.deploys.shards.shard_plan`), if any."""
    store = settings.artifact_store.rstrip("/")
    art = release.artifact(name="ops daemon wheels", root=OPS_ROOT, release=ops_release, manifest=manifest,
                           source=f"{store}/{wheelhouse.NAME}/{ops_release}/", compressed=manifest.compressed,
                           unpack=True, verify=settings.verify_releases)
    switch = release.switch(name="Switch ops daemon", root=OPS_ROOT, release=ops_release)
    venv = daemon.installed(name="ops daemon venv", venv=OPS_VENV, wheels=f"{OPS_ROOT}/current/wheels",
                            version=wheelhouse.ops_version())
    policy = files.template(
        name="ops policy", src=str(TEMPLATES / "ops-policy.yaml.j2"), dest="/etc/tierfleet-ops/policy.yaml",
        mode="644", create_remote_dir=True,
        ops_host_kind=profile.platform, ops_runtime_port=settings.runtime_port, ops_runtime_unit=UNIT,
        ops_reserve_cores=reserve, ops_default_profile=settings.power_profile,
        ops_shards=shards,
        **energy.policy_variables(host, profile.platform),
    )
    if profile.platform == "jetson":
        # nvpmodel keeps its status here; the daemon's unit may write only directories that exist
        # (nvpmodel.service makes it at boot on a flashed board; a fresh image may not have it yet)
        files.directory(name="nvpmodel status directory", path="/var/lib/nvpmodel")
    server.shell(name="ops policy is valid", commands=[f"{OPS_VENV}/bin/tierfleet-ops check-policy "
                                                       "/etc/tierfleet-ops/policy.yaml"],
                 _if=policy.did_change)
    unit = files.template(
        name="ops daemon unit", src=str(TEMPLATES / "tierfleet-ops.service.j2"),
        dest="/etc/systemd/system/tierfleet-ops.service", mode="644",
        ops_venv=OPS_VENV, ops_socket_group=CONTROL_GROUP, ops_runtime_unit=UNIT, ops_host_kind=profile.platform,
    )
    systemd.daemon_reload(name="Reload units (ops)", _if=unit.did_change)

    def restart() -> bool:
        return any(op.did_change() for op in (art, switch, venv, unit))

    systemd.service(name="ops daemon restarted", service="tierfleet-ops.service", running=True, enabled=True,
                    restarted=True, _if=restart)
    systemd.service(name="ops daemon running", service="tierfleet-ops.service", running=True, enabled=True)
    systemd.service(name="ops daemon reloads its policy", service="tierfleet-ops.service", reloaded=True,
                    _if=lambda: policy.did_change() and not restart())
    daemon.answering(name="ops daemon answers", cli=f"{OPS_VENV}/bin/tierfleet-ops",
                     _if=lambda: restart() or policy.did_change())


@deploy("tierfleet rollback")
def rollback() -> None:
    """Move the model's ``current`` off the release of the host's ``model_version`` (the bad one) to the
    previous release, then restart llama-server and check it answers.

    ``pyinfra inventory/lab.py deploys/rollback.py --data model_version=2`` rolls version 2 back; set the
    inventory's ``model_version`` to the good one afterwards, or the next tier deploy installs 2 again.
    The model is the host's ``model`` data, else its tier's (``auto`` resolved as the tier deploy does).
    """
    resolved = _resolve(None)
    if resolved is None:
        return
    catalog, settings, verdict = resolved.catalog, resolved.settings, resolved.verdict
    if settings.model is None and verdict.tier is None:
        failure.fail(name="Model to roll back", message=f"no tier fits: {verdict.reason}")
        return
    model = settings.model or catalog.tier(verdict.tier).model
    back = release.rollback(name=f"Roll back model {settings.model_version}", root=settings.model_dir.rstrip("/"),
                            release=model_release_id(settings, model))
    runtime.healthy(name="Health gate", port=settings.runtime_port, timeout=settings.health_timeout, unit=UNIT,
                    _if=back.did_change)


@deploy("tierfleet restore")
def restore(links: dict[str, str]) -> None:
    """Put back the releases that served before (root -> ``current`` target), restart, check health.

    A rollout runs this on a host whose upgrade failed after something was switched.
    """
    resolved = _resolve(None)
    if resolved is None:
        return
    settings = resolved.settings
    units = ["tierfleet-ops.service"] if links.get(OPS_ROOT) else []
    runtime.restored(name="Put back what served before", restore=links, port=settings.runtime_port,
                     timeout=settings.health_timeout, unit=UNIT, units=units)
