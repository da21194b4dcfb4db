"""Inventory validation: a bad inventory stops with ``file: host: key: what is allowed`` before anything
connects, and nothing the inventory accepts is refused later by an operation (property-tested)."""

from __future__ import annotations

import math
import posixpath
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from pyinfra.api import OperationValueError

from tests.fleets import fake_inventory
from tests.operations.harness import run_operation
from tierfleet import rules
from tierfleet.catalog import ModelArtifact, load_catalog
from tierfleet.deploys import tier as tier_deploy
from tierfleet.exceptions import InventoryError
from tierfleet.facts.artifacts import manifest_url
from tierfleet.operations import release
from tierfleet.preflight import check_host
from tierfleet.profile import build_profile
from tierfleet.settings import HostSettings, host_settings

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "inventory/edge.py: host nano-01"
MODEL = {"name": "tiny-llama", "quant": "Q8_0", "file": "tiny-q8_0.gguf", "size_gb": 0.2}
CATALOG = load_catalog()
RELEASES = "tierfleet.facts.release.Releases"
MANIFEST = {"schema": 1, "kind": "model", "name": "tiny", "version": "1", "variant": None,
            "entrypoint": "tiny.gguf", "files": [{"path": "tiny.gguf", "size": 10, "sha256": "a" * 64}]}


def settings_of(data: dict) -> HostSettings:
    return host_settings(data, CATALOG, SOURCE)


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        # sizes: inf crashed preflight (OverflowError); nan, negative and huge figures are refused too
        ({"model": {**MODEL, "size_gb": math.inf}}, "model.size_gb", "finite number"),
        ({"model": {**MODEL, "size_gb": "inf"}}, "model.size_gb", "finite number"),
        ({"model": {**MODEL, "size_gb": math.nan}}, "model.size_gb", "finite number"),
        ({"model": {**MODEL, "size_gb": -1}}, "model.size_gb", "greater than or equal to 0.000000001"),
        ({"model": {**MODEL, "size_gb": 1e-12}}, "model.size_gb", "greater than or equal to 0.000000001"),
        ({"model": {**MODEL, "size_gb": 1e300}}, "model.size_gb", "less than or equal to 100000"),
        ({"model": {**MODEL, "size_gb": "1e400"}}, "model.size_gb", "finite number"),
        # names reach the shell, the release directory and the store URL
        ({"model": {**MODEL, "name": "x; touch /tmp/p"}}, "model.name", "allowed: letters, digits"),
        ({"model": {**MODEL, "name": "../../etc"}}, "model.name", "allowed: letters, digits"),
        ({"model": {**MODEL, "name": "a/b"}}, "model.name", "allowed: letters, digits"),
        ({"model": {**MODEL, "name": "tiny\n"}}, "model.name", "allowed: letters, digits"),
        ({"model": {**MODEL, "name": ""}}, "model.name", "allowed: letters, digits"),
        ({"model": {**MODEL, "quant": "../"}}, "model.quant", "allowed: GGUF quantisation name"),
        ({"model": {**MODEL, "quant": "Q8_0;id"}}, "model.quant", "allowed: GGUF quantisation name"),
        ({"model": {**MODEL, "quant": "Q8-0"}}, "model.quant", "allowed: GGUF quantisation name"),
        ({"model": {**MODEL, "file": ".."}}, "model.file", "allowed: letters, digits"),
        # model_dir: the release root the operations prune under
        ({"model_dir": "/"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "//"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/."}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/var/lib/../../etc"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/models/.."}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/models/."}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/./models"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv//models"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/models/"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/.hidden"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/a b"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/m\n"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/m\x00"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "relative/dir"}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/srv/" + "m" * 1100}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": "/proc/models"}, "model_dir", "/proc is a system directory"),
        ({"model_dir": "/sys/fs/models"}, "model_dir", "/sys is a system directory"),
        ({"model_dir": "/dev/shm/models"}, "model_dir", "/dev is a system directory"),
        ({"model_dir": "/etc/tierfleet"}, "model_dir", "/etc is a system directory"),
        ({"model_dir": "/usr/local/models"}, "model_dir", "/usr is a system directory"),
        ({"model_dir": "/boot/models"}, "model_dir", "/boot is a system directory"),
        ({"model_dir": "/run/models"}, "model_dir", "/run is a system directory"),
        ({"model_dir": "/var/lib/dpkg/models"}, "model_dir", "/var/lib/dpkg is a system directory"),
        ({"model_dir": "/var/lib"}, "model_dir", "/var/lib is shared by other software"),
        ({"model_dir": "/opt/tierfleet/runtime"}, "model_dir", "/opt/tierfleet/runtime is tierfleet's own"),
        ({"model_dir": "/opt/tierfleet/ops/m"}, "model_dir", "/opt/tierfleet/ops is tierfleet's own"),
        ({"model_dir": "/opt/tierfleet"}, "model_dir", "/opt/tierfleet/runtime is tierfleet's own"),
        ({"model_dir": 5}, "model_dir", "allowed: absolute directory"),
        ({"model_dir": ["/srv/m"]}, "model_dir", "valid string"),
        # release ids are at most 128 characters (tierfleet.artifacts.manifest.NAME_RE)
        ({"model": {**MODEL, "name": "m" * 120}, "model_version": "2026.11.1"}, "model",
         "release id <name>-<quant>-<version> is 135 characters; at most 128"),
        ({"runtime_version": "1" * 64, "runtime_variant": "v" * 64}, "runtime_variant",
         "release id <version>+<variant> is 129 characters; at most 128"),
        # URLs: no dot segments, no empty host, no query, a real port
        ({"artifact_store": "https://store.example/../../etc"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https://store.example/a/./b"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https://store.example//b"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https:///store"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https://:80/store"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https://store.example:99999/"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "https://store.example/a?b=1"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "ftp://x"}, "artifact_store", "http(s) URL"),
        ({"artifact_store": "/srv/../etc"}, "artifact_store", "absolute directory"),
        ({"artifact_store": "/"}, "artifact_store", "absolute directory"),
        ({"nvidia_repo": "https://mirror.lab/apt/.."}, "nvidia_repo", "http(s) URL"),
        ({"l4t_repo_key": "https://mirror.lab/k.asc\n"}, "l4t_repo_key", "http(s) URL"),
        ({"nvidia_cuda_packages": ["libcublas-12-8\n"]}, "nvidia_cuda_packages", "Debian package names"),
    ],
)
def test_bad_inventory_value_names_file_key_and_what_is_allowed(data, key, problem):
    with pytest.raises(InventoryError) as exc:
        settings_of(data)
    assert (exc.value.source, exc.value.key) == (SOURCE, key)
    assert problem in exc.value.problem
    assert str(exc.value).startswith(f"{SOURCE}: {key}: ")


