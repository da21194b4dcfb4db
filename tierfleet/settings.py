"""Per-host tierfleet settings, read from pyinfra inventory data (host data > group data > all.py).

Every key has a type, a default and a description here, in one place (:class:`HostSettings`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic

from tierfleet import rules
from tierfleet.artifacts.signing import load_public_key
from tierfleet.catalog import Catalog, ModelArtifact
from tierfleet.exceptions import ConfigError, InventoryError, RuleError
from tierfleet.shards import ShardSpec, check_shard_list, shard_version
from tierfleet.validation import validate

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]{1,127}")

#: the shared rules (:mod:`tierfleet.rules`) as pydantic types
ModelDir = Annotated[str, pydantic.AfterValidator(rules.model_dir)]
HttpUrl = Annotated[str, pydantic.AfterValidator(rules.http_url)]
Store = Annotated[str, pydantic.AfterValidator(rules.store)]
#: a version in the store (model_version, runtime_version, a shard's)
Version = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]

DEFAULT_MODEL_DIR = "/var/lib/tierfleet/models"


class HostSettings(pydantic.BaseModel):
    """The inventory keys tierfleet reads. Unknown keys (ssh_*, other deploys' data) are ignored."""

    # pyinfra's --data turns "2" into 2: versions and branches are strings either way
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    tier: str = pydantic.Field(
        default="auto", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="tier name from the catalog, or 'auto' for the highest tier the host fits",
    )
    model: ModelArtifact | None = pydantic.Field(
        default=None, description="override the tier's model artifact (name, quant, file, size_gb, sha256)"
    )
    model_dir: ModelDir = pydantic.Field(
        default=DEFAULT_MODEL_DIR,
        description=f"directory for model releases: {rules.MODEL_DIR_ALLOWED}",
    )
    model_version: str = pydantic.Field(
        default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", description="version of the model artifact in the store"
    )
    runtime_version: str = pydantic.Field(
        default="0.3.36", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
        description="llama-server build (llama-cpp-python version); the store entry is <version>+<variant>",
    )
    runtime_variant: str | None = pydantic.Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="llama-server build variant in the store (default: chosen from the host's platform, "
        "architecture and CPU flags, see tierfleet.deploys.tier.runtime_variant)",
    )
    runtime_port: int = pydantic.Field(default=8080, ge=1024, le=65535, description="llama-server port on 127.0.0.1")
    mlock: bool = pydantic.Field(default=False, description="lock the model in RAM (llama-server --mlock)")
    keep_releases: int = pydantic.Field(default=3, ge=2, le=20, description="releases kept per artifact (>= 2 for rollback)")
    health_timeout: int = pydantic.Field(default=120, ge=5, le=3600, description="seconds the health gate waits")
    runtime_mode: Literal["native", "container"] = pydantic.Field(
        default="native",
        description="container: GPU nodes also get nvidia-container-toolkit for containerised runtimes "
        "(the model server itself runs as a native systemd unit either way)",
    )
    artifact_store: Store = pydantic.Field(
        default="https://artifacts.example.net/tierfleet",
        description="URL (http/https) or absolute local path of the fleet's artifact store",
    )
    nvidia_repo: HttpUrl | None = pydantic.Field(
        default=None,
        description="http(s) URL of the NVIDIA CUDA apt repository or the fleet's mirror of it "
        "(default: NVIDIA's repository for the host's OS release and architecture)",
    )
    nvidia_repo_suite: str = pydantic.Field(
        default="/", pattern=r"^(/|[a-z0-9][a-z0-9._-]*( [a-z0-9._-]+)*)$",
        description="apt suite and components after the URL: '/' for NVIDIA's flat repository, e.g. 'lab main' for a mirror",
    )
    nvidia_repo_key: HttpUrl | None = pydantic.Field(
        default=None,
        description="http(s) URL of the ASCII-armoured key that signs the NVIDIA repository "
        "(default: <nvidia_repo>/3bf863cc.pub)",
    )
    nvidia_cuda_packages: tuple[str, ...] = pydantic.Field(
        default=("cuda-cudart-12-8", "libcublas-12-8"),
        description="CUDA runtime libraries llama-server needs on GPU nodes (apt package names)",
    )
    nvidia_driver_branch: str = pydantic.Field(
        default="570", pattern=r"^[0-9]{3}(-open)?$", description="driver branch such as 570 or 570-open"
    )
    l4t_repo: HttpUrl = pydantic.Field(
        default="https://repo.download.nvidia.com/jetson",
        description="http(s) URL of the Jetson L4T apt repository or the fleet's mirror of it",
    )
    l4t_repo_key: HttpUrl = pydantic.Field(
        default="https://repo.download.nvidia.com/jetson/jetson-ota-public.asc",
        description="http(s) URL of the ASCII-armoured key that signs the L4T repository",
    )
    jetpack_packages: tuple[str, ...] = pydantic.Field(
        default=("nvidia-cuda",), description="JetPack components to install on Jetsons (never nvidia-cuda-toolkit)"
    )
    power_profile: str = pydantic.Field(
        default="balanced", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="ops daemon profile to start in"
    )
    artifact_key: str | None = pydantic.Field(
        default=None,
        description="the fleet's artifact signing key, ASCII-armoured OpenPGP (the text, or the path of a .asc "
        "file on the controller): every manifest must carry a valid signature by it, checked on the host with "
        "gpgv before anything is fetched; required for an http:// store",
    )
    verify_releases: bool = pydantic.Field(
        default=False,
        description="re-hash installed releases against their manifests on every run (reads every byte; "
        "otherwise a release is checked by its files' sizes) and fetch a damaged one again",
    )
    nvidia_repo_key_sha256: str | None = pydantic.Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the file at nvidia_repo_key (64 lowercase hex digits): the key is installed only "
        "when it matches; required on GPU nodes",
    )
    l4t_repo_key_sha256: str | None = pydantic.Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the file at l4t_repo_key (64 lowercase hex digits): the key is installed only "
        "when it matches; required on Jetsons",
    )
    shards: tuple[ShardSpec, ...] | None = pydantic.Field(
        default=None,
        description="model shards loaded on demand ({name, model, version, ttl, preload, pinned, context_size, "
        "parallel}); overrides the tier's; [] turns the tier's off",
    )
    shard_versions: dict[str, Version] | None = pydantic.Field(
        default=None,
        description="versions of the host's shards by shard name (a mapping, or 'chat=2,code=3' as --data and "
        "tierfleet upgrade --shard-version give it); over each shard's own version. A shard that names no "
        "version takes model_version",
    )
    shard_memory_budget_gb: float | None = pydantic.Field(
        default=None, gt=0, le=100000,
        description="memory the loaded shards may hold, decimal GB (default: from the host's GPU memory, unified "
        "memory or RAM, see tierfleet.shards.default_budget)",
    )

    @pydantic.field_validator("shard_versions", mode="before")
    @classmethod
    def _shard_versions(cls, v: Any) -> Any:
        return parse_shard_versions(v)


