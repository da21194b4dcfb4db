"""CPU frequency through sysfs cpufreq: governor, EPP, min/max frequency and boost, per policy.

Command-line equivalents: ``cpupower frequency-set -g GOV``, ``cpupower frequency-set -d/-u kHz``,
``echo power > /sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference``.

Ordering follows the kernel's rules: the governor is written before EPP (with intel_pstate or
amd-pstate active, EPP can only be set under ``powersave`` and is forced to ``performance`` under
``performance``), and min/max are written in the order that never makes min exceed max.
"""

from __future__ import annotations

import time
from typing import Any

from ..knobs import Change, Knob, Skipped, sysfs_knob
from ..settings import Setting, boolean, fallback_list, int_range, one_of
from ..sysfs import Sysfs
from .base import Backend, HostContext

CPUFREQ = "devices/system/cpu/cpufreq"
GOVERNORS = ("performance", "powersave", "schedutil", "ondemand", "conservative", "userspace")
EPP_VALUES = ("default", "performance", "balance_performance", "balance_power", "power")
#: drivers whose EPP is forced to "performance" under the performance governor
EPP_FORCED_BY_PERFORMANCE = ("intel_pstate", "amd-pstate-epp")
#: seconds a frequency reading is reused
READING_S = 5.0
#: files the cpufreq driver sets when a policy appears and never changes afterwards
FIXED = ("scaling_driver", "scaling_available_governors", "energy_performance_available_preferences",
         "cpuinfo_min_freq", "cpuinfo_max_freq", "scaling_available_frequencies")


def parse_words(text: str | None) -> list[str]:
    """Split a sysfs list such as ``scaling_available_governors``.

    >>> parse_words("performance powersave\\n")
    ['performance', 'powersave']
    """
    return text.split() if text else []


def choose_governor(preferences: list[str], available: list[str]) -> str | None:
    """The first preferred governor the policy offers (tuned's ``a|b|c`` fallback).

    >>> choose_governor(["schedutil", "ondemand", "powersave"], ["performance", "powersave"])
    'powersave'
    >>> choose_governor(["schedutil"], ["performance"]) is None
    True
    """
    for gov in preferences:
        if gov in available:
            return gov
    return None


def freq_from_pct(pct: int, lo_khz: int, hi_khz: int, steps: list[int] | None = None) -> int:
    """A frequency ``pct`` percent of the way from ``lo_khz`` to ``hi_khz``, snapped down to a step.

    >>> freq_from_pct(50, 1000000, 3000000)
    2000000
    >>> freq_from_pct(50, 115200, 2201600, [115200, 729600, 1113600, 1497600, 2201600])
    1113600
    """
    target = lo_khz + (hi_khz - lo_khz) * pct // 100
    if steps:
        below = [s for s in steps if s <= target]
        return max(below) if below else min(steps)
    return target


