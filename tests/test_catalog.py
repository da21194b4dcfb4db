"""The tier catalog and host settings: valid data loads, bad data names file, key and what is allowed."""

from __future__ import annotations

import pytest

from tierfleet.catalog import load_catalog, parse_catalog
from tierfleet.exceptions import CatalogError, ConfigError, InventoryError
from tierfleet.settings import host_settings


def test_packaged_catalog_matches_the_article(catalog):
    rows = {t.name: (t.precision, t.requires.gpu_memory_gb, t.requires.cores, t.requires.ram_gb, t.requires.disk_gb)
            for t in catalog.ordered()}
    assert rows == {
        "basic": ("int8", 2, 4, 8, 1.5),
        "advanced": ("fp16", 4, 8, 16, 3),
        "enterprise": ("mixed", 8, 16, 32, 6),
    }
    assert [t.reserved_cores for t in catalog.ordered()] == [2, 2, 2]
    assert catalog.tier("enterprise").model.quant == "Q6_K"


def test_unknown_tier_lists_allowed(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.tier("platinum")
    assert str(exc.value).endswith("tier: unknown tier 'platinum'; allowed: basic, advanced, enterprise")


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (("cores: 4", "cores: four"), "tiers.basic.requires.cores", "valid integer"),
        (("cores: 4", "cores: -4"), "tiers.basic.requires.cores", "greater than 0"),
        (("precision: int8", "precision: int3"), "tiers.basic.precision", "'int8', 'fp16', 'mixed' or 'int4'"),
        (("    platforms: [jetson, gpu, cpu]\n    model:\n      name: DeepSeek-R1-Distill-Qwen-1.5B\n",
          "    platforms: [jetson, tpu]\n    model:\n      name: DeepSeek-R1-Distill-Qwen-1.5B\n"),
         "tiers.basic.platforms.1", "'jetson', 'gpu' or 'cpu'"),
        (("      size_gb: 1.89", "      size_gb: 1.89\n      colour: blue"), "tiers.basic.model.colour", "extra inputs"),
        (("file: DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf", "file: ../../etc/passwd;rm"), "tiers.basic.model.file",
         "allowed: letters, digits, '.', '_', '+', '-'"),
        (("name: DeepSeek-R1-Distill-Qwen-1.5B", "name: x; touch /tmp/p"), "tiers.basic.model.name",
         "allowed: letters, digits, '.', '_', '+', '-'"),
        (("quant: Q8_0", "quant: ../"), "tiers.basic.model.quant", "allowed: GGUF quantisation name"),
        (("size_gb: 1.89", "size_gb: .inf"), "tiers.basic.model.size_gb", "finite number"),
        (("schema: 1", "schema: 2"), "schema", "input should be 1"),
    ],
)
def test_bad_catalog_names_file_and_key(catalog, edit, key, problem):
    text = open(catalog.source).read()
    assert edit[0] in text
    with pytest.raises(CatalogError) as exc:
        parse_catalog(text.replace(edit[0], edit[1], 1), "my-tiers.yaml")
    assert exc.value.source == "my-tiers.yaml"
    assert exc.value.key == key
    assert problem in exc.value.problem


def test_catalog_yaml_and_file_errors(tmp_path):
    with pytest.raises(CatalogError, match="not valid YAML"):
        parse_catalog("tiers: [", "x.yaml")
    with pytest.raises(CatalogError, match="expected a mapping"):
        parse_catalog("- a\n- b\n", "x.yaml")
    with pytest.raises(CatalogError, match=r"missing.yaml: \(file\): cannot read"):
        load_catalog(tmp_path / "missing.yaml")


def test_catalog_errors_are_value_errors(catalog):
    with pytest.raises(ValueError):
        catalog.tier("nope")
    assert issubclass(CatalogError, ConfigError)


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"tier": "gold"}, "tier", "unknown tier 'gold'; allowed: auto, basic, advanced, enterprise"),
        ({"model_dir": "relative/dir"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/m; rm -rf /"}, "model_dir", "allowed: absolute directory"),
        ({"runtime_mode": "k8s"}, "runtime_mode", "'native' or 'container'"),
        ({"nvidia_driver_branch": "latest"}, "nvidia_driver_branch", "driver branch such as 570"),
        ({"artifact_store": "ftp://x"}, "artifact_store", "allowed: http(s) URL"),
        ({"model": {"name": "x", "quant": "Q4", "file": "x.gguf"}}, "model.size_gb", "required key is missing"),
    ],
)
def test_bad_host_settings(catalog, data, key, problem):
    with pytest.raises(InventoryError) as exc:
        host_settings(data, catalog, "inventory/edge.py: host nano-01")
    assert exc.value.source == "inventory/edge.py: host nano-01"
    assert exc.value.key == key
    assert problem in exc.value.problem


def test_host_settings_defaults_and_override(catalog):
    s = host_settings({"tier": "advanced", "ssh_user": "x", "model_dir": "/srv/models"}, catalog, "inv")
    assert (s.tier, s.model_dir, s.runtime_mode, s.model) == ("advanced", "/srv/models", "native", None)
    assert host_settings({}, catalog, "inv").tier == "auto"
