"""Fleet status: one SSH round trip per host, in parallel, each under a time limit (fabric's ThreadingGroup).

Every host runs one script made of the same fact commands the deploys use (:mod:`tierfleet.facts`), the
runtime's ``/health``, the ops daemon's ``status --json`` and the last rollout record, separated by marker
lines; the output is cut back into parts and parsed by the facts' own pure ``process()`` and by
:func:`parse_status`. A host that cannot be reached, refuses its host key or does not answer within the limit is
reported with the reason; the others are not held up by it.

By hand, per host: the fact commands, ``curl -fsS 127.0.0.1:8080/health``,
``/opt/tierfleet-ops/venv/bin/tierfleet-ops status --json`` and ``cat /var/lib/tierfleet/rollout.json``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from tierfleet.catalog import Catalog
from tierfleet.facts.release import Releases
from tierfleet.preflight import check_host
from tierfleet.profile import FACTS, build_profile
from tierfleet.resolve import host_settings_of
from tierfleet.settings import HostSettings
from tierfleet.shards import NAME_PATTERN

MARK = "##tierfleet-status##"
RUNTIME_ROOT = "/opt/tierfleet/runtime"
OPS_CLI = "/opt/tierfleet-ops/venv/bin/tierfleet-ops"
#: the last rollout's record on the host, written by ``tierfleet upgrade`` and ``tierfleet policy rollout``
ROLLOUT_RECORD = "/var/lib/tierfleet/rollout.json"


@dataclass
class HostStatus:
    """One row of ``tierfleet status``; ``error`` is set when the host could not be read at all."""

    host: str
    reachable: bool
    error: str | None = None
    platform: str | None = None
    platform_detail: str | None = None
    tier: str | None = None
    model_release: str | None = None
    runtime_release: str | None = None
    runtime_health: str | None = None
    profile: str | None = None
    policy: str | None = None
    policy_error: str | None = None
    power_w: float | None = None
    energy_j: float | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)
    #: a router host's shards: name -> the release its ``current`` points at
    shard_releases: dict[str, str] = field(default_factory=dict)
    last_rollout: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.reachable and self.runtime_health == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def status_parts(settings: HostSettings) -> dict[str, str]:
    """The commands a host runs for its status, by part name (facts by their :data:`~tierfleet.profile.FACTS` key)."""
    parts = {key: (fact().command(settings.model_dir) if takes_dir else fact().command())
             for key, (fact, takes_dir) in FACTS.items()}
    parts["model_releases"] = Releases().command(root=settings.model_dir.rstrip("/"))
    parts["runtime_releases"] = Releases().command(root=RUNTIME_ROOT)
    shards = shlex.quote(settings.model_dir.rstrip("/") + "/shards")
    parts["shard_releases"] = (f"cd {shards} 2>/dev/null || exit 0; for d in */; do [ -L \"$d/current\" ] && "
                               "printf '%s\\t%s\\n' \"${d%/}\" \"$(readlink \"$d/current\")\"; done; exit 0")
    port = int(settings.runtime_port)
    parts["health"] = (f"curl -fsS --max-time 3 http://127.0.0.1:{port}/health >/dev/null 2>&1 && echo ok "
                       "|| echo down")
    parts["daemon"] = f"[ -x {OPS_CLI} ] && {OPS_CLI} status --json 2>&1 || echo '{{\"error\": \"no ops daemon\"}}'"
    parts["rollout"] = f"cat {ROLLOUT_RECORD} 2>/dev/null || true"
    return parts


def status_script(parts: dict[str, str]) -> str:
    """One shell script running every part in its own subshell, each after a marker line."""
    return "\n".join(f"printf '\\n{MARK} %s\\n' {shlex.quote(key)}; ( {command} ) 2>/dev/null"
                     for key, command in parts.items())


def split_parts(output: str) -> dict[str, list[str]]:
    """Cut a status script's output back into ``{part: lines}`` (pure; lines before the first marker dropped)."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            current = parts.setdefault(line[len(MARK) + 1:].strip(), [])
        elif current is not None:
            current.append(line)
    for lines in parts.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return parts


def parse_shard_releases(lines: list[str]) -> dict[str, str]:
    """``{shard: release}`` from the ``shard_releases`` part (``name<TAB>releases/<id>`` lines; pure: other
    lines, odd names and links that leave ``releases/`` are dropped).

    >>> parse_shard_releases(["a\\treleases/m-Q8_0-2", "b\\t/etc/x", "../c\\treleases/x", "d\\treleases/../y", "x"])
    {'a': 'm-Q8_0-2'}
    """
    out = {}
    for line in lines:
        name, _, target = line.partition("\t")
        release = target[len("releases/"):] if target.startswith("releases/") else ""
        if re.fullmatch(NAME_PATTERN, name) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", release):
            out[name] = release
    return out


