"""The tier catalog: validated data describing what each model tier needs and installs.

The catalog ships as ``tierfleet/data/tiers.yaml``; a fleet may point ``TIERFLEET_CATALOG`` (or the
``--catalog`` option) at its own file with the same schema.

>>> catalog = load_catalog()
>>> catalog.tier("basic").requires.cores
4
>>> [t.name for t in catalog.ordered()]
['basic', 'advanced', 'enterprise']
"""

from __future__ import annotations

import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from tierfleet.exceptions import CatalogError
from tierfleet.validation import validate

#: 1 GB as the catalog means it (decimal, like disk and DIMM vendors)
GB = 10**9

Platform = Literal["jetson", "gpu", "cpu"]

_Strict = pydantic.ConfigDict(extra="forbid", frozen=True)


class Requirements(pydantic.BaseModel):
    """What a host must have for a tier. Sizes in decimal GB, cores are physical cores."""

    model_config = _Strict

    gpu_memory_gb: float = pydantic.Field(gt=0, description="accelerator memory budget for the model")
    cores: int = pydantic.Field(gt=0, description="physical CPU cores")
    ram_gb: float = pydantic.Field(gt=0, description="RAM on hosts with separate accelerator memory or none")
    unified_memory_gb: float = pydantic.Field(gt=0, description="total memory on unified-memory hosts (Jetson)")
    disk_gb: float = pydantic.Field(gt=0, description="free disk at the model directory")


class ModelArtifact(pydantic.BaseModel):
    """A model file a tier serves (GGUF)."""

    model_config = _Strict

    name: str = pydantic.Field(min_length=1)
    quant: str = pydantic.Field(min_length=1, description="GGUF quantisation, e.g. Q8_0, F16, Q6_K")
    file: str = pydantic.Field(pattern=r"^[A-Za-z0-9._+-]+$", description="file name in the artifact store")
    size_gb: float = pydantic.Field(gt=0, description="size of the file in decimal GB")
    sha256: str | None = pydantic.Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * GB)


class RuntimeSettings(pydantic.BaseModel):
    """llama-server settings a tier uses."""

    model_config = _Strict

    context_size: int = pydantic.Field(gt=0, description="llama-server -c")
    gpu_layers: int = pydantic.Field(ge=0, description="llama-server -ngl (ignored on CPU-only hosts)")
    parallel: int = pydantic.Field(default=1, gt=0, description="llama-server -np")


class Tier(pydantic.BaseModel):
    """One model tier."""

    model_config = _Strict

    name: str = ""
    description: str
    precision: Literal["int8", "fp16", "mixed", "int4"]
    typical_device: str
    requires: Requirements
    platforms: tuple[Platform, ...] = ("jetson", "gpu", "cpu")
    model: ModelArtifact
    runtime: RuntimeSettings
    reserved_cores: int = pydantic.Field(default=2, ge=0, description="physical cores kept for the OS")
    shards: tuple[Any, ...] = pydantic.Field(
        default=(), description="model shards loaded on demand instead of the one model (tierfleet.shards); "
        "a host's own 'shards' data wins; none: the tier's model, always loaded")

    @pydantic.field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, v: Any) -> Any:
        from tierfleet.shards import ShardSpec

        if not isinstance(v, (list, tuple)):
            raise ValueError("must be a list of shards")
        names = [x.get("name") if isinstance(x, dict) else getattr(x, "name", None) for x in v]
        for n in names:
            if n is not None and names.count(n) > 1:
                raise ValueError(f"shard {n!r} is listed twice; shard names are unique")
        return tuple(ShardSpec.model_validate(x) if not isinstance(x, ShardSpec) else x for x in v)


class Catalog(pydantic.BaseModel):
    """All tiers, ordered from smallest to largest requirement."""

    model_config = _Strict

    schema_: Literal[1] = pydantic.Field(alias="schema")
    tiers: dict[str, Tier] = pydantic.Field(min_length=1)
    source: str = "<memory>"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _name_tiers(cls, data: Any) -> Any:
        """Each tier's name is its key in ``tiers``."""
        tiers = data.get("tiers") if isinstance(data, dict) else None
        if isinstance(tiers, dict):
            named = {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in tiers.items()}
            data = {**data, "tiers": named}
        return data

    def tier(self, name: str) -> Tier:
        """Return tier ``name``; raise :class:`CatalogError` naming the allowed names otherwise."""
        try:
            return self.tiers[name]
        except (KeyError, TypeError):
            allowed = ", ".join(self.names)
            raise CatalogError(self.source, "tier", f"unknown tier {name!r}; allowed: {allowed}") from None

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.ordered())

    def ordered(self) -> list[Tier]:
        """Tiers from the smallest to the largest requirement (GPU memory, then cores, then RAM)."""
        return sorted(
            self.tiers.values(),
            key=lambda t: (t.requires.gpu_memory_gb, t.requires.cores, t.requires.ram_gb),
        )


def default_catalog_path() -> str:
    """The catalog file in use: ``$TIERFLEET_CATALOG`` or the packaged ``tiers.yaml``."""
    override = os.environ.get("TIERFLEET_CATALOG")
    if override:
        return override
    return str(resources.files("tierfleet") / "data" / "tiers.yaml")


def parse_catalog(text: str, source: str = "<memory>") -> Catalog:
    """Parse and validate catalog YAML. Pure: no I/O."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(source, "(yaml)", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(source, "(top level)", "expected a mapping with keys 'schema' and 'tiers'")
    data = {**data, "source": source}
    return validate(Catalog, data, source, error=CatalogError)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate the catalog at ``path`` (default: :func:`default_catalog_path`)."""
    source = str(path or default_catalog_path())
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(source, "(file)", f"cannot read: {exc.strerror}") from None
    return parse_catalog(text, source)
