"""Load-driven profile choice with hysteresis, a dwell time, a minimum hold and time windows.

Profiles form levels (``switching.order``, lowest power first). Each level above the first has
an ``up`` threshold (enter it when load >= up) and a lower ``down`` threshold (leave it when
load < down): the band between them is where the current level is kept, so a signal that
wanders around one threshold cannot flap. A wanted change is confirmed over ``dwell_s`` by the
mean load of that period, and a profile is kept at least ``min_hold_s`` once entered. A manual
hold overrides everything; windows cap or force a profile by time of day. Pure: the caller passes
time and load in.

>>> from tierfleet_ops.policy import parse_policy, EXAMPLE
>>> sel = Selector(parse_policy(EXAMPLE).switching, "eco")
>>> [sel.step(t, 90.0) for t in (0, 1, 5, 6)]
[None, None, 'performance', None]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .policy import Window


@dataclass
class Decision:
    profile: str
    reason: str


class Selector:
    """Step once per tick with the load (percent) and whether a model is loaded."""

    def __init__(self, switching: dict[str, Any], start: str, windows: list[Window] | None = None) -> None:
        self.sw = switching
        self.order: list[str] = switching["order"]
        self.windows = windows or []
        self.current = start
        self.default = start
        self.entered_at = float("-inf")  # the start profile has no minimum hold
        self.pending: str | None = None
        self.pending_since = 0.0
        self.smoothed: float | None = None
        self.held: str | None = None
        self.switches = 0
        self.reason = "start"
        self._samples: list[float] = []

    def hold(self, profile: str | None) -> None:
        """Hold a profile (``None`` releases); takes effect at the next step, without dwell."""
        self.held = profile

    def _level(self, p: str) -> int:
        return self.order.index(p) if p in self.order else 0

    def by_load(self, load: float) -> str:
        """The level hysteresis gives for ``load`` starting from the current level."""
        i = self._level(self.current)
        up, down = self.sw["up"], self.sw["down"]
        higher = [j for j in range(i + 1, len(self.order))
                  if self.order[j] in up and load >= up[self.order[j]]]
        if higher:
            return self.order[max(higher)]
        if i > 0 and self.order[i] in down and load < down[self.order[i]]:
            for j in range(i - 1, 0, -1):
                if self.order[j] not in down or load >= down[self.order[j]]:
                    return self.order[j]
            return self.order[0]
        return self.order[i] if self.current in self.order else self.current

    def want(self, load: float | None, model_loaded: bool | None, now: datetime | None) -> Decision:
        if self.held:
            return Decision(self.held, "held")
        forced = cap = None
        if now is not None:
            minute = now.hour * 60 + now.minute
            for w in self.windows:
                if w.active(now.weekday(), minute):
                    if w.mode == "force":
                        forced = forced or w.profile
                    else:
                        cap = cap or w.profile
        if forced:
            return Decision(forced, "window")
        if model_loaded is False and self.sw.get("idle_profile"):
            d = Decision(self.sw["idle_profile"], "no model loaded")
        elif not self.sw.get("enabled", True):
            d = Decision(self.default, "static")
        elif load is None:
            d = Decision(self.current, "no load signal")
        else:
            d = Decision(self.by_load(load), f"load {load:.0f}%")
        if cap and self._level(d.profile) > self._level(cap) and d.profile in self.order:
            d = Decision(cap, "window cap")
        return d

    def step(self, t: float, load: float | None, model_loaded: bool | None = None,
             now: datetime | None = None) -> str | None:
        """Feed one sample at time ``t`` (s); returns the new profile when it switches.

        A load-driven change starts a confirmation period when one sample asks for another
        level; after ``dwell_s`` the hysteresis rule is applied again to the *mean* of the
        samples seen in that period, so single counter-samples neither reset nor force it.
        """
        if load is not None:
            a = self.sw.get("smoothing", 1.0)
            self.smoothed = load if self.smoothed is None else a * load + (1 - a) * self.smoothed
        d = self.want(self.smoothed if load is not None else None, model_loaded, now)
        if d.reason in ("held", "window", "static"):
            self.pending = None
            return self._switch(t, d) if d.profile != self.current else None
        if d.reason.startswith("load"):
            return self._by_load_step(t, d, model_loaded, now)
        # idle profile or static: the same profile must be wanted for dwell_s
        if d.profile == self.current:
            self.pending = None
            return None
        if self.pending != d.profile:
            self.pending, self.pending_since, self._samples = d.profile, t, []
        if t - self.pending_since >= self.sw["dwell_s"] and t - self.entered_at >= self.sw["min_hold_s"]:
            return self._switch(t, d)
        return None

    def _by_load_step(self, t: float, d: Decision, model_loaded: bool | None,
                      now: datetime | None) -> str | None:
        assert self.smoothed is not None
        if self.pending != "load":
            if d.profile == self.current:
                self.pending = None
                return None
            self.pending, self.pending_since, self._samples = "load", t, []
        self._samples.append(self.smoothed)
        if t - self.pending_since < self.sw["dwell_s"]:
            return None
        mean = sum(self._samples) / len(self._samples)
        self.pending = None
        target = self.want(mean, model_loaded, now).profile  # hysteresis, caps, idle rule
        if target == self.current or t - self.entered_at < self.sw["min_hold_s"]:
            return None
        return self._switch(t, Decision(target, f"mean load {mean:.0f}% over {self.sw['dwell_s']:.0f} s"))

    def _switch(self, t: float, d: Decision) -> str:
        self.current, self.entered_at, self.pending = d.profile, t, None
        self.switches += 1
        self.reason = d.reason
        return self.current