class CpufreqBackend(Backend):
    """sysfs cpufreq policies (``/sys/devices/system/cpu/cpufreq/policyN``)."""

    name = "cpufreq"
    SETTINGS = {
        s.name: s
        for s in (
            Setting("governor", "a governor or a fallback list of " + ", ".join(GOVERNORS),
                    "scaling governor; the first one the policy offers is used",
                    fallback_list(GOVERNORS), type=list[str]),
            Setting("epp", ", ".join(EPP_VALUES),
                    "energy_performance_preference (intel_pstate/amd-pstate active mode)",
                    one_of(EPP_VALUES), type=str),
            Setting("min_freq_pct", "integer 0..100",
                    "scaling_min_freq as a percentage of cpuinfo_min..cpuinfo_max", int_range(0, 100), type=int),
            Setting("max_freq_pct", "integer 0..100",
                    "scaling_max_freq as a percentage of cpuinfo_min..cpuinfo_max", int_range(0, 100), type=int),
            Setting("boost", "true or false", "turbo/boost (cpufreq/boost or intel_pstate/no_turbo)",
                    boolean, type=bool),
        )
    }

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs
        self.policies = [p for p in sysfs.listdir(CPUFREQ)
                         if p.startswith("policy") and p[6:].isdigit()]
        self.policies.sort(key=lambda p: int(p[6:]))
        self._knobs = self._make_knobs()
        self._reading: tuple[float, dict[str, float]] | None = None
        self._fixed_cache: dict[str, str | None] = {}

    @classmethod
    def probe(cls, ctx: HostContext) -> CpufreqBackend | str:
        backend = cls(ctx.sysfs)
        if backend.policies:
            return backend
        if not ctx.sysfs.exists(CPUFREQ):
            return f"no {ctx.sysfs.path(CPUFREQ)}: the kernel has no cpufreq driver here (usual in VMs and containers)"
        return f"no policyN under {ctx.sysfs.path(CPUFREQ)}"

    # --- reading ----------------------------------------------------------------------------

    def _p(self, policy: str, leaf: str) -> str:
        return f"{CPUFREQ}/{policy}/{leaf}"

    def _fixed(self, policy: str, leaf: str) -> str | None:
        """A file the driver sets once (:data:`FIXED`): read on first use, then remembered, so the
        re-verify pass every ``reapply_s`` reads only the live values."""
        rel = self._p(policy, leaf)
        if rel not in self._fixed_cache:
            self._fixed_cache[rel] = self.sysfs.read(rel)
        return self._fixed_cache[rel]

    def driver(self) -> str | None:
        return self._fixed(self.policies[0], "scaling_driver") if self.policies else None

    def governors(self) -> dict[str, str | None]:
        """Live governor per policy (``cat .../policyN/scaling_governor``)."""
        return {p: self.sysfs.read(self._p(p, "scaling_governor")) for p in self.policies}

    def policy_cpus(self, policy: str) -> list[int]:
        """CPUs of a policy (``affected_cpus`` is space-separated, unlike CPU lists)."""
        return [int(c) for c in parse_words(self.sysfs.read(self._p(policy, "affected_cpus")))]  # hotplug changes it

    def _make_knobs(self) -> dict[str, Knob]:
        knobs: dict[str, Knob] = {}
        for p in self.policies:
            for leaf, desc in (("scaling_governor", "governor"),
                               ("energy_performance_preference", "EPP"),
                               ("scaling_min_freq", "minimum frequency, kHz"),
                               ("scaling_max_freq", "maximum frequency, kHz"),
                               ("boost", "per-policy boost (0/1)")):
                rel = self._p(p, leaf)
                if self.sysfs.exists(rel):
                    knobs[f"cpufreq.{p}.{leaf}"] = sysfs_knob(self.sysfs, rel, f"cpufreq.{p}.{leaf}",
                                                              self.name, f"{p} {desc}")
        for rel, name, desc in ((f"{CPUFREQ}/boost", "cpufreq.boost", "global boost (0/1)"),
                                ("devices/system/cpu/intel_pstate/no_turbo", "intel_pstate.no_turbo",
                                 "intel_pstate turbo disabled (0/1)")):
            if self.sysfs.exists(rel):
                knobs[name] = sysfs_knob(self.sysfs, rel, name, self.name, desc)
        return knobs

    def knobs(self) -> dict[str, Knob]:
        return self._knobs

    def readings(self) -> dict[str, float]:
        """Mean ``scaling_cur_freq`` in MHz: a figure for ``status`` and metrics, not a load
        signal, so read at most every :data:`READING_S` seconds (one file per policy: a 64-CPU
        host would otherwise read 64 files every tick)."""
        now = time.monotonic()
        if self._reading is None or now - self._reading[0] >= READING_S:
            cur = [self.sysfs.read(self._p(p, "scaling_cur_freq")) for p in self.policies]
            vals = [int(c) for c in cur if c and c.isdigit()]
            self._reading = (now, {"cpu_freq_mhz": sum(vals) / len(vals) / 1000.0} if vals else {})
        return dict(self._reading[1])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver(), "policies": self.policies}

    # --- planning ---------------------------------------------------------------------------

    def plan(self, settings: dict[str, Any]) -> tuple[list[Change], list[Skipped]]:
        changes: list[Change] = []
        skipped: list[Skipped] = []
        driver = self.driver() or ""
        boost = settings.get("boost")
        if boost is not None:
            if "cpufreq.boost" in self._knobs:
                changes.append(Change(self._knobs["cpufreq.boost"], "1" if boost else "0"))
            elif "intel_pstate.no_turbo" in self._knobs:
                changes.append(Change(self._knobs["intel_pstate.no_turbo"], "0" if boost else "1"))
        for p in self.policies:
            gov = None
            if settings.get("governor"):
                avail = parse_words(self._fixed(p, "scaling_available_governors"))
                gov = choose_governor(settings["governor"], avail)
                if gov is None:
                    skipped.append(Skipped(f"cpufreq.{p}.scaling_governor",
                                           f"none of {settings['governor']} offered; have {avail}"))
                else:
                    note = "" if gov == settings["governor"][0] else f"fallback from {settings['governor'][0]}"
                    changes.append(Change(self._knobs[f"cpufreq.{p}.scaling_governor"], gov, note))
            if boost is not None and "cpufreq.boost" not in self._knobs \
                    and "intel_pstate.no_turbo" not in self._knobs \
                    and f"cpufreq.{p}.boost" in self._knobs:
                changes.append(Change(self._knobs[f"cpufreq.{p}.boost"], "1" if boost else "0"))
            epp = settings.get("epp")
            if epp is not None:
                name = f"cpufreq.{p}.energy_performance_preference"
                live_gov = gov or self.sysfs.read(self._p(p, "scaling_governor"))
                avail = parse_words(self._fixed(p, "energy_performance_available_preferences"))
                if name not in self._knobs:
                    skipped.append(Skipped(name, "no EPP on this policy"))
                elif live_gov == "performance" and driver in EPP_FORCED_BY_PERFORMANCE:
                    skipped.append(Skipped(name, f"{driver} forces EPP to performance under the "
                                                 "performance governor"))
                elif avail and epp not in avail:
                    skipped.append(Skipped(name, f"{epp!r} not offered; have {avail}"))
                else:
                    changes.append(Change(self._knobs[name], epp))
            changes.extend(self._freq_changes(p, settings, skipped))
        return self.order(changes), skipped

    def _freq_changes(self, p: str, settings: dict[str, Any], skipped: list[Skipped]) -> list[Change]:
        lo_pct, hi_pct = settings.get("min_freq_pct"), settings.get("max_freq_pct")
        if lo_pct is None and hi_pct is None:
            return []
        lo = self._fixed(p, "cpuinfo_min_freq")
        hi = self._fixed(p, "cpuinfo_max_freq")
        if not (lo and hi and lo.isdigit() and hi.isdigit()):
            skipped.append(Skipped(f"cpufreq.{p}.scaling_max_freq", "cpuinfo_min/max_freq unreadable"))
            return []
        steps = [int(s) for s in parse_words(self._fixed(p, "scaling_available_frequencies"))]
        out = []
        for pct, leaf in ((lo_pct, "scaling_min_freq"), (hi_pct, "scaling_max_freq")):
            if pct is not None and f"cpufreq.{p}.{leaf}" in self._knobs:
                khz = freq_from_pct(pct, int(lo), int(hi), steps or None)
                out.append(Change(self._knobs[f"cpufreq.{p}.{leaf}"], str(khz)))
        return out

    def order(self, changes: list[Change]) -> list[Change]:
        """Boost, then governors, then EPP, then frequencies (min/max in a safe order)."""
        def rank(ch: Change) -> int:
            leaf = ch.knob.name.rsplit(".", 1)[-1]
            return {"boost": 0, "no_turbo": 0, "scaling_governor": 1,
                    "energy_performance_preference": 2}.get(leaf, 3)

        ordered = sorted(changes, key=rank)  # stable
        freq = [c for c in ordered if rank(c) == 3]
        rest = [c for c in ordered if rank(c) != 3]
        by_policy: dict[str, list[Change]] = {}
        for c in freq:
            by_policy.setdefault(c.knob.name.split(".")[1], []).append(c)
        for p, chs in by_policy.items():
            new_min = next((int(c.value) for c in chs if c.knob.name.endswith("min_freq")), None)
            cur_max = self.sysfs.read(self._p(p, "scaling_max_freq"))
            raising = new_min is not None and cur_max is not None and cur_max.isdigit() \
                and new_min > int(cur_max)
            chs.sort(key=lambda c: c.knob.name.endswith("min_freq") == raising)
            rest.extend(chs)
        return rest
