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
from typing import Annotated, Any, Literal

import pydantic
import yaml

from tierfleet import rules
from tierfleet.exceptions import CatalogError, RuleError
from tierfleet.validation import validate

#: 1 GB as the catalog means it (decimal, like disk and DIMM vendors)
GB = 10**9

Platform = Literal["jetson", "gpu", "cpu"]

#: the largest size or memory figure anything may state, in GB (100 TB): keeps byte counts finite
MAX_GB = 100_000
#: the largest core count, and the largest llama-server figure (its arguments are C ints)
MAX_CORES = 1_000_000
MAX_INT32 = 2**31 - 1

# inf and nan are refused everywhere (a YAML ``.inf`` or an inventory ``float("inf")``)
_Strict = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

#: the shared rules (:mod:`tierfleet.rules`) as pydantic types
ArtifactName = Annotated[str, pydantic.AfterValidator(rules.artifact_name)]
QuantName = Annotated[str, pydantic.AfterValidator(rules.quant)]


class Requirements(pydantic.BaseModel):
    """What a host must have for a tier. Sizes in decimal GB, cores are physical cores."""

    model_config = _Strict

    gpu_memory_gb: float = pydantic.Field(gt=0, le=MAX_GB, description="accelerator memory budget for the model")
    cores: int = pydantic.Field(gt=0, le=MAX_CORES, description="physical CPU cores")
    ram_gb: float = pydantic.Field(gt=0, le=MAX_GB, description="RAM on hosts with separate accelerator memory or none")
    unified_memory_gb: float = pydantic.Field(gt=0, le=MAX_GB,
                                              description="total memory on unified-memory hosts (Jetson)")
    disk_gb: float = pydantic.Field(gt=0, le=MAX_GB, description="free disk at the model directory")


class ModelArtifact(pydantic.BaseModel):
    """A model file a tier serves (GGUF).

    ``<name>-<quant>`` is its name in the artifact store and, with the version, its release id
    (:func:`tierfleet.rules.model_release_id`), so both follow the operations' rules.
    """

    model_config = _Strict

    name: ArtifactName = pydantic.Field(description="model name: letters, digits, '._+-' (max 128)")
    quant: QuantName = pydantic.Field(description="GGUF quantisation, e.g. Q8_0, F16, Q6_K")
    file: ArtifactName = pydantic.Field(description="file name in the artifact store")
    size_gb: float = pydantic.Field(ge=1e-9, le=MAX_GB, description="size of the file in decimal GB (one byte or more)")
    sha256: str | None = pydantic.Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="the file's sha256 (64 lowercase hex digits), for the record: hosts verify the file against "
        "the store's signed manifest, not against this")

    @property
    def size_bytes(self) -> int:
        return int(self.size_gb * GB)


class RuntimeSettings(pydantic.BaseModel):
    """llama-server settings a tier uses."""

    model_config = _Strict

    context_size: int = pydantic.Field(gt=0, le=MAX_INT32, description="llama-server -c")
    gpu_layers: int = pydantic.Field(ge=0, le=MAX_INT32, description="llama-server -ngl (ignored on CPU-only hosts)")
    parallel: int = pydantic.Field(default=1, gt=0, le=MAX_INT32, description="llama-server -np")


class Tier(pydantic.BaseModel):
    """One model tier."""

    model_config = _Strict

    name: str = pydantic.Field(default="", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
                               description="the tier's key in ``tiers``: lowercase letters, digits, '_', '-'")
    description: str
    precision: Literal["int8", "fp16", "mixed", "int4"]
    typical_device: str
    requires: Requirements
    platforms: tuple[Platform, ...] = ("jetson", "gpu", "cpu")
    model: ModelArtifact
    runtime: RuntimeSettings
    reserved_cores: int = pydantic.Field(default=2, ge=0, le=MAX_CORES, description="physical cores kept for the OS")


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

    @pydantic.field_validator("tiers")
    @classmethod
    def _auto_is_reserved(cls, tiers: dict[str, Tier]) -> dict[str, Tier]:
        if "auto" in tiers:
            raise RuleError("'auto' is reserved for the highest tier a host fits; name the tier otherwise")
        return tiers

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
