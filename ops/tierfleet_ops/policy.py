"""Policy files: profiles with per-backend settings, and the rules that switch between them.

A policy is YAML, validated on load by typed pydantic models (:func:`policy_model`, built from the
:class:`~tierfleet_ops.settings.Setting` tables of each section and backend); every error is a
:class:`~tierfleet_ops.errors.ConfigError` that names the file, the key and what is allowed, and
so is a file that is not UTF-8, not YAML, nested too deeply or of the wrong shape. An explicit
``null`` is an error naming its key (leave the key out for the default). Profiles name settings (``governor``, ``power_limit_w``...), never paths, so a policy can only
ever reach the allowlisted knobs. The policy's hash (sha256 of its canonical JSON form, first
12 hex digits) is reported in ``status`` and metrics so a fleet can tell which policy runs.

The annotated default is ``templates/ops-policy.yaml.j2`` in the tierfleet repository and
:data:`EXAMPLE` here.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BeforeValidator, Field, ValidationError, create_model

from .errors import ConfigError
from .settings import Section, Setting, boolean, checked, config_error, int_range, name, not_null, one_of, \
    section_model, setting_field

SIGNALS = ("cpu_util", "gpu_util", "queue")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def backend_tables() -> dict[str, dict[str, Setting]]:
    from .backends.cpufreq import CpufreqBackend
    from .backends.jetson import JetsonBackend
    from .backends.nvml import NvmlBackend

    return {"cpufreq": CpufreqBackend.SETTINGS, "jetson": JetsonBackend.SETTINGS,
            "nvml": NvmlBackend.SETTINGS}


def number(lo: float, hi: float):
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"{v!r} is not a number in {lo}..{hi}")
        return float(v)
    return check


def loopback_url(v: Any) -> str:
    """Runtime endpoints must be on loopback: the daemon never talks to other hosts."""
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not a URL")
    parts = urlsplit(v)
    host = parts.hostname or ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if parts.scheme != "http" or not ok:
        raise ValueError(f"{v!r} is not an http:// URL on 127.0.0.0/8, ::1 or localhost")
    return v


def hhmm(v: Any) -> int:
    """``"HH:MM"`` (``"24:00"`` allowed as end of day) to minutes after midnight."""
    if not isinstance(v, str) or not re.fullmatch(r"[0-9]{2}:[0-9]{2}", v):
        raise ValueError(f"{v!r} is not HH:MM")
    h, m = int(v[:2]), int(v[3:])
    if h > 24 or m > 59 or (h == 24 and m):
        raise ValueError(f"{v!r} is not a time of day")
    return h * 60 + m


SWITCHING = {s.name: s for s in (
    Setting("order", "list of profile names, lowest power first", "the levels load moves between",
            lambda v: _names(v), None, list[str]),
    Setting("signals", "list of " + ", ".join(SIGNALS), "load = the highest of these, in percent",
            lambda v: _subset(v, SIGNALS), ["cpu_util", "gpu_util", "queue"], list[str]),
    Setting("up", "mapping profile -> percent 0..100", "enter a level when load >= this", lambda v: _pcts(v), {},
            dict[str, Annotated[float, checked(number(0, 100), "percent 0..100")]]),
    Setting("down", "mapping profile -> percent 0..100",
            "leave a level (downwards) when load < this; must be below its 'up'", lambda v: _pcts(v), {},
            dict[str, Annotated[float, checked(number(0, 100), "percent 0..100")]]),
    Setting("dwell_s", "seconds 0..3600", "a wanted switch must persist this long", number(0, 3600), 10.0, float),
    Setting("min_hold_s", "seconds 0..86400", "stay at least this long in a profile once entered",
            number(0, 86400), 0.0, float),
    Setting("smoothing", "number 0.01..1", "EWMA weight of a new load sample (1 = no smoothing)",
            number(0.01, 1), 1.0, float),
    Setting("idle_profile", "a profile name", "profile while no model is loaded", name, None, str),
)}

RUNTIME = {s.name: s for s in (
    Setting("metrics_url", "http://127.0.0.1:PORT/metrics", "llama-server Prometheus metrics", loopback_url,
            type=str),
    Setting("slots_url", "http://127.0.0.1:PORT/slots", "llama-server slot states", loopback_url, type=str),
    Setting("queue_full", "integer 1..4096", "requests (processing + deferred) counted as 100 % load",
            int_range(1, 4096), 4, int),
    Setting("unit", "a systemd unit name", "find the runtime by its unit's cgroup", name, type=str),
    Setting("pidfile", "an absolute path", "find the runtime by pid file", lambda v: _abspath(v),
            type=str),
    Setting("container", "a container id (hex)", "find the runtime by its container's cgroup",
            lambda v: _hex(v), type=str),
    Setting("name", "an executable name", "find the runtime by executable name", name, type=str),
    Setting("container_label", "a docker label key=value",
            "find the runtime's containers by label on the Docker engine (docker SDK); each gets cpuset_cpus",
            lambda v: _label(v), type=str),
)}

PINNING = {s.name: s for s in (
    Setting("enabled", "true or false", "pin the runtime's threads to the inference cores", boolean, True,
            bool),
    Setting("reserve_cores", "integer 0..64", "physical cores kept for the OS", int_range(0, 64), 2, int),
    Setting("numa", "single or all", "keep inference inside one NUMA node, or use all",
            one_of(("single", "all")), "single", str),
    Setting("move_os_slices", "true or false",
            "systemctl set-property --runtime system.slice/user.slice AllowedCPUs=<OS cores>", boolean, False,
            bool),
    Setting("interval_s", "seconds 1..3600", "how often new threads are looked for", number(1, 3600), 5.0,
            float),
)}

RECORDS = {s.name: s for s in (
    Setting("enabled", "true or false",
            "append energy samples and profile switches to energy.jsonl in the state directory", boolean, True,
            bool),
    Setting("interval_s", "seconds 1..3600",
            "a sample every this many seconds, taken on the tick from the readings it already has",
            number(1, 3600), 10.0, float),
    Setting("max_kib", "integer 16..1048576", "rotate energy.jsonl to energy.jsonl.1 past this size (KiB); "
            "one old file is kept", int_range(16, 1 << 20), 8192, int),
)}

TOP = {s.name: s for s in (
    Setting("version", "1", "policy format version", lambda v: _one(v), 1, int),
    Setting("tick_s", "seconds 0.1..60", "control loop period", number(0.1, 60), 1.0, float),
    Setting("on_stop", "restore or keep", "put recorded originals back on stop (tuned's rollback)",
            one_of(("restore", "keep")), "restore", str),
    Setting("default_profile", "a profile name", "profile applied at start", name, None, str),
    Setting("reapply_s", "seconds 1..3600", "re-verify and re-apply the profile (driver reloads)",
            number(1, 3600), 10.0, float),
)}


def _names(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{v!r} is not a non-empty list of profile names")
    return [name(x) for x in v]


def _subset(v: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(v, list) or not v or any(x not in allowed for x in v):
        raise ValueError(f"{v!r} is not a list drawn from {', '.join(allowed)}")
    return list(v)


def _pcts(v: Any) -> dict[str, Any]:
    """A mapping of profile name to percent; the percents are checked by the field's type."""
    if not isinstance(v, dict):
        raise ValueError(f"{v!r} is not a mapping of profile name to percent")
    return {name(k): x for k, x in v.items()}


