"""Switch decisions of the profile selector over sequences of (time, load) samples.

Policies are real policy documents run through ``parse_policy``; each test feeds a sequence and asserts what
``Selector.step`` returned at every tick (``None``: no switch). Covers what the hysteresis tests in
``test_policy.py`` leave open: no load signal, smoothing below 1, the dwell and minimum hold on the way to the
idle profile, pending changes cancelled by a hold or a window, profiles outside ``order``, static mode, window
forcing and the edges of windows.
"""

from __future__ import annotations

from datetime import datetime

import yaml

from tierfleet_ops.policy import EXAMPLE, parse_policy
from tierfleet_ops.selector import Selector

def at(hh: int, mm: int) -> datetime:
    """A time on Monday 2026-11-30."""
    return datetime(2026, 11, 30, hh, mm)


def policy(profiles: dict | None = None, windows: list | None = None, default: str | None = None,
           switching: dict | None = None, drop_switching: bool = False):
    raw = yaml.safe_load(EXAMPLE)
    if profiles is not None:
        raw["profiles"] = profiles
    if default is not None:
        raw["default_profile"] = default
    if windows is not None:
        raw["windows"] = windows
    if drop_switching:
        del raw["switching"]
    else:
        raw["switching"].update(switching or {})
    return parse_policy(yaml.safe_dump(raw), "test-policy.yaml")


def selector(start: str = "eco", **switching) -> Selector:
    p = policy(switching=switching)
    return Selector(p.switching, start, p.windows)


def steps(sel: Selector, samples, **kw) -> list[str | None]:
    """``sel.step`` over ``(t, load)`` or ``(t, load, model_loaded)`` samples."""
    out = []
    for s in samples:
        t, load = s[0], s[1]
        loaded = s[2] if len(s) > 2 else kw.get("model_loaded")
        out.append(sel.step(t, load, model_loaded=loaded, now=kw.get("now")))
    return out


# --- no load signal -------------------------------------------------------------------------------

def test_no_load_signal_keeps_the_profile():
    sel = selector("balanced", dwell_s=0, min_hold_s=0)
    assert steps(sel, [(0, None), (1, None), (2, None)]) == [None, None, None]
    assert (sel.current, sel.smoothed, sel.switches) == ("balanced", None, 0)
    # the first real sample then decides alone
    assert sel.step(3, 5.0) == "eco"


def test_a_tick_without_load_signal_cancels_a_pending_change():
    sel = selector("eco", dwell_s=5, min_hold_s=0)
    # 90 % at t=1 starts a confirmation; the signal is lost at t=2; a new one starts at t=3 and needs 5 s
    got = steps(sel, [(1, 90), (2, None), (3, 90), (4, 90), (5, 90), (6, 90), (7, 90), (8, 90)])
    assert got == [None] * 7 + ["performance"]
    assert sel.reason == "mean load 90% over 5 s"


# --- smoothing ------------------------------------------------------------------------------------

def test_smoothing_below_one_is_an_ewma_of_the_samples():
    sel = selector("eco", smoothing=0.5, dwell_s=0, min_hold_s=0)
    seen = []
    for t, load in enumerate([100, 0, 0, 0, 40]):
        seen.append((sel.step(t, load), sel.smoothed))
    # s = 0.5 * load + 0.5 * s: 100, 50, 25, 12.5, 26.25; thresholds up 35/75, down 20/55
    assert seen == [("performance", 100), ("balanced", 50), (None, 25), ("eco", 12.5), (None, 26.25)]


def test_without_smoothing_the_last_sample_decides():
    sel = selector("eco", smoothing=1, dwell_s=0, min_hold_s=0)
    assert steps(sel, [(0, 100), (1, 0)]) == ["performance", "eco"]
    assert sel.smoothed == 0


def test_a_switching_mapping_without_smoothing_or_enabled_switches_on_the_raw_load():
    sw = {"order": ["eco", "balanced", "performance"], "up": {"balanced": 35, "performance": 75},
          "down": {"balanced": 20, "performance": 55}, "dwell_s": 0, "min_hold_s": 0}
    sel = Selector(sw, "eco")
    assert steps(sel, [(0, 100), (1, 0)]) == ["performance", "eco"]
    assert sel.smoothed == 0