def parse_shard_versions(value: Any) -> Any:
    """``chat=2,code=3`` (what ``--data`` carries) into a mapping; a mapping is left to the field's own checks.

    >>> parse_shard_versions("chat=2, code=3"), parse_shard_versions({"chat": "2"})
    ({'chat': '2', 'code': '3'}, {'chat': '2'})
    >>> parse_shard_versions("chat")
    Traceback (most recent call last):
    ...
    ValueError: 'chat' is not NAME=VERSION (e.g. chat=2,code=3)
    """
    if not isinstance(value, str):
        return value
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, version = (x.strip() for x in item.partition("="))
        if not sep or not name or not version:
            raise ValueError(f"{item!r} is not NAME=VERSION (e.g. chat=2,code=3)")
        if name in out:
            raise ValueError(f"shard {name!r} is given twice")
        out[name] = version
    return out


CUDA_REPOS = "https://developer.download.nvidia.com/compute/cuda/repos"


def cuda_repo_for(os_id: str | None, version_id: str | None, arch: str | None) -> str | None:
    """NVIDIA's CUDA apt repository for an OS release and machine architecture, or None if unknown.

    >>> cuda_repo_for("ubuntu", "22.04", "x86_64")
    'https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64'
    >>> cuda_repo_for("ubuntu", "24.04", "aarch64")
    'https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/sbsa'
    >>> cuda_repo_for(None, "12", "x86_64") is None
    True
    """
    machine = {"x86_64": "x86_64", "aarch64": "sbsa"}.get(arch or "")
    if not (os_id and version_id and machine and re.fullmatch(r"[a-z]+", os_id)):
        return None
    return f"{CUDA_REPOS}/{os_id}{version_id.replace('.', '')}/{machine}"