def _abspath(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v:
        raise ValueError(f"{v!r} is not an absolute path")
    return v


def _hex(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{6,64}", v):
        raise ValueError(f"{v!r} is not 6..64 lowercase hex digits")
    return v


def _label(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}=[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}", v):
        raise ValueError(f"{v!r} is not a label key=value (lower-case key; letters, digits, _.+- in the value)")
    return v


def _one(v: Any) -> int:
    if v != 1:
        raise ValueError(f"{v!r} is not a supported version")
    return 1


@dataclass
class Window:
    """A time window that caps (``cap``: no higher than) or forces (``force``) a profile."""

    profile: str
    start_min: int
    end_min: int
    days: tuple[str, ...]
    mode: str

    def active(self, weekday: int, minute: int) -> bool:
        """True at ``minute`` after midnight on ``weekday`` (0 = Monday); windows may wrap midnight."""
        day = DAYS[weekday]
        if self.start_min <= self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        if minute >= self.start_min:
            return day in self.days
        return DAYS[(weekday - 1) % 7] in self.days and minute < self.end_min


@dataclass
class Policy:
    source: str
    top: dict[str, Any]
    profiles: dict[str, dict[str, dict[str, Any]]]
    switching: dict[str, Any]
    runtime: dict[str, Any]
    pinning: dict[str, Any]
    windows: list[Window] = field(default_factory=list)
    hash: str = ""
    #: the validated, typed model the dictionaries above were taken from
    model: Any = None
    #: the energy records (:mod:`tierfleet_ops.records`): enabled, interval_s, max_kib
    records: dict[str, Any] = field(default_factory=lambda: {k: s.default for k, s in RECORDS.items()})

    @property
    def default_profile(self) -> str:
        return self.top["default_profile"] or self.switching["order"][0]


#: window keys, in the order they are documented
WINDOW_KEYS = ("profile", "from", "to", "days", "mode")


def _days(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or any(not isinstance(d, str) or d not in DAYS for d in v):
        raise ValueError(f"{v!r} is not a list of days")
    return tuple(v)


_W_ALLOWED = {"profile": "a profile name", "time": "HH:MM, 00:00..24:00", "days": "a list of " + ", ".join(DAYS),
              "mode": "cap, force"}


class WindowModel(Section):
    """One time window: ``{profile, from: "HH:MM", to: "HH:MM", days: [mon, ...], mode: cap|force}``."""

    profile: Annotated[str, checked(name, _W_ALLOWED["profile"])] = Field(
        description="the profile the window caps at or forces", json_schema_extra={"allowed": _W_ALLOWED["profile"]})
    start: Annotated[int, checked(hhmm, _W_ALLOWED["time"])] = Field(
        alias="from", description="start of the window (local time)", json_schema_extra={"allowed": _W_ALLOWED["time"]})
    end: Annotated[int, checked(hhmm, _W_ALLOWED["time"])] = Field(
        alias="to", description="end of the window (local time); before 'from' wraps past midnight",
        json_schema_extra={"allowed": _W_ALLOWED["time"]})
    days: Annotated[tuple[str, ...], checked(_days, _W_ALLOWED["days"])] = Field(
        DAYS, description="weekdays the window starts on", json_schema_extra={"allowed": _W_ALLOWED["days"]})
    mode: Annotated[str, checked(one_of(("cap", "force")), _W_ALLOWED["mode"])] = Field(
        "cap", description="cap: no higher than the profile; force: exactly the profile",
        json_schema_extra={"allowed": _W_ALLOWED["mode"]})


def _section(model: Any, what: str) -> tuple[Any, Any]:
    """A section field: a mapping (never null) validated by ``model``; absent means all defaults."""
    return Annotated[model, BeforeValidator(not_null(what))], Field(default_factory=model)


@functools.lru_cache(maxsize=1)
def policy_model() -> type[Section]:
    """The pydantic model of a whole policy file, built from the settings tables."""
    tables = backend_tables()
    backend = {b: section_model(f"{b}_settings", t) for b, t in tables.items()}
    profile = create_model("Profile", __base__=Section, **{
        b: _section(m, "a mapping of " + ", ".join(sorted(tables[b]))) for b, m in backend.items()})
    top = {k: setting_field(st) for k, st in TOP.items()}
    return create_model(  # type: ignore[call-overload, no-any-return]
        "PolicyModel", __base__=Section, **top,
        profiles=(dict[str, Annotated[profile, BeforeValidator(not_null("a mapping of cpufreq, jetson, nvml"))]],
                  ...),
        switching=_section(section_model("switching", SWITCHING), "a mapping of " + ", ".join(SWITCHING)),
        runtime=_section(section_model("runtime", RUNTIME), "a mapping of " + ", ".join(RUNTIME)),
        pinning=_section(section_model("pinning", PINNING), "a mapping of " + ", ".join(PINNING)),
        records=_section(section_model("records", RECORDS), "a mapping of " + ", ".join(RECORDS)),
        windows=(Annotated[list[WindowModel], BeforeValidator(not_null("a list of windows"))], []),
    )


def _allowed_keys(loc: tuple[Any, ...]) -> tuple[str, str]:
    """What kind of key lives at ``loc`` of a policy, and which are allowed (for error messages)."""
    tables = backend_tables()
    if not loc:
        return "key", ", ".join(sorted(set(TOP) | {"profiles", "switching", "runtime", "pinning", "records",
                                                   "windows"}))
    if loc[0] == "profiles" and len(loc) == 2:
        return "backend", ", ".join(sorted(tables))
    if loc[0] == "profiles" and len(loc) == 3 and loc[2] in tables:
        return "setting", ", ".join(sorted(tables[loc[2]]))
    if loc[0] == "windows":
        return "key", ", ".join(WINDOW_KEYS)
    section = {"switching": SWITCHING, "runtime": RUNTIME, "pinning": PINNING, "records": RECORDS}.get(loc[0], {})
    return "setting", ", ".join(sorted(section))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy; :class:`ConfigError` names the file, key and allowed values."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "<document>", f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(source, "<document>", "nested too deeply to be a policy") from None
    try:
        return _validate(raw, source)
    except RecursionError:
        raise ConfigError(source, "<document>", "nested too deeply to be a policy") from None


def _validate(raw: Any, source: str) -> Policy:
    if not isinstance(raw, dict):
        raise ConfigError(source, "<document>", "must be a mapping with keys profiles, switching, ...")
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise ConfigError(source, "profiles", "must be a non-empty mapping of profile name to settings")
    for pname in profiles_raw:
        try:
            name(pname)
        except ValueError as exc:
            raise ConfigError(source, f"profiles.{pname}", str(exc)) from None
    try:
        model = policy_model().model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source, allowed_keys=_allowed_keys) from None
    top = {k: getattr(model, k) for k in TOP}
    profiles: dict[str, dict[str, dict[str, Any]]] = {
        p: body.model_dump() for p, body in model.profiles.items()}  # type: ignore[attr-defined]
    for pname, prof in profiles.items():
        for b, lo, hi in (("cpufreq", "min_freq_pct", "max_freq_pct"),
                          ("jetson", "gpu_min_freq_pct", "gpu_max_freq_pct")):
            if prof[b][lo] is not None and prof[b][hi] is not None and prof[b][lo] > prof[b][hi]:
                raise ConfigError(source, f"profiles.{pname}.{b}.{lo}", f"must be <= {hi} ({prof[b][hi]})")
    names = sorted(profiles)

    def known_profile(key: str, value: str | None) -> None:
        if value is not None and value not in profiles:
            raise ConfigError(source, key, f"{value!r} is not a profile; allowed: {', '.join(names)}")

    sw = model.switching.model_dump()  # type: ignore[attr-defined]
    sw["enabled"] = "switching" in raw
    if sw["order"] is None:
        sw["order"] = [p for p in ("eco", "balanced", "performance") if p in profiles] or names[:1]
    for i, p in enumerate(sw["order"]):
        known_profile(f"switching.order[{i}]", p)
    for p in sw["order"][1:]:
        if p not in sw["up"] or p not in sw["down"]:
            if "switching" in raw:
                raise ConfigError(source, f"switching.up.{p}", "every level above the first needs "
                                  "'up' and 'down' thresholds (percent)")
    for which in ("up", "down"):
        for p in sw[which]:
            if p not in sw["order"][1:]:
                raise ConfigError(source, f"switching.{which}.{p}",
                                  f"not a level above the first; allowed: {', '.join(sw['order'][1:])}")
    for p in sw["order"][1:]:
        if p in sw["up"] and p in sw["down"] and not sw["down"][p] < sw["up"][p]:
            raise ConfigError(source, f"switching.down.{p}",
                              f"must be below switching.up.{p} ({sw['up'][p]}) to give hysteresis")
    ups = [sw["up"][p] for p in sw["order"][1:] if p in sw["up"]]
    if ups != sorted(ups):
        raise ConfigError(source, "switching.up", "thresholds must rise with the level order")
    known_profile("switching.idle_profile", sw["idle_profile"])
    known_profile("default_profile", top["default_profile"])
    windows = []
    for i, w in enumerate(model.windows):  # type: ignore[attr-defined]
        known_profile(f"windows[{i}].profile", w.profile)
        if w.mode == "cap" and w.profile not in sw["order"]:
            raise ConfigError(source, f"windows[{i}].profile", "a cap must be one of switching.order")
        windows.append(Window(w.profile, w.start, w.end, w.days, w.mode))
    canon = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:12]
    return Policy(source, top, profiles, sw, model.runtime.model_dump(),  # type: ignore[attr-defined]
                  model.pinning.model_dump(), windows, digest, model,  # type: ignore[attr-defined]
                  model.records.model_dump())  # type: ignore[attr-defined]


#: the largest policy file read (a policy is a few KiB)
MAX_POLICY_BYTES = 1 << 20


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (UTF-8 YAML, at most :data:`MAX_POLICY_BYTES`)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(p), "<file>", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(str(p), "<file>", f"larger than {MAX_POLICY_BYTES} bytes; a policy is a few KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), "<file>", f"not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") \
            from None
    return parse_policy(text, str(p))


EXAMPLE = """\
version: 1
tick_s: 1.0
on_stop: restore
default_profile: balanced
profiles:
  eco:
    cpufreq: {governor: "powersave|schedutil", epp: power, max_freq_pct: 60, boost: false}
    nvml: {locked_sm_clocks_mhz: [345, 1200]}
  balanced:
    cpufreq: {governor: "schedutil|ondemand|powersave", epp: balance_power, max_freq_pct: 100}
    nvml: {locked_sm_clocks_mhz: [345, 1500]}
  performance:
    cpufreq: {governor: performance, min_freq_pct: 0, max_freq_pct: 100, boost: true}
    nvml: {locked_sm_clocks_mhz: false}
switching:
  order: [eco, balanced, performance]
  signals: [cpu_util, gpu_util, queue]
  up: {balanced: 35, performance: 75}
  down: {balanced: 20, performance: 55}
  dwell_s: 5
  min_hold_s: 10
  idle_profile: eco
"""