def test_smoothed_samples_are_what_the_dwell_averages():
    sel = selector("eco", smoothing=0.5, dwell_s=2, min_hold_s=0)
    # smoothed: 80, 40, 20 -> mean 46.7 -> balanced (35 <= 46.7 < 75); raw mean 46.7 too, so add a fourth
    assert steps(sel, [(0, 80), (1, 0), (2, 0)]) == [None, None, "balanced"]
    sel2 = selector("eco", smoothing=0.5, dwell_s=2, min_hold_s=0)
    # raw 100, 100, 0: raw mean 66.7 (balanced); smoothed 100, 100, 50: mean 83.3 -> performance
    assert steps(sel2, [(0, 100), (1, 100), (2, 0)]) == [None, None, "performance"]


# --- idle profile: dwell start and minimum hold --------------------------------------------------

def test_idle_profile_waits_exactly_one_dwell():
    sel = selector("balanced", dwell_s=5, min_hold_s=10)
    got = steps(sel, [(2, 50, False), (4, 50, False), (6.9, 50, False), (7, 50, False)])
    # wanted from t=2, switched at t=2+5; the start profile has no minimum hold
    assert got == [None, None, None, "eco"]
    assert sel.reason == "no model loaded"


def test_idle_profile_respects_the_minimum_hold():
    sel = selector("balanced", dwell_s=5, min_hold_s=10)
    up = steps(sel, [(t, 90, True) for t in range(6)])
    assert up == [None] * 5 + ["performance"]                     # entered at t=5
    down = steps(sel, [(t, 90, False) for t in range(6, 16)])
    # the dwell is over at t=11, the hold only at t=15
    assert down == [None] * 9 + ["eco"]


def test_idle_change_restarts_the_dwell_of_a_pending_load_change():
    sel = selector("balanced", dwell_s=5, min_hold_s=0)
    got = steps(sel, [(0, 90, True), (1, 90, True), (2, 90, True)]
                + [(t, 90, False) for t in range(3, 9)])
    # the load change pending since t=0 is replaced at t=3 by the idle one, switched at t=3+5
    assert got == [None] * 8 + ["eco"]


def test_unknown_model_state_is_not_idle():
    sel = selector("balanced", dwell_s=0, min_hold_s=0)
    assert steps(sel, [(0, 50, None), (1, 50, None)]) == [None, None]
    assert sel.step(2, 50, model_loaded=False) == "eco"


# --- pending changes cleared by a hold or a window ------------------------------------------------

def test_holding_the_current_profile_cancels_a_pending_change():
    sel = selector("eco", dwell_s=5, min_hold_s=0)
    assert sel.step(0, 90) is None                  # confirmation starts
    sel.hold("eco")
    assert sel.step(1, 90) is None                  # held where it is: nothing pending any more
    sel.hold(None)
    got = steps(sel, [(t, 90) for t in range(2, 8)])
    assert got == [None] * 5 + ["performance"]      # a fresh dwell from t=2
    assert sel.switches == 1


def test_hold_switches_at_once_and_release_resumes_load_control():
    sel = selector("eco", dwell_s=5, min_hold_s=30)
    sel.hold("performance")
    assert sel.step(0, 0) == "performance"
    assert sel.reason == "held"
    assert steps(sel, [(1, 0), (2, 0)]) == [None, None]
    sel.hold(None)
    # load control again: 0 % wants eco. Dwell periods run 3-8, 9-14, 15-20, 21-26, 27-32; each confirms eco
    # but the minimum hold (entered at t=0) blocks until t=30, and a blocked period is not carried over:
    # the period that ends at t=32 switches
    got = steps(sel, [(t, 0) for t in range(3, 33)])
    assert got == [None] * 29 + ["eco"]


def test_a_change_blocked_by_the_minimum_hold_needs_a_fresh_dwell():
    sel = selector("eco", dwell_s=2, min_hold_s=10)
    assert steps(sel, [(0, 90), (1, 90), (2, 90)]) == [None, None, "performance"]   # entered at t=2
    # periods 3-5, 6-8, 9-11 confirm eco while held; 12-14 is the first to end after t=12
    got = steps(sel, [(t, 0) for t in range(3, 15)])
    assert got == [None] * 11 + ["eco"]