@pytest.mark.parametrize("model_dir", ["/srv/models", "/var/lib/tierfleet/models", "/home/ai/models",
                                       "/data/models.v2", "/mnt/nvme0/llm", "/opt/models", "/var/tmp/m"])
def test_sane_model_dirs_are_accepted(model_dir):
    assert settings_of({"model_dir": model_dir}).model_dir == model_dir


@pytest.mark.parametrize("store", ["https://artifacts.example.net/tierfleet", "https://artifacts.example.net/t/",
                                   "https://127.0.4.10:8080/artifacts", "https://artifacts.lab", "/srv/store",
                                   "/srv/store/"])
def test_sane_stores_are_accepted(store):
    assert settings_of({"artifact_store": store}).artifact_store == store


@pytest.mark.parametrize("url", ["http://127.0.4.10:8080/artifacts", "http://artifacts.lab/artifacts",
                                 "http://mirror.lab/apt/tierfleet-lab.asc"])
def test_plain_http_urls_follow_the_url_rule(url):
    """(An http:// store also needs the fleet's artifact_key; the URL rule itself is the same.)"""
    assert rules.store(url) == rules.http_url(url) == url


def test_the_deploy_roots_are_reserved():
    """model_dir may not land in the roots the tier deploy keeps for the runtime and the ops daemon."""
    for own in (tier_deploy.RUNTIME_ROOT, tier_deploy.OPS_ROOT, tier_deploy.OPS_VENV):
        for model_dir in (own, f"{own}/models"):
            with pytest.raises(InventoryError, match="is tierfleet's own"):
                settings_of({"model_dir": model_dir})


