"""Energy policies operators own, validated before any host is touched and rendered per host.

A fleet policy is the ops daemon's own policy format (:mod:`tierfleet_ops.policy`: profiles, switching
thresholds, windows, ...) plus an optional ``platforms`` mapping with a section per platform (``jetson``,
``gpu``, ``cpu``) merged over the rest for hosts of that platform (mappings merge key by key; lists and
values replace), so one file fits a mixed fleet::

    version: 1
    profiles:
      eco: {cpufreq: {governor: "powersave|schedutil", max_freq_pct: 60}}
      balanced: {cpufreq: {governor: "schedutil|ondemand|powersave"}}
      performance: {cpufreq: {governor: performance}}
    switching: {order: [eco, balanced, performance], up: {balanced: 35, performance: 75},
                down: {balanced: 20, performance: 55}, idle_profile: eco}
    platforms:
      jetson:
        profiles: {eco: {jetson: {nvpmodel: eco}}, performance: {jetson: {nvpmodel: performance}}}
      gpu:
        profiles: {eco: {nvml: {power_limit_w: eco}}, balanced: {nvml: {power_limit_w: balanced}}}

**Levels.** In ``jetson.nvpmodel`` and ``nvml.power_limit_w`` the words ``eco``, ``balanced`` and
``performance`` name each host's own mode or limit for that level (:mod:`tierfleet.energy`: from the board's
nvpmodel conf, from each GPU's NVML constraints). Any other nvpmodel value is a mode name that must exist on
the board, and a number of watts must lie inside every GPU's constraints; a host where it does not is refused
before its policy changes.

**Host parts.** Unless the file sets them, the ``runtime`` section (the host's llama-server port and unit) and
``pinning.reserve_cores`` (its tier's) come from the host, as the tier deploy's template does.

:func:`check_fleet_policy` validates the file for every platform with the daemon's own validator;
:func:`host_policy` renders one host's policy and its hash (what the daemon will report once it runs it).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from tierfleet.exceptions import ConfigError

PLATFORMS = ("jetson", "gpu", "cpu")
LEVELS = ("eco", "balanced", "performance")
MAX_BYTES = 1 << 20
#: stand-ins for the level words when the file is validated without a host
_SAMPLE = {"nvpmodel": "MAXN", "power_limit_w": 100}


def read_fleet_policy(path: str | Path) -> tuple[dict[str, Any], str]:
    """The policy file as a mapping, and the sha256 of its bytes; every problem names the file and key."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(p), "<file>", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(str(p), "<file>", f"larger than {MAX_BYTES} bytes; a policy is a few KiB")
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), "<file>", "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), "<document>", f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(str(p), "<document>", "nested too deeply to be a policy") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(p), "<document>", "must be a mapping with keys profiles, switching, ...")
    platforms = raw.get("platforms", {})
    if not isinstance(platforms, dict):
        raise ConfigError(str(p), "platforms", f"must be a mapping with keys {', '.join(PLATFORMS)}")
    for key, section in platforms.items():
        if key not in PLATFORMS:
            raise ConfigError(str(p), f"platforms.{key}", f"unknown platform; allowed: {', '.join(PLATFORMS)}")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(str(p), f"platforms.{key}", "must be a mapping of policy keys")
    return raw, hashlib.sha256(data).hexdigest()


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def for_platform(raw: dict[str, Any], platform: str) -> dict[str, Any]:
    """The policy a host of ``platform`` runs, before its levels and host parts are filled in."""
    base = {k: copy.deepcopy(v) for k, v in raw.items() if k != "platforms"}
    return _merge(base, (raw.get("platforms") or {}).get(platform) or {})


def _host_parts(doc: dict[str, Any], runtime_port: int, unit: str, reserve: int) -> dict[str, Any]:
    runtime = doc.setdefault("runtime", {}) if isinstance(doc.get("runtime", {}), dict) else doc["runtime"]
    if isinstance(runtime, dict):
        runtime.setdefault("metrics_url", f"http://127.0.0.1:{int(runtime_port)}/metrics")
        runtime.setdefault("slots_url", f"http://127.0.0.1:{int(runtime_port)}/slots")
        if not any(k in runtime for k in ("unit", "pidfile", "container", "container_label", "name")):
            runtime["unit"] = unit
    pinning = doc.setdefault("pinning", {})
    if isinstance(pinning, dict):
        pinning.setdefault("reserve_cores", int(reserve))
    return doc