def test_a_force_window_on_the_current_profile_cancels_a_pending_change():
    p = policy(windows=[{"profile": "eco", "from": "12:00", "to": "13:00", "mode": "force"}],
               switching={"dwell_s": 5, "min_hold_s": 0})
    sel = Selector(p.switching, "eco", p.windows)
    assert sel.step(0, 90, now=at(11, 59)) is None
    assert sel.step(1, 90, now=at(12, 0)) is None     # forced to where it is
    got = [sel.step(t, 90, now=at(13, t)) for t in range(2, 8)]
    assert got == [None] * 5 + ["performance"]       # the dwell restarted at t=2


def test_force_window_switches_at_once_despite_dwell_and_hold():
    p = policy(windows=[{"profile": "eco", "from": "12:00", "to": "13:00", "mode": "force"}],
               switching={"dwell_s": 5, "min_hold_s": 600})
    sel = Selector(p.switching, "eco", p.windows)
    assert [sel.step(t, 90, now=at(11, 0)) for t in range(6)] == [None] * 5 + ["performance"]
    assert sel.step(6, 90, now=at(12, 0)) == "eco"
    assert sel.reason == "window"
    assert sel.step(7, 90, now=at(12, 59)) is None    # still inside: 12:59 < 13:00


def test_window_edges_are_start_inclusive_end_exclusive():
    p = policy(windows=[{"profile": "eco", "from": "12:00", "to": "13:00", "mode": "force"}],
               switching={"dwell_s": 0, "min_hold_s": 0})
    for now, forced in ((at(11, 59), False), (at(12, 0), True), (at(12, 59), True), (at(13, 0), False)):
        sel = Selector(p.switching, "performance", p.windows)
        assert sel.step(0, 90, now=now) == ("eco" if forced else None), now


def test_window_days_and_midnight_wrap():
    p = policy(windows=[{"profile": "eco", "from": "22:00", "to": "02:00", "days": ["mon"], "mode": "force"}],
               switching={"dwell_s": 0, "min_hold_s": 0})
    for now, forced in ((at(23, 0), True),            # Monday night
                        (datetime(2026, 12, 1, 1, 59), True),   # Tuesday early: Monday's window
                        (datetime(2026, 12, 1, 2, 0), False),
                        (datetime(2026, 12, 1, 23, 0), False),  # Tuesday night: not a Monday window
                        (at(21, 59), False)):
        sel = Selector(p.switching, "performance", p.windows)
        assert sel.step(0, 90, now=now) == ("eco" if forced else None), now


def test_the_first_matching_window_wins():
    p = policy(windows=[{"profile": "balanced", "from": "12:00", "to": "13:00", "mode": "force"},
                        {"profile": "performance", "from": "00:00", "to": "24:00", "mode": "force"},
                        {"profile": "eco", "from": "00:00", "to": "24:00", "mode": "cap"},
                        {"profile": "balanced", "from": "00:00", "to": "24:00", "mode": "cap"}],
               switching={"dwell_s": 0, "min_hold_s": 0})
    sel = Selector(p.switching, "eco", p.windows)
    assert sel.step(0, 90, now=at(12, 30)) == "balanced"       # first force
    assert sel.step(1, 90, now=at(14, 0)) == "performance"     # the other force; forces beat caps


def test_the_first_cap_wins_and_a_cap_never_raises():
    p = policy(windows=[{"profile": "eco", "from": "00:00", "to": "24:00", "mode": "cap"},
                        {"profile": "balanced", "from": "00:00", "to": "24:00", "mode": "cap"}],
               switching={"dwell_s": 0, "min_hold_s": 0})
    sel = Selector(p.switching, "eco", p.windows)
    assert sel.step(0, 95, now=at(10, 0)) is None              # capped at eco
    p2 = policy(windows=[{"profile": "balanced", "from": "00:00", "to": "24:00", "mode": "cap"}],
                switching={"dwell_s": 0, "min_hold_s": 0})
    sel2 = Selector(p2.switching, "eco", p2.windows)
    assert sel2.step(0, 10, now=at(10, 0)) is None             # below the cap: stays eco
    assert sel2.step(1, 50, now=at(10, 0)) == "balanced"       # at the cap: load-driven, no cap needed
    assert sel2.reason == "mean load 50% over 0 s"
    assert sel2.step(2, 95, now=at(10, 0)) is None             # above: capped where it is


