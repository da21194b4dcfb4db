"""The fleet's energy report: power, energy and profile changes over time, per host and per profile.

The ops daemon on every host (:mod:`tierfleet_ops.records`) appends one JSON line to
``/var/lib/tierfleet-ops/energy.jsonl`` every ``records.interval_s`` of its policy (10 s unless set), taken on its
tick from the readings it already has, and one for every profile switch::

    {"t": 1800000000.1, "profile": "eco", "power_w": {"gpu": 151.2, "cpu_package": 38.5},
     "energy_j": {"gpu": 912345.6, "cpu_package": 12345.6}, "load_pct": 12.5}
    {"t": 1800000012.4, "event": "switch", "from": "eco", "to": "performance", "reason": "mean load 82% over 5 s"}

``t`` is epoch seconds; ``power_w`` / ``energy_j`` map a source (``gpu``: NVML, ``cpu_package``: RAPL, ``board``:
the Jetson's INA rails) to watts and joules, the labels of the daemon's ``/metrics`` (a bare number is read as
well); ``load_pct`` is null while the daemon has no load signal; ``from`` is null for the profile it started in.
A sample follows every switch, and one is written when the daemon stops, so the time around a switch goes to the
right profile. Past ``records.max_kib`` the daemon renames the file to ``energy.jsonl.1`` (one old file kept).

:func:`gather_records` reads the tail of both files from every host at once (:mod:`tierfleet.ssh_group`; the
state directory is root's, 0700: hosts reached as another user need ``_sudo``), :func:`parse_records` turns the
lines into :class:`Sample` and :class:`Switch` lists (pure; garbled lines, such as one torn by a crash, are
skipped), :func:`summarise` computes per host and per profile the time spent, the mean power and the energy, and
:func:`render_png` / :func:`render_html` draw it: one self-contained HTML file (the figure embedded as a PNG)
or the PNG alone.

Energy is taken from the hardware's own counters where a host has them (NVML total energy, RAPL, the Jetson
INA rails integrated by the daemon); otherwise it is the integral of the sampled power.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

#: where the ops daemon keeps its records on a host (and the rotated older ones in ``RECORDS + ".1"``)
RECORDS = "/var/lib/tierfleet-ops/energy.jsonl"
#: a gap between samples longer than this (s) is a hole (the daemon was down): nothing is integrated over it
MAX_GAP_S = 300.0


@dataclass(frozen=True)
class Sample:
    t: float
    profile: str
    power_w: float | None
    energy_j: float | None
    load_pct: float | None


@dataclass(frozen=True)
class Switch:
    t: float
    from_profile: str | None
    to_profile: str
    reason: str


@dataclass
class HostSeries:
    host: str
    samples: list[Sample] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)
    error: str | None = None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _sum(values: Any) -> float | None:
    """The total of a ``{source: number}`` mapping (or a bare number); None when nothing is a finite number."""
    if isinstance(values, dict):
        parts = [_num(v) for v in values.values()]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None
    return _num(values)


def parse_records(host: str, lines: list[str]) -> HostSeries:
    """A host's samples and switches from its record lines, in time order (pure, never raises)."""
    out = HostSeries(host)
    for line in lines:
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(rec, dict) or _num(rec.get("t")) is None:
            continue
        t = float(rec["t"])
        if rec.get("event") == "switch" and isinstance(rec.get("to"), str):
            frm = rec.get("from") if isinstance(rec.get("from"), str) else None
            out.switches.append(Switch(t, frm, rec["to"], str(rec.get("reason") or "")[:200]))
        elif isinstance(rec.get("profile"), str):
            out.samples.append(Sample(t, rec["profile"], _sum(rec.get("power_w")), _sum(rec.get("energy_j")),
                                      _num(rec.get("load_pct"))))
    out.samples.sort(key=lambda s: s.t)
    out.switches.sort(key=lambda s: s.t)
    return out


@dataclass
class ProfileTotals:
    seconds: float = 0.0
    energy_j: float = 0.0
    power_sum_w_s: float = 0.0
    power_seconds: float = 0.0

    @property
    def mean_power_w(self) -> float | None:
        return self.power_sum_w_s / self.power_seconds if self.power_seconds else None


def summarise(series: HostSeries) -> dict[str, ProfileTotals]:
    """Per profile: time spent, energy (counter deltas, else the power integral) and mean power (pure).

    Each interval between two samples is charged to the profile of its first sample; intervals longer than
    :data:`MAX_GAP_S` (the daemon was not running) and counter resets are left out.
    """
    totals: dict[str, ProfileTotals] = {}
    for a, b in zip(series.samples, series.samples[1:]):
        dt = b.t - a.t
        if dt <= 0 or dt > MAX_GAP_S:
            continue
        tot = totals.setdefault(a.profile, ProfileTotals())
        tot.seconds += dt
        if a.power_w is not None:
            tot.power_sum_w_s += a.power_w * dt
            tot.power_seconds += dt
        if a.energy_j is not None and b.energy_j is not None and b.energy_j >= a.energy_j:
            tot.energy_j += b.energy_j - a.energy_j
        elif a.power_w is not None:
            tot.energy_j += a.power_w * dt
    return totals