#: the inventory keys :class:`HostSettings` reads
KEYS = tuple(HostSettings.model_fields)


def host_settings(data: dict[str, Any], catalog: Catalog, source: str) -> HostSettings:
    """Validate one host's data; ``source`` names the inventory file and host in errors.

    >>> from tierfleet.catalog import load_catalog
    >>> host_settings({"tier": "basic", "ssh_user": "root"}, load_catalog(), "inv.py: host a").tier
    'basic'
    >>> host_settings({"tier": "gold"}, load_catalog(), "inv.py: host a")
    Traceback (most recent call last):
    ...
    tierfleet.exceptions.InventoryError: inv.py: host a: tier: unknown tier 'gold'; allowed: auto, basic, advanced, enterprise
    """
    present = {key: data[key] for key in KEYS if data.get(key) is not None}
    settings = validate(HostSettings, present, source, error=InventoryError)
    for key in ("nvidia_cuda_packages", "jetpack_packages"):
        for package in getattr(settings, key):
            if not _PACKAGE_RE.fullmatch(package) or (key == "jetpack_packages" and package == "nvidia-cuda-toolkit"):
                allowed = "Debian package names; never Ubuntu's nvidia-cuda-toolkit on a Jetson"
                raise InventoryError(source, key, f"{package!r} is not allowed ({allowed})")
    if settings.artifact_key is not None:
        try:
            armored = load_public_key(settings.artifact_key, source, "artifact_key")
        except ConfigError as exc:
            raise InventoryError(exc.source, exc.key, exc.problem) from None
        settings = settings.model_copy(update={"artifact_key": armored})
    elif settings.artifact_store.startswith("http://"):
        raise InventoryError(source, "artifact_store", f"{settings.artifact_store!r}: an http:// store is allowed "
                             "only with signed manifests; set artifact_key (or use https:// or a local path)")
    if settings.shards:
        check_shard_list(settings.shards, source, error=InventoryError)
    if settings.tier != "auto" and settings.tier not in catalog.tiers:
        allowed = ", ".join(("auto", *catalog.names))
        raise InventoryError(source, "tier", f"unknown tier {settings.tier!r}; allowed: {allowed}")
    _check_shard_versions(settings, catalog, source)
    _check_release_ids(settings, catalog, source)
    return settings


def _check_shard_versions(settings: HostSettings, catalog: Catalog, source: str) -> None:
    """Every name in ``shard_versions`` is a shard the host serves, and every shard's release id (at the version
    :func:`tierfleet.shards.shard_version` gives it) is valid."""
    if settings.shards is not None:
        shards = list(settings.shards)
    else:
        tiers = catalog.ordered() if settings.tier == "auto" else [catalog.tier(settings.tier)]
        shards = [sh for t in tiers for sh in t.shards]
    names = {sh.name: sh for sh in shards}
    versions = settings.shard_versions or {}
    for name in versions:
        if name not in names:
            served = ", ".join(sorted(names)) or "none (the host serves one model: use model_version)"
            raise InventoryError(source, "shard_versions", f"no shard {name!r} on this host; its shards: {served}")
    for sh in shards:
        version, key = shard_version(sh, settings.model_version, versions)
        try:
            rules.model_release_id(sh.model.name, sh.model.quant, version)
        except RuleError as exc:
            raise InventoryError(source, key, f"shard {sh.name}: {exc}") from None


def _check_release_ids(settings: HostSettings, catalog: Catalog, source: str) -> None:
    """The release ids the deploy builds from several keys must pass the operations' rule too."""
    if settings.model is not None:
        models, key = [settings.model], "model"
    else:
        tiers = catalog.ordered() if settings.tier == "auto" else [catalog.tier(settings.tier)]
        models, key = [t.model for t in tiers], "model_version"
    for model in models:
        try:
            rules.model_release_id(model.name, model.quant, settings.model_version)
        except RuleError as exc:
            raise InventoryError(source, key, f"{exc} (model {model.name} {model.quant}, "
                                 f"model_version {settings.model_version!r})") from None
    if settings.runtime_variant is not None:
        try:
            rules.runtime_release_id(settings.runtime_version, settings.runtime_variant)
        except RuleError as exc:
            raise InventoryError(source, "runtime_variant", f"{exc} (runtime_version "
                                 f"{settings.runtime_version!r}, runtime_variant {settings.runtime_variant!r})") from None