def _json(lines: list[str]) -> Any:
    try:
        return json.loads("\n".join(lines))
    except (ValueError, RecursionError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_status(name: str, output: str, settings: HostSettings, catalog: Catalog) -> HostStatus:
    """A host's :class:`HostStatus` from its status script's output (pure)."""
    raw = split_parts(output)
    facts = {}
    for key, (fact, _) in FACTS.items():
        lines = raw.get(key)
        facts[key] = fact().process(lines) if lines else None
    profile = build_profile(name, facts)
    verdict = check_host(profile, catalog, settings.tier, settings.model)
    st = HostStatus(host=name, reachable=True, platform=profile.platform, platform_detail=profile.platform_detail,
                    tier=verdict.tier, notes=list(profile.notes))
    if not verdict.fits:
        st.notes.append(f"does not fit its tier: {verdict.reason}")
    for key, attr in (("model_releases", "model_release"), ("runtime_releases", "runtime_release")):
        state = Releases().process(raw.get(key) or [])
        setattr(st, attr, state["current"])
        if state["current"] and state["releases"].get(state["current"], {}).get("error"):
            st.notes.append(f"{attr.replace('_', ' ')} {state['current']}: {state['releases'][state['current']]['error']}")
    st.shard_releases = parse_shard_releases(raw.get("shard_releases") or [])
    health = (raw.get("health") or ["unknown"])[-1].strip()
    st.runtime_health = health if health in ("ok", "down") else "unknown"
    daemon = _json(raw.get("daemon") or [])
    if isinstance(daemon, dict) and "error" not in daemon:
        st.profile = daemon.get("profile") if isinstance(daemon.get("profile"), str) else None
        policy = daemon.get("policy") if isinstance(daemon.get("policy"), dict) else {}
        st.policy = policy.get("hash") if isinstance(policy.get("hash"), str) else None
        st.policy_error = policy.get("error") if isinstance(policy.get("error"), str) else None
        readings = daemon.get("readings") if isinstance(daemon.get("readings"), dict) else {}
        power = [v for k, v in readings.items() if k.endswith("_power_w") and not k.startswith("rail_")
                 and _number(v) is not None]
        energy = [v for k, v in readings.items() if k.endswith("_energy_j") and _number(v) is not None]
        st.power_w = round(sum(power), 1) if power else None
        st.energy_j = round(sum(energy), 1) if energy else None
        shards = daemon.get("shards")
        if isinstance(shards, list):
            st.shards = [s for s in shards if isinstance(s, dict)]
    else:
        st.notes.append("ops daemon: " + (daemon.get("error") if isinstance(daemon, dict) and
                                          isinstance(daemon.get("error"), str) else "no status"))
    rollout = _json(raw.get("rollout") or [])
    st.last_rollout = rollout if isinstance(rollout, dict) else None
    return st


def ssh_job(host: Any, command: str) -> dict[str, Any]:
    """A :mod:`tierfleet.ssh_group` job from a pyinfra host's SSH data (host keys checked as pyinfra does)."""
    data = host.data
    strict = str(data.get("ssh_strict_host_key_checking", "accept-new")).lower() in ("yes", "true")
    sudo = "sudo -n " if data.get("_sudo") else ""
    return {"name": host.name, "hostname": str(data.get("ssh_hostname") or host.name),
            "port": int(data.get("ssh_port") or 22), "user": data.get("ssh_user"),
            "key": str(data.get("ssh_key")) if data.get("ssh_key") else None,
            "password": data.get("ssh_password"),
            "known_hosts": str(data.get("ssh_known_hosts_file")) if data.get("ssh_known_hosts_file") else None,
            "strict": strict, "command": f"{sudo}sh -c {shlex.quote(command)}"}


def gather_status(state: Any, catalog: Catalog, source: str, timeout: float = 20.0) -> list[HostStatus]:
    """Every host's status, in inventory order; each host gets ``timeout`` seconds to connect and answer.

    Every host's settings are validated before any connection; the hosts are then reached at once through
    fabric's groups (:mod:`tierfleet.ssh_group`).
    """
    from tierfleet.ssh_group import run_group

    hosts = [h for h in state.inventory if state.is_host_in_limit(h)]
    settings = {h.name: host_settings_of(h, catalog, source) for h in hosts}
    jobs = [ssh_job(h, status_script(status_parts(settings[h.name]))) for h in hosts]
    out = []
    for result in run_group(jobs, timeout):
        name = result["name"]
        if result["ok"]:
            out.append(parse_status(name, result["stdout"], settings[name], catalog))
        else:
            out.append(HostStatus(host=name, reachable=False, error=result["error"]))
    return out