def test_long_inputs_are_quoted_short():
    with pytest.raises(InventoryError) as exc:
        settings_of({"tier": "x" * 100_000})
    assert len(str(exc.value)) < 400 and "(100002 characters)" in str(exc.value)


def test_catalog_refuses_infinite_figures_and_bad_tier_names():
    from tierfleet.catalog import parse_catalog
    from tierfleet.exceptions import CatalogError

    text = open(CATALOG.source).read()
    for old, new, key in [("disk_gb: 1.5", "disk_gb: .inf", "tiers.basic.requires.disk_gb"),
                          ("ram_gb: 8", "ram_gb: .nan", "tiers.basic.requires.ram_gb"),
                          ("size_gb: 1.89", "size_gb: 1e308", "tiers.basic.model.size_gb"),
                          ("context_size: 4096", "context_size: 99999999999", "tiers.basic.runtime.context_size"),
                          ("  basic:\n", "  \"basic\\nExecStartPre=/bin/sh\":\n", "tiers.basic\nExecStartPre=/bin/sh.name"),
                          ("  basic:\n", "  auto:\n", "tiers")]:
        with pytest.raises(CatalogError) as exc:
            parse_catalog(text.replace(old, new, 1), "tiers.yaml")
        assert exc.value.key == key, exc.value


def test_infinite_size_in_an_inventory_stops_preflight_before_anything_connects(tmp_path):
    """The CLI exits 2 with file: host: key: problem, no traceback, and never dials the host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        inv = fake_inventory(tmp_path / "fleet.py", {"orin": ("orin-nano", {"model": {**MODEL, "size_gb": math.inf}})})
        inv.write_text(inv.read_text() + f'hosts.append(("127.0.0.1", {{"ssh_port": {port}, "ssh_user": "nobody"}}))\n')
        run = subprocess.run([sys.executable, "-m", "tierfleet", "preflight", "-i", str(inv)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: validation came first
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{inv}: host @fake/orin: model.size_gb: input should be a finite number (got inf)" in run.stderr


def test_operations_refuse_roots_that_normalise_to_the_filesystem_root():
    """``/.`` used to pass the operations' root check and became ``/`` (prune then works under /releases)."""
    for root in ("/.", "/./.", "/..", "/srv/../.."):
        with pytest.raises(OperationValueError, match=r"root: .* is not allowed; expected an absolute path other than /"):
            run_operation(release.prune, {"root": root}, {})
    with pytest.raises(OperationValueError, match=r"release: 'tiny-1\\n' is not allowed"):
        run_operation(release.switch, {"root": "/srv/m", "release": "tiny-1\n"}, {})


# --- properties: what the inventory accepts, the operations accept -----------------------------------------

HOSTILE = list("aZ09._+-/ ;$`'\"\n\x00?#%:@~\\") + ["²", "١", "..", "proc", "etc", "opt", "tierfleet", "runtime"]
fragments = st.lists(st.sampled_from(HOSTILE), max_size=12).map("".join)
names = st.one_of(fragments, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,130}", fullmatch=True), st.text(max_size=20))
quants = st.one_of(fragments, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,34}", fullmatch=True))
versions = st.one_of(fragments, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,70}", fullmatch=True))
components = st.one_of(st.sampled_from(["", ".", "..", "...", "srv", "var", "lib", "proc", "opt", "tierfleet",
                                        "runtime", "models", "a b", "m\n", "x;y"]), fragments)
plain = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,12}", fullmatch=True)
paths = st.one_of(st.lists(plain, min_size=1, max_size=4), st.lists(st.one_of(plain, components), max_size=5),
                  ).map(lambda parts: "/" + "/".join(parts))
hosts = st.sampled_from(["artifacts.lab", "127.0.0.1", "", "a..b", "-x", "x_y", "store.example:8080", ":80",
                         "h:99999", "h:0"])
urls = st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}",
                 st.sampled_from(["http", "https", "ftp", "HTTP"]), hosts, st.one_of(st.just(""), paths))
