"""Fact parsers against hostile output: recorded real lines, mutated (digits swapped for ``²``, Arabic-Indic or
full-width digits, thousands of digits, ``inf``/``nan``/``1_0``; lines cut short; NUL bytes), must parse to a
value or to "unknown", never raise, and never yield a number nobody's hardware has. A whole host built from
such facts must still get a preflight verdict."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pyinfra.api import FactBase

from tests.fleets import HOSTS
from tierfleet.catalog import load_catalog
from tierfleet.preflight import check_host
from tierfleet.profile import FACTS, build_profile

SPECS = Path(__file__).parent / "specs"
#: the parsers tested here; ``release`` and ``artifacts`` parse JSON documents and have their own tests
MODULES = ("cpu", "jetson", "nvidia", "ops", "packages", "power", "system")
#: seed lines for facts without recorded specs (the real tools' formats)
SEEDS = {
    "cpu.AllowedCpus": ["Cpus_allowed_list:\t0-3,8,10-11"],
    "ops.PythonVersion": ["3.11"],
    "ops.OpsInstalled": ["tierfleet-ops, version 0.4.0"],
    "packages.AptHeld": ["cuda-drivers-570", "nvidia-utils-570-server:amd64"],
    "packages.DebInstalled": ["cuda-drivers-570\tinstalled", "nvidia-driver-550\tconfig-files"],
}
TOKENS = ["²", "١٢", "０", "9" * 5000, "9" * 400, "9" * 30, "18446744073709551616", "-1", "1_0", "+1", " 1", "inf", "nan",
          "1e400", "", "\x00", "\ufeff", "\r", "[N/A]", ":", ",", "=", "\t", "/", "-", "0-", "0--1", "\U0001d7e0"]


def _facts() -> list[tuple[str, type]]:
    found = []
    for module in MODULES:
        mod = importlib.import_module(f"tierfleet.facts.{module}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, FactBase) and cls is not FactBase and cls.__module__ == mod.__name__:
                found.append((f"{module}.{name}", cls))
    return sorted(found)


FACT_CLASSES = _facts()


def _seeds(fact: str) -> list[str]:
    lines = list(SEEDS.get(fact, []))
    for path in sorted((SPECS / fact).glob("*.json")):
        lines += json.loads(path.read_text())["output"]
    return lines or ["0"]


def _mutate(draw, line: str) -> str:
    how = draw(st.sampled_from(["digits", "cut", "insert", "keep"]))
    if how == "digits":
        runs = list(re.finditer(r"[0-9]+", line))
        if runs:
            run = runs[draw(st.integers(0, len(runs) - 1))]
            return line[:run.start()] + draw(st.sampled_from(TOKENS)) + line[run.end():]
    if how == "cut":
        return line[:draw(st.integers(0, len(line)))]
    if how == "insert":
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from(TOKENS)) + line[at:]
    return line


@st.composite
def hostile(draw, seeds: list[str]) -> list[str]:
    lines = [_mutate(draw, line) for line in draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=12))]
    lines += draw(st.lists(st.text(max_size=40), max_size=2))
    return lines


def _sane(value) -> bool:
    """No number beyond what real hardware reports, no inf or nan."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return abs(value) < 10**25
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) < 10**25
    if isinstance(value, dict):
        return all(_sane(k) and _sane(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_sane(v) for v in value)
    return False


def test_every_parser_is_covered():
    names = {name for name, _ in FACT_CLASSES}
    assert {"cpu.CpuTopology", "nvidia.NvidiaGpus", "system.MemInfo", "ops.PythonVersion"} <= names


@pytest.mark.parametrize(("name", "fact"), FACT_CLASSES, ids=[name for name, _ in FACT_CLASSES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_output_parses_to_a_value_or_unknown(name, fact, data):
    lines = data.draw(hostile(_seeds(name)))
    value = fact().process(lines)
    assert _sane(value), value
    json.dumps(value)  # plain data, as pyinfra keeps it


@pytest.mark.parametrize(
    ("fact", "lines"),
    [
        ("cpu.CpuTopology", ["/sys/devices/system/cpu/online:0-1", "/sys/devices/system/cpu/cpu²/topology/core_cpus_list:0"]),
        ("cpu.CpuTopology", ["/sys/devices/system/cpu/online:0-1",
                             f"/sys/devices/system/cpu/cpu{'9' * 5000}/topology/core_cpus_list:0"]),
        ("cpu.CpuFreq", [f"/sys/devices/system/cpu/cpufreq/policy{'9' * 5000}/scaling_governor:powersave"]),
        ("system.MemInfo", [f"MemTotal: {'9' * 5000} kB"]),
        ("cpu.AllowedCpus", ["Cpus_allowed_list:\t" + ",".join(["0-65535"] * 2000)]),
    ],
    ids=["superscript-cpu", "5000-digit-cpu", "5000-digit-policy", "5000-digit-meminfo", "cpulist-bomb"],
)
def test_known_hostile_lines(fact, lines):
    cls = dict(FACT_CLASSES)[fact]
    assert _sane(cls().process(lines))


@pytest.mark.parametrize(
    ("fact", "lines", "expected"),
    [
        # Python's int() reads any Unicode digit and '_' separators; the tools print ASCII only
        ("system.MemInfo", ["MemTotal: ١٢ kB", "MemFree: 1_0 kB", "Cached: ０ kB", "Buffers: 4 kB"],
         {"Buffers": 4096}),
        ("cpu.AllowedCpus", ["Cpus_allowed_list:\t٠-٣"], None),
        ("cpu.AllowedCpus", ["Cpus_allowed_list:\t0-1_0"], None),
        ("ops.PythonVersion", ["３.１１"], None),
        ("nvidia.NvidiaDriverInstalled", ["５７０.１７２"], None),
        ("nvidia.NvidiaDriverLoaded", ["NVRM version: NVIDIA UNIX x86_64 Kernel Module  ５７０.１７２  Tue"], None),
    ],
)
def test_non_ascii_digits_are_not_numbers(fact, lines, expected):
    assert dict(FACT_CLASSES)[fact]().process(lines) == expected


def test_non_ascii_digits_in_sysfs_paths_are_ignored():
    topo = dict(FACT_CLASSES)["cpu.CpuTopology"]().process([
        "/sys/devices/system/cpu/online:0-1",
        "/sys/devices/system/cpu/cpu0/topology/core_cpus_list:0",
        "/sys/devices/system/cpu/cpu1/topology/core_cpus_list:1",
        "/sys/devices/system/cpu/cpu١/topology/core_cpus_list:0-1",  # Arabic-Indic one: not cpu1
        "/sys/devices/system/node/node٠/cpulist:0-1",
    ])
    assert topo["cores"] == [[0], [1]] and topo["numa_nodes"] == {}


def test_gpu_figures_must_be_plain_numbers():
    from tierfleet.facts.nvidia import parse_gpu_line

    gpu = parse_gpu_line("0, Tesla T4, 1_5360, 7.5, 570.172.08, Disabled, inf, nan, 6e1, 70.00, ١٥٩٠, [N/A]")
    assert gpu is not None and gpu["name"] == "Tesla T4"
    assert (gpu["memory_total_mib"], gpu["power_limit_w"], gpu["power_default_limit_w"], gpu["power_min_limit_w"],
            gpu["power_max_limit_w"], gpu["max_sm_clock_mhz"]) == (None, None, None, None, 70.0, None)
    assert parse_gpu_line("٠, Tesla T4, 15360, 7.5, 570.172.08, Disabled, 70, 70, 60, 70, 1590, [N/A]") is None


CATALOG = load_catalog()
KINDS = sorted(HOSTS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_host_with_hostile_facts_still_gets_a_verdict(data):
    kind = data.draw(st.sampled_from(KINDS))
    facts = {}
    for key, (fact, _) in FACTS.items():
        lines = HOSTS[kind].get(key, [])
        if data.draw(st.booleans()):
            name = f"{fact.__module__.rsplit('.', 1)[1]}.{fact.__name__}"
            lines = data.draw(hostile(lines or _seeds(name)))
        facts[key] = fact().process(lines) if lines else fact().default()
    profile = build_profile(kind, facts)
    for tier in ("auto", *CATALOG.names):
        verdict = check_host(profile, CATALOG, tier)
        assert verdict.reason
