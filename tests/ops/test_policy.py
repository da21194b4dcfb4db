"""Policy validation, hashing, and load switching with hysteresis on recorded noisy traces."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml

from tierfleet_ops.errors import ConfigError
from tierfleet_ops.policy import EXAMPLE, load_policy, parse_policy
from tierfleet_ops.selector import Selector


def with_(**patch):
    raw = yaml.safe_load(EXAMPLE)
    for dotted, value in patch.items():
        node = raw
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return yaml.safe_dump(raw)


def test_example_policy_validates_with_defaults():
    p = parse_policy(EXAMPLE, "ops-policy.yaml")
    assert p.default_profile == "balanced"
    assert p.profiles["eco"]["cpufreq"]["governor"] == ["powersave", "schedutil"]
    assert p.profiles["eco"]["jetson"]["nvpmodel"] is None  # unset: left alone
    assert p.pinning == {"enabled": True, "reserve_cores": 2, "numa": "single", "move_os_slices": False,
                         "interval_s": 5.0}
    assert p.top["on_stop"] == "restore"


@pytest.mark.parametrize("patch, message", [
    ({"profiles__eco__cpufreq__governor": "turbo"},
     "f.yaml: profiles.eco.cpufreq.governor: 'turbo' is not one of performance, powersave"),
    ({"profiles__eco__cpufreq__path": "/sys/kernel/x"},
     "f.yaml: profiles.eco.cpufreq.path: unknown setting; allowed: boost, epp, governor"),
    ({"profiles__eco__sysfs": {"devices/system/cpu/cpu1/online": 0}},
     "f.yaml: profiles.eco.sysfs: unknown backend; allowed: cpufreq, jetson, nvml"),
    ({"profiles__eco__cpufreq__max_freq_pct": 140},
     "profiles.eco.cpufreq.max_freq_pct: 140 is not an integer in 0..100; allowed: integer 0..100"),
    ({"profiles__eco__cpufreq__min_freq_pct": 80},
     "profiles.eco.cpufreq.min_freq_pct: must be <= max_freq_pct (60)"),
    ({"profiles__eco__nvml__locked_sm_clocks_mhz": [1500, 1200]},
     "profiles.eco.nvml.locked_sm_clocks_mhz: [1500, 1200] is not [min_mhz, max_mhz]"),
    ({"switching__down__performance": 80},
     "switching.down.performance: must be below switching.up.performance (75.0) to give hysteresis"),
    ({"switching__up__turbo": 90}, "switching.up.turbo: not a level above the first"),
    ({"switching__idle_profile": "sleep"},
     "switching.idle_profile: 'sleep' is not a profile; allowed: balanced, eco, performance"),
    ({"runtime__metrics_url": "http://10.0.0.5:8080/metrics"},
     "runtime.metrics_url: 'http://10.0.0.5:8080/metrics' is not an http:// URL on 127.0.0.0/8"),
    ({"on_stop": "rollback"}, "f.yaml: on_stop: 'rollback' is not one of restore, keep"),
    ({"colour": "blue"}, "f.yaml: colour: unknown key; allowed: default_profile, on_stop"),
    ({"windows": [{"profile": "eco", "from": "25:00", "to": "06:00"}]},
     "windows[0].from: '25:00' is not a time of day; allowed: HH:MM, 00:00..24:00"),
    ({"windows": [{"profile": "eco", "from": "01:00", "to": "02:00", "days": ["someday"]}]},
     "windows[0].days: ['someday'] is not a list of days; allowed: a list of mon, tue"),
    ({"windows": [{"profile": "eco", "from": "01:00", "to": "02:00", "colour": "red"}]},
     "windows[0].colour: unknown key; allowed: profile, from, to, days, mode"),
    ({"windows": [{"from": "01:00", "to": "02:00"}]}, "windows[0].profile: required"),
    ({"switching": [1, 2]}, "f.yaml: switching: [1, 2] is not a mapping with keys down, dwell_s, idle_profile"),
    ({"profiles__eco__cpufreq": "fast"}, "profiles.eco.cpufreq: 'fast' is not a mapping with keys boost, epp"),
    ({"profiles__eco__cpufreq__governor": ["powersave", {"a": 1}]},
     "profiles.eco.cpufreq.governor: {'a': 1} is not one of performance"),
    ({"profiles__eco__jetson__nvpmodel": "MAXN²"},
     "profiles.eco.jetson.nvpmodel: 'MAXN²' is not a name of letters, digits"),
    ({"runtime__container": "abc; rm -rf /"}, "runtime.container: 'abc; rm -rf /' is not 6..64"),
])
def test_bad_policies_name_file_key_and_allowed(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_policy(with_(**patch), "f.yaml")
    assert message in str(err.value)


def test_not_yaml_and_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match=r"f.yaml: <document>: not valid YAML"):
        parse_policy("profiles: [", "f.yaml")
    with pytest.raises(ConfigError, match=r"missing.yaml: <file>: cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_hash_follows_content_not_formatting():
    a = parse_policy(EXAMPLE).hash
    b = parse_policy(yaml.safe_dump(yaml.safe_load(EXAMPLE), default_flow_style=True)).hash
    c = parse_policy(with_(switching__dwell_s=6)).hash
    assert a == b and a != c and len(a) == 12


def test_loopback_urls_accepted():
    p = parse_policy(with_(runtime__metrics_url="http://127.0.0.1:8080/metrics",
                           runtime__slots_url="http://localhost:8080/slots"))
    assert p.runtime["metrics_url"].startswith("http://127.0.0.1")


# --- switching -------------------------------------------------------------------------------

def run(sel, samples, key="cpu", **kw):
    profile_at = []
    for s in samples:
        sel.step(s["t"], s[key], **kw)
        profile_at.append(sel.current)
    return profile_at


def naive_switches(samples, up, key="cpu"):
    """A threshold without hysteresis or dwell: what tuned-like static rules would do per tick."""
    cur, n = None, 0
    for s in samples:
        lvl = sum(s[key] >= u for u in up)
        n += cur is not None and lvl != cur
        cur = lvl
    return n


def test_recorded_noisy_cpu_trace_does_not_flap(data_dir):
    samples = json.loads((data_dir / "cpu_util_noisy_trace.json").read_text())["samples"]
    policy = parse_policy(EXAMPLE)
    sel = Selector(policy.switching, "eco")
    profiles = run(sel, samples)
    naive = naive_switches(samples, [35, 75])
    # five load phases: at most one switch per phase boundary plus one spare
    assert sel.switches <= 6, sel.switches
    assert naive >= 3 * sel.switches, (naive, sel.switches)
    heavy = [p for p, s in zip(profiles, samples, strict=True) if s["phase"] == "heavy"]
    assert heavy[-1] == "performance"
    assert heavy.count("performance") >= len(heavy) // 2
    assert profiles[0] == "eco"
    assert profiles[-1] != "performance"


def test_dwell_without_hysteresis_is_not_enough(data_dir):
    """The hysteresis band does real work: with down == up - tiny, the same trace flaps more."""
    samples = json.loads((data_dir / "cpu_util_noisy_trace.json").read_text())["samples"]
    narrow = parse_policy(with_(switching__down={"balanced": 34.9, "performance": 74.9},
                                switching__dwell_s=0.0, switching__min_hold_s=0))
    wide = parse_policy(with_(switching__dwell_s=0.0, switching__min_hold_s=0))
    s_narrow, s_wide = Selector(narrow.switching, "eco"), Selector(wide.switching, "eco")
    run(s_narrow, samples)
    run(s_wide, samples)
    assert s_wide.switches < s_narrow.switches


def test_recorded_h200_gpu_util_switches_up_once_and_back(data_dir):
    probe = json.loads((data_dir / "h200_nvml_probe.json").read_text())
    samples = probe["trace"]
    policy = parse_policy(with_(switching__dwell_s=1.0, switching__min_hold_s=2.0))
    sel = Selector(policy.switching, "eco")
    profiles = run(sel, samples, key="util")
    assert "performance" in profiles
    assert sel.switches <= 2


def test_dwell_delays_and_a_blip_is_ignored():
    sw = parse_policy(with_(switching__dwell_s=3.0, switching__min_hold_s=0)).switching
    sel = Selector(sw, "eco")
    # a one-tick blip: the mean over the dwell is low, nothing switches
    assert [sel.step(t, v) for t, v in ((0, 90), (1, 10), (2, 5), (3, 10), (4, 10))] == [None] * 5
    # a step: switches one dwell after the first high sample, to the level of the mean
    assert [sel.step(t, v) for t, v in ((5, 90), (6, 95), (7, 90), (8, 90))] == \
        [None, None, None, "performance"]
    # a step with noise inside the dwell lands on the level of the mean (balanced: 35 <= 50 < 75)
    sel2 = Selector(sw, "eco")
    assert [sel2.step(t, v) for t, v in ((0, 90), (1, 10), (2, 60), (3, 40))] == [None, None, None, "balanced"]


def test_min_hold_keeps_a_profile():
    sw = parse_policy(with_(switching__dwell_s=0.0, switching__min_hold_s=30)).switching
    sel = Selector(sw, "eco")
    assert sel.step(0, 90) == "performance"
    assert [sel.step(t, 0) for t in (1, 10, 29)] == [None, None, None]
    assert sel.step(30, 0) == "eco"


def test_hysteresis_band_keeps_the_level():
    sw = parse_policy(with_(switching__dwell_s=0.0, switching__min_hold_s=0)).switching
    sel = Selector(sw, "eco")
    assert sel.step(0, 80) == "performance"
    assert sel.step(1, 60) is None           # 55 <= 60 < 75: stay
    assert sel.step(2, 50) == "balanced"     # below 55, above balanced's 20
    assert sel.step(3, 10) == "eco"


def test_idle_profile_when_no_model_is_loaded_and_hold_overrides():
    sw = parse_policy(EXAMPLE).switching
    sel = Selector(sw, "balanced")
    sel.step(0, 90, model_loaded=False)
    assert sel.step(5, 90, model_loaded=False) == "eco"
    sel.hold("performance")
    assert sel.step(6, 0, model_loaded=False) == "performance"
    sel.hold(None)
    sel.step(7, 0, model_loaded=False)
    assert sel.step(20, 0, model_loaded=False) == "eco"


def test_time_windows_cap_and_force():
    p = parse_policy(with_(windows=[{"profile": "balanced", "from": "22:00", "to": "06:00", "mode": "cap"},
                                    {"profile": "eco", "from": "12:00", "to": "13:00", "days": ["sun"],
                                     "mode": "force"}],
                           switching__dwell_s=0.0, switching__min_hold_s=0))
    sel = Selector(p.switching, "eco", p.windows)
    night = datetime(2026, 11, 27, 23, 30)  # a Friday
    assert sel.step(0, 95, now=night) == "balanced"
    assert sel.step(1, 95, now=datetime(2026, 11, 28, 7, 0)) == "performance"
    assert sel.step(2, 95, now=datetime(2026, 11, 29, 12, 30)) == "eco"  # Sunday noon: forced
    # after midnight the window that began on Friday still caps (Saturday 01:00)
    sel2 = Selector(p.switching, "eco", p.windows)
    assert sel2.step(0, 95, now=datetime(2026, 11, 28, 1, 0)) == "balanced"


# --- null, hostile and malformed files: always a ConfigError that names the key ----------------

def key_paths(node, prefix=()):
    """Every key path of a nested mapping (lists are leaves)."""
    for k, v in node.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from key_paths(v, prefix + (k,))


def set_path(raw, path, value):
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


EXAMPLE_KEYS = sorted(key_paths(yaml.safe_load(EXAMPLE)))


@pytest.mark.parametrize("path", EXAMPLE_KEYS, ids=".".join)
def test_an_explicit_null_is_an_error_naming_its_key(path):
    raw = yaml.safe_load(EXAMPLE)
    set_path(raw, path, None)
    with pytest.raises(ConfigError) as err:
        parse_policy(yaml.safe_dump(raw), "f.yaml")
    assert err.value.key == ".".join(path)
    assert "null" in err.value.problem or "non-empty mapping" in err.value.problem


def test_null_tick_and_empty_on_stop_name_the_default():
    with pytest.raises(ConfigError, match=r"f.yaml: tick_s: null is not a value; leave the key out for the "
                                          r"default \(1.0\); allowed: seconds 0.1..60"):
        parse_policy(EXAMPLE.replace("tick_s: 1.0", "tick_s: null"), "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml: on_stop: null is not a value; leave the key out for the "
                                          r"default \(restore\)"):
        parse_policy(EXAMPLE.replace("on_stop: restore", "on_stop:"), "f.yaml")


WRONG = [None, 0, -1, 1.5, float("inf"), float("nan"), True, "", "x" * 300, [], [None], {}, {"x": None},
         [[[]]], "eco", ["eco"], {"eco": 1}]


@pytest.mark.parametrize("path", EXAMPLE_KEYS, ids=".".join)
def test_wrong_types_anywhere_are_config_errors_or_valid(path):
    for value in WRONG:
        raw = yaml.safe_load(EXAMPLE)
        set_path(raw, path, value)
        try:
            p = parse_policy(json.dumps(raw), "f.yaml")
        except ConfigError as exc:
            assert exc.source == "f.yaml" and exc.key != "<document>", (path, value, exc)
        else:
            assert len(p.hash) == 12


@pytest.mark.parametrize("text", [
    "a: " + "[" * 10000 + "]" * 10000,
    "profiles: " + "{a: " * 5000 + "1" + "}" * 5000,
    "- " * 3000 + "x",
    "&a [*a]",
    "profiles: {eco: {cpufreq: {governor: !!python/object:os.system ls}}}",
    "\t\x00",
    "",
    "--- 1\n--- 2\n",
    # an alias bomb: nine levels of nine references (9**9 leaves if anything expanded it)
    "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"x"'] * 9) + "]\n" for i in range(9)),
    "profiles: {eco: {}}\nwindows: &w [" + ", ".join(["[1]"] * 9) + "]\nswitching: {order: [*w, *w]}\n",
])
def test_hostile_yaml_is_a_config_error(text):
    with pytest.raises(ConfigError) as err:
        parse_policy(text, "f.yaml")
    assert str(err.value).startswith("f.yaml: ")


def test_non_utf8_and_oversized_files(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(EXAMPLE.replace("eco:", "\u00e9co:").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: <file>: not UTF-8 text \(byte \d+: b'\\xe9'\)"):
        load_policy(p)
    big = tmp_path / "big.yaml"
    big.write_text(EXAMPLE + "#" * (2 << 20))
    with pytest.raises(ConfigError, match=r"big.yaml: <file>: larger than"):
        load_policy(big)