PROFILE_COLOURS = {"eco": "#2e7d32", "balanced": "#f9a825", "performance": "#c62828"}


def _colour(profile: str) -> str:
    return PROFILE_COLOURS.get(profile, "#546e7a")


def render_png(series: list[HostSeries], title: str = "tierfleet energy report") -> bytes:
    """One figure: per host power over time with profile bands and switch marks, and energy per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    hosts = list(series)
    rows = max(1, len(hosts))
    fig, axes = plt.subplots(rows + 1, 1, figsize=(11, 2.6 * rows + 3.2), squeeze=False)
    t0 = min((s.samples[0].t for s in hosts if s.samples), default=0.0)
    if not hosts:
        raise ValueError("no hosts to draw")
    profiles: set[str] = set()
    for ax, s in zip(axes[:, 0], hosts):
        xs = [(x.t - t0) / 60 for x in s.samples]
        ys = [x.power_w if x.power_w is not None else float("nan") for x in s.samples]
        for a, b in zip(s.samples, s.samples[1:]):
            if 0 < b.t - a.t <= MAX_GAP_S:
                ax.axvspan((a.t - t0) / 60, (b.t - t0) / 60, color=_colour(a.profile), alpha=0.15, lw=0)
                profiles.add(a.profile)
        ax.plot(xs, ys, color="#263238", lw=1.2)
        for sw in s.switches:
            ax.axvline((sw.t - t0) / 60, color=_colour(sw.to_profile), lw=0.8, ls="--")
        ax.set_ylabel("W")
        ax.set_title(f"{s.host}{'' if s.samples else ': no records (' + (s.error or 'none') + ')'}",
                     loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    axes[rows - 1, 0].set_xlabel("minutes")
    bar = axes[rows, 0]
    names = [s.host for s in hosts]
    all_profiles = sorted(profiles | {p for s in hosts for p in summarise(s)})
    width = 0.8 / max(1, len(all_profiles))
    for i, profile in enumerate(all_profiles):
        values = [summarise(s).get(profile, ProfileTotals()).energy_j / 3600 for s in hosts]
        bar.bar([k + i * width for k in range(len(names))], values, width, color=_colour(profile), label=profile)
    bar.set_xticks([k + width * (len(all_profiles) - 1) / 2 for k in range(len(names))], names, fontsize=8)
    bar.set_ylabel("Wh")
    bar.set_title("energy per profile", loc="left", fontsize=10)
    bar.legend(handles=[Patch(color=_colour(p), label=p) for p in all_profiles], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def render_html(series: list[HostSeries], title: str = "tierfleet energy report") -> str:
    """A self-contained page: the figure (embedded PNG) and a table per host and profile."""
    png = base64.b64encode(render_png(series, title)).decode()
    rows = []
    for s in series:
        totals = summarise(s)
        if not totals:
            rows.append(f"<tr><td>{html.escape(s.host)}</td><td colspan=5>{html.escape(s.error or 'no records')}"
                        "</td></tr>")
        for profile, tot in sorted(totals.items()):
            mean = f"{tot.mean_power_w:.1f}" if tot.mean_power_w is not None else "-"
            rows.append(f"<tr><td>{html.escape(s.host)}</td><td>{html.escape(profile)}</td>"
                        f"<td>{tot.seconds / 60:.1f}</td><td>{mean}</td><td>{tot.energy_j / 3600:.3f}</td>"
                        f"<td>{sum(1 for w in s.switches if w.to_profile == profile)}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><img alt='power and energy per host' "
            f"src='data:image/png;base64,{png}'><h2>per host and profile</h2><table><tr><th>host</th>"
            "<th>profile</th><th>minutes</th><th>mean W</th><th>Wh</th><th>switches into</th></tr>"
            + "".join(rows) + "</table></body></html>")


def gather_records(state: Any, lines: int = 20000, timeout: float = 20.0) -> list[HostSeries]:
    """The last ``lines`` records of each of a host's two record files (the rotated one first), for every host
    of a loaded inventory, in inventory order."""
    from tierfleet.ssh_group import run_group
    from tierfleet.status import ssh_job

    hosts = [h for h in state.inventory if state.is_host_in_limit(h)]
    command = f"tail -n {int(lines)} {RECORDS}.1 {RECORDS} 2>/dev/null | grep '^{{' || true"
    out = []
    for result in run_group([ssh_job(h, command) for h in hosts], timeout):
        if result["ok"]:
            out.append(parse_records(result["name"], result["stdout"].splitlines()))
        else:
            out.append(HostSeries(result["name"], error=result["error"]))
    return out