def _settings(doc: dict[str, Any], backend: str, key: str):
    """(profile, settings mapping) for every profile that sets ``backend.key``."""
    profiles = doc.get("profiles")
    for pname, body in (profiles.items() if isinstance(profiles, dict) else ()):
        section = body.get(backend) if isinstance(body, dict) else None
        if isinstance(section, dict) and key in section:
            yield pname, section


def check_fleet_policy(raw: dict[str, Any], source: str) -> dict[str, str]:
    """Validate the policy for every platform with the daemon's validator; ``{platform: policy hash}``.

    Level words are replaced by stand-ins here: their real values depend on each host and are checked there.
    """
    from tierfleet_ops.errors import ConfigError as OpsConfigError
    from tierfleet_ops.policy import parse_policy

    hashes = {}
    for platform in PLATFORMS:
        doc = _host_parts(for_platform(raw, platform), 8080, "llama-server.service", 2)
        for backend, key in (("jetson", "nvpmodel"), ("nvml", "power_limit_w")):
            for _, section in _settings(doc, backend, key):
                if section[key] in LEVELS:
                    section[key] = _SAMPLE[key]
        try:
            hashes[platform] = parse_policy(yaml.safe_dump(doc, sort_keys=False), f"{source} (for {platform})").hash
        except OpsConfigError as exc:
            raise ConfigError(exc.source, exc.key, exc.problem) from None
    return hashes


def host_policy(raw: dict[str, Any], platform: str, *, source: str, jetson_modes: dict[str, str] | None = None,
                board_modes: list[str] | None = None, gpu_power_w: dict[str, int] | None = None,
                gpu_range_w: tuple[float, float] | None = None, runtime_port: int = 8080,
                unit: str = "llama-server.service", reserve: int = 2) -> tuple[str, str]:
    """One host's policy text and the hash its daemon will report (:func:`tierfleet_ops.policy.parse_policy`).

    Raises :class:`ConfigError` naming the key when the policy asks this host for a mode its board does not
    have, a level it has no value for, or a power limit outside its GPUs' constraints.
    """
    from tierfleet_ops.errors import ConfigError as OpsConfigError
    from tierfleet_ops.policy import parse_policy

    doc = _host_parts(for_platform(raw, platform), runtime_port, unit, reserve)
    for pname, section in _settings(doc, "jetson", "nvpmodel"):
        value, key = section["nvpmodel"], f"profiles.{pname}.jetson.nvpmodel"
        if value in LEVELS:
            if value not in (jetson_modes or {}):
                raise ConfigError(source, key, f"{value!r}: this board has no mode for that level "
                                               f"(its modes: {', '.join(board_modes or []) or 'unknown'})")
            section["nvpmodel"] = jetson_modes[value]
        elif board_modes is not None and value not in board_modes:
            raise ConfigError(source, key, f"mode {value!r} does not exist on this board; its modes: "
                                           f"{', '.join(board_modes) or 'none'}")
    for pname, section in _settings(doc, "nvml", "power_limit_w"):
        value, key = section["power_limit_w"], f"profiles.{pname}.nvml.power_limit_w"
        if value in LEVELS:
            if value not in (gpu_power_w or {}):
                raise ConfigError(source, key, f"{value!r}: no limit for that level on this host (its GPUs' "
                                               "power constraints are not readable)")
            section["power_limit_w"] = gpu_power_w[value]
        elif gpu_range_w is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                not gpu_range_w[0] <= value <= gpu_range_w[1]:
            raise ConfigError(source, key, f"{value} W is outside what this host's GPUs accept "
                                           f"({gpu_range_w[0]:g}..{gpu_range_w[1]:g} W)")
    text = ("# Managed by tierfleet policy rollout; validate edits with: tierfleet-ops check-policy FILE\n"
            + yaml.safe_dump(doc, sort_keys=False))
    try:
        return text, parse_policy(text, source).hash
    except OpsConfigError as exc:
        raise ConfigError(exc.source, exc.key, exc.problem) from None
