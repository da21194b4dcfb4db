"""Policy files: profiles with per-backend settings, and the rules that switch between them.

A policy is YAML, validated on load; every error names the file, the key and what is allowed.
Profiles name settings (``governor``, ``power_limit_w``...), never paths, so a policy can only
ever reach the allowlisted knobs. The policy's hash (sha256 of its canonical JSON form, first
12 hex digits) is reported in ``status`` and metrics so a fleet can tell which policy runs.

The annotated default is ``templates/ops-policy.yaml.j2`` in the tierfleet repository and
:data:`EXAMPLE` here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .settings import Setting, boolean, int_range, name, one_of, validate_section

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
    if not isinstance(v, str) or not re.fullmatch(r"\d{2}:\d{2}", v):
        raise ValueError(f"{v!r} is not HH:MM")
    h, m = int(v[:2]), int(v[3:])
    if h > 24 or m > 59 or (h == 24 and m):
        raise ValueError(f"{v!r} is not a time of day")
    return h * 60 + m


SWITCHING = {s.name: s for s in (
    Setting("order", "list of profile names, lowest power first", "the levels load moves between",
            lambda v: _names(v), None),
    Setting("signals", "list of " + ", ".join(SIGNALS), "load = the highest of these, in percent",
            lambda v: _subset(v, SIGNALS), ["cpu_util", "gpu_util", "queue"]),
    Setting("up", "mapping profile -> percent 0..100", "enter a level when load >= this", lambda v: _pcts(v), {}),
    Setting("down", "mapping profile -> percent 0..100",
            "leave a level (downwards) when load < this; must be below its 'up'", lambda v: _pcts(v), {}),
    Setting("dwell_s", "seconds 0..3600", "a wanted switch must persist this long", number(0, 3600), 10.0),
    Setting("min_hold_s", "seconds 0..86400", "stay at least this long in a profile once entered",
            number(0, 86400), 0.0),
    Setting("smoothing", "number 0.01..1", "EWMA weight of a new load sample (1 = no smoothing)",
            number(0.01, 1), 1.0),
    Setting("idle_profile", "a profile name", "profile while no model is loaded", name, None),
)}

RUNTIME = {s.name: s for s in (
    Setting("metrics_url", "http://127.0.0.1:PORT/metrics", "llama-server Prometheus metrics", loopback_url),
    Setting("slots_url", "http://127.0.0.1:PORT/slots", "llama-server slot states", loopback_url),
    Setting("queue_full", "integer 1..4096", "requests (processing + deferred) counted as 100 % load",
            int_range(1, 4096), 4),
    Setting("unit", "a systemd unit name", "find the runtime by its unit's cgroup", name),
    Setting("pidfile", "an absolute path", "find the runtime by pid file", lambda v: _abspath(v)),
    Setting("container", "a container id (hex)", "find the runtime by its container's cgroup",
            lambda v: _hex(v)),
    Setting("name", "an executable name", "find the runtime by executable name", name),
)}

PINNING = {s.name: s for s in (
    Setting("enabled", "true or false", "pin the runtime's threads to the inference cores", boolean, True),
    Setting("reserve_cores", "integer 0..64", "physical cores kept for the OS", int_range(0, 64), 2),
    Setting("numa", "single or all", "keep inference inside one NUMA node, or use all",
            one_of(("single", "all")), "single"),
    Setting("move_os_slices", "true or false",
            "systemctl set-property --runtime system.slice/user.slice AllowedCPUs=<OS cores>", boolean, False),
    Setting("interval_s", "seconds 1..3600", "how often new threads are looked for", number(1, 3600), 5.0),
)}

TOP = {s.name: s for s in (
    Setting("version", "1", "policy format version", lambda v: _one(v), 1),
    Setting("tick_s", "seconds 0.1..60", "control loop period", number(0.1, 60), 1.0),
    Setting("on_stop", "restore or keep", "put recorded originals back on stop (tuned's rollback)",
            one_of(("restore", "keep")), "restore"),
    Setting("default_profile", "a profile name", "profile applied at start", name, None),
    Setting("reapply_s", "seconds 1..3600", "re-verify and re-apply the profile (driver reloads)",
            number(1, 3600), 10.0),
)}


def _names(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{v!r} is not a non-empty list of profile names")
    return [name(x) for x in v]


def _subset(v: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(v, list) or not v or any(x not in allowed for x in v):
        raise ValueError(f"{v!r} is not a list drawn from {', '.join(allowed)}")
    return list(v)


def _pcts(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise ValueError(f"{v!r} is not a mapping of profile name to percent")
    return {name(k): number(0, 100)(x) for k, x in v.items()}


def _abspath(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v:
        raise ValueError(f"{v!r} is not an absolute path")
    return v


def _hex(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{6,64}", v):
        raise ValueError(f"{v!r} is not 6..64 lowercase hex digits")
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

    @property
    def default_profile(self) -> str:
        return self.top["default_profile"] or self.switching["order"][0]


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy; :class:`ConfigError` names the file, key and allowed values."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "<document>", f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "<document>", "must be a mapping with keys profiles, switching, ...")
    known = set(TOP) | {"profiles", "switching", "runtime", "pinning", "windows"}
    for k in raw:
        if k not in known:
            raise ConfigError(source, str(k), f"unknown key; allowed: {', '.join(sorted(known))}")
    top = validate_section({k: raw[k] for k in TOP if k in raw}, TOP, source, "<top>")
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise ConfigError(source, "profiles", "must be a non-empty mapping of profile name to settings")
    tables = backend_tables()
    profiles: dict[str, dict[str, dict[str, Any]]] = {}
    for pname, body in profiles_raw.items():
        try:
            name(pname)
        except ValueError as exc:
            raise ConfigError(source, f"profiles.{pname}", str(exc)) from None
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(source, f"profiles.{pname}", f"must be a mapping with keys {sorted(tables)}")
        prof = {}
        for bname, section in body.items():
            if bname not in tables:
                raise ConfigError(source, f"profiles.{pname}.{bname}",
                                  f"unknown backend; allowed: {', '.join(sorted(tables))}")
            prof[bname] = validate_section(section, tables[bname], source, f"profiles.{pname}.{bname}")
        for bname in tables:
            prof.setdefault(bname, validate_section({}, tables[bname], source, f"profiles.{pname}.{bname}"))
        for b, lo, hi in (("cpufreq", "min_freq_pct", "max_freq_pct"),
                          ("jetson", "gpu_min_freq_pct", "gpu_max_freq_pct")):
            if prof[b][lo] is not None and prof[b][hi] is not None and prof[b][lo] > prof[b][hi]:
                raise ConfigError(source, f"profiles.{pname}.{b}.{lo}", f"must be <= {hi} ({prof[b][hi]})")
        profiles[pname] = prof
    names = sorted(profiles)

    def known_profile(key: str, value: str | None) -> None:
        if value is not None and value not in profiles:
            raise ConfigError(source, key, f"{value!r} is not a profile; allowed: {', '.join(names)}")

    sw_raw = raw.get("switching") or {}
    sw = validate_section(sw_raw, SWITCHING, source, "switching")
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
    runtime = validate_section(raw.get("runtime"), RUNTIME, source, "runtime")
    pinning = validate_section(raw.get("pinning"), PINNING, source, "pinning")
    windows = []
    wraw = raw.get("windows") or []
    if not isinstance(wraw, list):
        raise ConfigError(source, "windows", "must be a list of {profile, from, to, days, mode}")
    for i, w in enumerate(wraw):
        key = f"windows[{i}]"
        if not isinstance(w, dict) or set(w) - {"profile", "from", "to", "days", "mode"}:
            raise ConfigError(source, key, "must be a mapping with keys profile, from, to, days, mode")
        known_profile(f"{key}.profile", w.get("profile"))
        if w.get("profile") is None:
            raise ConfigError(source, f"{key}.profile", f"required; allowed: {', '.join(names)}")
        try:
            start, end = hhmm(w.get("from")), hhmm(w.get("to"))
        except ValueError as exc:
            raise ConfigError(source, f"{key}.from/to", f"{exc}; allowed: HH:MM, 00:00..24:00") from None
        days = w.get("days", list(DAYS))
        if not isinstance(days, list) or any(d not in DAYS for d in days):
            raise ConfigError(source, f"{key}.days", f"{days!r}: allowed: a list of {', '.join(DAYS)}")
        mode = w.get("mode", "cap")
        if mode not in ("cap", "force"):
            raise ConfigError(source, f"{key}.mode", f"{mode!r}: allowed: cap, force")
        if mode == "cap" and w["profile"] not in sw["order"]:
            raise ConfigError(source, f"{key}.profile", "a cap must be one of switching.order")
        windows.append(Window(w["profile"], start, end, tuple(days), mode))
    canon = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:12]
    return Policy(source, top, profiles, sw, runtime, pinning, windows, digest)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), "<file>", f"cannot read: {exc.strerror}") from None
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