# --- profiles outside order -----------------------------------------------------------------------

def _profiles_with_turbo() -> dict:
    return {**yaml.safe_load(EXAMPLE)["profiles"], "turbo": {"cpufreq": {"governor": "performance"}}}


def test_a_start_profile_outside_order_is_kept_until_load_reaches_a_level():
    p = policy(profiles=_profiles_with_turbo(), default="turbo", switching={"dwell_s": 0, "min_hold_s": 0})
    sel = Selector(p.switching, p.default_profile)
    assert sel.current == "turbo"
    assert steps(sel, [(0, 10), (1, 30), (2, 0)]) == [None, None, None]
    assert sel.step(3, 40) == "balanced"
    assert sel.step(4, 0) == "eco"


def test_a_force_window_may_name_a_profile_outside_order():
    p = policy(profiles=_profiles_with_turbo(),
               windows=[{"profile": "turbo", "from": "12:00", "to": "13:00", "mode": "force"}],
               switching={"dwell_s": 5, "min_hold_s": 0})
    sel = Selector(p.switching, "eco", p.windows)
    assert sel.step(0, 0, now=at(12, 0)) == "turbo"
    # afterwards a load that reaches a level moves it back into order after a dwell
    assert [sel.step(t, 50, now=at(14, 0)) for t in range(1, 7)] == [None] * 5 + ["balanced"]


# --- static mode ----------------------------------------------------------------------------------

def test_static_policy_never_follows_load():
    p = policy(drop_switching=True)
    assert p.switching["enabled"] is False
    sel = Selector(p.switching, p.default_profile)
    assert steps(sel, [(t, 100 if t % 20 < 10 else 0) for t in range(100)]) == [None] * 100
    assert (sel.current, sel.switches) == ("balanced", 0)


def test_static_policy_returns_to_its_profile_at_once_after_a_hold():
    p = policy(drop_switching=True)
    sel = Selector(p.switching, p.default_profile)
    sel.hold("performance")
    assert sel.step(0, 0) == "performance"
    sel.hold(None)
    assert sel.step(1, 100) == "balanced"   # no dwell (10 s by default), load ignored
    assert sel.reason == "static"


# --- levels ---------------------------------------------------------------------------------------

def test_four_levels_step_down_one_band_at_a_time_and_jump_up():
    profiles = {n: {"cpufreq": {"governor": "performance"}} for n in ("eco", "balanced", "performance", "max")}
    p = policy(profiles=profiles, default="eco",
               switching={"order": ["eco", "balanced", "performance", "max"],
                          "up": {"balanced": 30, "performance": 60, "max": 85},
                          "down": {"balanced": 15, "performance": 45, "max": 70},
                          "dwell_s": 0, "min_hold_s": 0, "idle_profile": "eco"})
    sel = Selector(p.switching, "eco")
    got = steps(sel, [(0, 65), (1, 90), (2, 50), (3, 90), (4, 20), (5, 90), (6, 5), (7, 29), (8, 30)])
    assert got == ["performance", "max", "performance", "max", "balanced", "max", "eco", None, "balanced"]
    assert sel.switches == 8


def test_thresholds_are_inclusive_going_up_and_exclusive_going_down():
    sel = selector("eco", dwell_s=0, min_hold_s=0)
    assert sel.step(0, 34.9) is None
    assert sel.step(1, 35) == "balanced"        # up: load >= 35
    assert sel.step(2, 75) == "performance"     # up: load >= 75
    assert sel.step(3, 55) is None              # down: leave only when load < 55
    assert sel.step(4, 54.9) == "balanced"
    assert sel.step(5, 20) is None              # down: leave only when load < 20
    assert sel.step(6, 19.9) == "eco"


def test_a_fresh_selector_and_one_without_windows():
    p = policy(switching={"dwell_s": 0, "min_hold_s": 0})
    sel = Selector(p.switching, "balanced")       # no windows given
    assert (sel.current, sel.reason, sel.switches) == ("balanced", "start", 0)
    assert sel.step(0, 90, now=at(12, 0)) == "performance"
    assert (sel.reason, sel.switches) == ("mean load 90% over 0 s", 1)