sizes = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.sampled_from(["inf", "1e400", "1"]))
models = st.one_of(st.none(), st.fixed_dictionaries({"name": names, "quant": quants, "file": names, "size_gb": sizes}))
inventories = st.fixed_dictionaries({}, optional={
    "model": models,
    "model_dir": st.one_of(paths, fragments),
    "model_version": versions,
    "artifact_store": st.one_of(urls, paths),
    "runtime_version": versions,
    "runtime_variant": st.one_of(st.none(), versions.map(str.lower)),
    "tier": st.sampled_from(["auto", "basic", "advanced", "enterprise", "gold"]),
})


def _resolved_path(url: str) -> tuple[str, str]:
    """(origin, path) of a store URL or path with '.' and '..' segments resolved, as curl and the kernel do."""
    if url.startswith("/"):
        return "", posixpath.normpath(url)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", posixpath.normpath(parts.path or "/")


def _stays_in_store(store: str, url: str) -> bool:
    origin, path = _resolved_path(url)
    store_origin, store_path = _resolved_path(store.rstrip("/") or "/")
    return origin == store_origin and path.startswith(store_path.rstrip("/") + "/")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inventories)
def test_anything_the_inventory_accepts_the_operations_accept(data):
    try:
        s = host_settings(data, CATALOG, SOURCE)
    except InventoryError as exc:
        event(f"refused: {exc.key}")  # up front, naming file and key
        return
    event("accepted")
    tiers = CATALOG.ordered() if s.tier == "auto" else [CATALOG.tier(s.tier)]
    store = s.artifact_store.rstrip("/")
    root = s.model_dir.rstrip("/")
    for model in [s.model] if s.model else [t.model for t in tiers]:
        model_name = f"{model.name}-{model.quant}"
        rid = tier_deploy.model_release_id(s, model)
        source = f"{store}/{model_name}/{s.model_version}/"  # what the tier deploy passes
        commands, _ = run_operation(release.artifact, {"root": root, "release": rid, "manifest": MANIFEST,
                                                       "source": source},
                                    {RELEASES: {f"root={root}": []}})
        assert commands
        assert _stays_in_store(s.artifact_store, source), source
        assert _stays_in_store(s.artifact_store, manifest_url(store, model_name, s.model_version))
        assert math.isfinite(model.size_bytes)
        check_host(build_profile("h", {}), CATALOG, tiers[0].name, model)  # never raises
    if s.runtime_variant:
        runtime = f"{s.runtime_version}+{s.runtime_variant}"
        commands, _ = run_operation(release.switch, {"root": "/opt/tierfleet/runtime", "release": runtime},
                                    {RELEASES: {"root=/opt/tierfleet/runtime": []}})
        assert commands


@settings(max_examples=300, deadline=None)
@given(name=names, quant=quants, file=names, size=sizes)
def test_model_artifacts_either_validate_or_name_the_key(name, quant, file, size):
    """ModelArtifact accepts only what preflight can size and the manifest and release rules accept."""
    from tierfleet.artifacts.manifest import NAME_RE

    try:
        model = ModelArtifact(name=name, quant=quant, file=file, size_gb=size)
    except ValueError:
        return
    assert NAME_RE.fullmatch(model.name) and NAME_RE.fullmatch(model.file) and NAME_RE.fullmatch(model.quant)
    assert 0 < model.size_bytes <= 100_000 * 10**9


@settings(max_examples=300, deadline=None)
@given(st.one_of(paths, fragments, st.text(max_size=30)))
def test_model_dir_rule_is_inside_the_operations_root_rule(value):
    try:
        accepted = rules.model_dir(value)
    except ValueError:
        return
    assert rules.release_root(value) == accepted == value
    assert not any(accepted == d or accepted.startswith(d + "/") for d in rules.SYSTEM_DIRS)


@settings(max_examples=300, deadline=None)
@given(st.one_of(urls, paths, fragments), names, versions)
def test_store_urls_never_leave_the_store(store, name, version):
    try:
        rules.store(store)
        rules.release_id(name)
        rules.release_id(version)
    except ValueError:
        return
    url = manifest_url(store, name, version)
    assert rules.release_source(url) == url
    assert _stays_in_store(store, url), url
