"""Energy policy from a host's facts: Jetson power modes from the board's nvpmodel conf, GPU power limits from
the GPUs' constraints; read by the real fact commands against the lab's stand-ins and recordings, rendered into
the policy template and accepted by the ops daemon's own policy parser and backends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.backends.nvml import NvmlBackend
from tierfleet_ops.policy import parse_policy
from tierfleet_ops.state import StateStore
from tierfleet_ops.testing.fakenvml import FakeNvml

from tierfleet.energy import gpu_power_limits, jetson_modes, mode_watts, plan_energy
from tierfleet.facts.jetson import NvpmodelConf, parse_nvpmodel_conf_output
from tierfleet.facts.nvidia import NvidiaGpus
from tierfleet.lab import jetson as lab_jetson
from tierfleet.lab.profiles import PROFILES

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tierfleet" / "lab" / "stand-ins"
RECORDINGS = REPO / "tierfleet" / "lab" / "recordings"
ORIN_AGX_CONF = REPO / "tests" / "ops" / "data" / "orin_agx_nvpmodel.conf"
H200_PROBE = REPO / "tests" / "ops" / "data" / "h200_nvml_probe.json"


def render_policy(**variables) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("ops-policy.yaml.j2").render(**variables)


# --- Jetson: the nvpmodel conf, read on the host ------------------------------------------------

def conf_fact(tmp_path: Path, conf_text: str | None, conf_file_path: str | None = None):
    """Run the NvpmodelConf fact's command with its two paths moved under ``tmp_path``; parse its output."""
    etc, state = tmp_path / "etc/nvpmodel.conf", tmp_path / "var/lib/nvpmodel/conf_file_path"
    etc.parent.mkdir(parents=True, exist_ok=True)
    state.parent.mkdir(parents=True, exist_ok=True)
    if conf_text is not None:
        etc.write_text(conf_text)
    if conf_file_path is not None:
        state.write_text(conf_file_path + "\n")
    fact = NvpmodelConf()
    command = (fact.command().replace("/var/lib/nvpmodel/conf_file_path", str(state))
               .replace("/etc/nvpmodel.conf", str(etc)))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, cwd=tmp_path)
    return fact.process(out.stdout.splitlines()) if out.stdout else None


def board_conf(profile: str, conf: str | None = None) -> str:
    return lab_jetson.nvpmodel_conf(PROFILES[profile].jetson, conf)


@pytest.mark.parametrize("profile, conf, expected", [
    ("jetson-nano", None, {"eco": "5W", "balanced": "MAXN", "performance": "MAXN"}),
    ("jetson-orin-nano", None, {"eco": "7W", "balanced": "15W", "performance": "15W"}),
    ("jetson-orin-nano", "p3767_0003_super", {"eco": "15W", "balanced": "MAXN_SUPER", "performance": "MAXN_SUPER"}),
])
def test_lab_boards_map_eco_balanced_performance(tmp_path, profile, conf, expected):
    info = conf_fact(tmp_path, board_conf(profile, conf))
    assert info["path"] == str(tmp_path / "etc/nvpmodel.conf")
    assert info["default"] == lab_jetson.MODES[conf or PROFILES[profile].jetson.nvpmodel_conf][1]
    assert jetson_modes(info) == (expected, [])


def test_offline_cpus_are_listed_once_in_order():
    info = parse_nvpmodel_conf_output(["##conf=/etc/nvpmodel.conf", "< POWER_MODEL ID=1 NAME=5W >",
                                       "CPU_ONLINE CORE_3 0", "CPU_ONLINE CORE_2 0", "CPU_ONLINE CORE_3 0",
                                       "CPU_ONLINE CORE_1 1"])
    assert info["modes"] == [{"id": 1, "name": "5W", "cpu_offline": [2, 3]}] and info["default"] is None


def test_agx_orin_conf_default_is_balanced_and_maxn_is_performance(tmp_path):
    info = conf_fact(tmp_path, ORIN_AGX_CONF.read_text())
    assert [(m["id"], m["name"]) for m in info["modes"]] == [(0, "MAXN"), (1, "15W"), (2, "30W")]
    assert info["modes"][1]["cpu_offline"] == list(range(4, 12)) and info["default"] == 2
    assert jetson_modes(info) == ({"eco": "15W", "balanced": "30W", "performance": "MAXN"}, [])


def test_the_conf_nvpmodel_was_pointed_at_wins(tmp_path):
    other = tmp_path / "etc/nvpmodel/nvpmodel_p3767_0003_super.conf"
    other.parent.mkdir(parents=True)
    other.write_text(board_conf("jetson-orin-nano", "p3767_0003_super"))
    info = conf_fact(tmp_path, board_conf("jetson-orin-nano"), conf_file_path=str(other))
    assert info["path"] == str(other) and info["default"] == 2
    # a path that is not readable: back to /etc/nvpmodel.conf
    info = conf_fact(tmp_path, board_conf("jetson-orin-nano"), conf_file_path=str(tmp_path / "gone.conf"))
    assert info["path"] == str(tmp_path / "etc/nvpmodel.conf") and info["default"] == 0


def test_conf_path_is_data_not_shell(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker})`touch {marker}`; touch {marker}"
    info = conf_fact(tmp_path, board_conf("jetson-nano"), conf_file_path=hostile)
    assert not marker.exists()
    assert info["path"] == str(tmp_path / "etc/nvpmodel.conf")


def test_no_conf_is_no_fact_and_no_mode(tmp_path):
    assert conf_fact(tmp_path, None) is None
    plan = plan_energy("jetson", nvpmodel=None)
    assert plan.jetson_modes == {} and "no nvpmodel conf readable" in plan.notes[0]


def conf(*modes: tuple[int, str, list[int]], default: int | None = 0) -> dict:
    return {"path": "/etc/nvpmodel.conf", "default": default,
            "modes": [{"id": i, "name": n, "cpu_offline": off} for i, n, off in modes]}


def test_ties_keep_the_most_cpus_online_then_the_lowest_id():
    # Xavier NX style: two 10 W modes, two 20 W ones
    info = conf((0, "MODE_10W_2CORE", [2, 3, 4, 5]), (1, "MODE_10W_4CORE", [4, 5]), (2, "MODE_15W_6CORE", []),
                (3, "MODE_20W_2CORE", [2, 3, 4, 5]), (4, "MODE_20W_6CORE", []), (5, "MODE_20W_6CORE_B", []),
                default=2)
    assert jetson_modes(info) == ({"eco": "MODE_10W_4CORE", "balanced": "MODE_15W_6CORE",
                                   "performance": "MODE_20W_6CORE"}, [])


def test_several_maxn_modes_and_lower_case_watts():
    info = conf((0, "MAXN_A", [3]), (1, "MAXN", []), (2, "MAXN_SUPER", [2, 3]), (3, "10w", []))
    assert jetson_modes(info)[0] == {"eco": "10w", "balanced": "MAXN_A", "performance": "MAXN"}
    assert (mode_watts("MODE_30W_ALL"), mode_watts("W15"), mode_watts("12345W")) == (30, None, None)


def test_profiles_without_a_known_mode_say_why():
    modes, notes = jetson_modes(conf((0, "DESKTOP", []), (1, "QUIET", []), default=None))
    assert modes == {}
    assert any("no PM_CONFIG DEFAULT" in n for n in notes)
    assert sum("sets no power mode" in n for n in notes) == 3
    modes, notes = jetson_modes(conf((0, "MAXN", []), (1, "5W", [2]), default=7))
    assert modes == {"eco": "5W", "performance": "MAXN"}
    assert notes == ["/etc/nvpmodel.conf: default mode 7 is not a usable mode: balanced sets no power mode"]


def test_a_mode_name_the_policy_refuses_is_never_chosen(tmp_path):
    text = board_conf("jetson-nano").replace("NAME=5W", "NAME=5W\"';$(reboot)\x1b[2J")
    info = conf_fact(tmp_path, text)
    modes, notes = jetson_modes(info)
    assert modes == {"balanced": "MAXN", "performance": "MAXN"}
    assert notes[0].startswith("nvpmodel mode 1 has a name the policy refuses") and "$(reboot)?[2J" in notes[0]
    assert "\x1b" not in notes[0]  # no terminal control sequences reach the deploy's log
    assert notes[1:] == ["no nvpmodel mode names its watts or MAXN: eco sets no power mode"]
    # nor as the default
    modes, notes = jetson_modes({**info, "default": 1})
    assert modes == {"performance": "MAXN"} and "default mode 1 is not a usable mode" in notes[1]
    p = parse_policy(render_policy(ops_host_kind="jetson", **plan_energy("jetson", info).template_vars()), "p.yaml")
    assert p.profiles["eco"]["jetson"]["nvpmodel"] is None and p.profiles["balanced"]["jetson"]["nvpmodel"] == "MAXN"


@pytest.mark.parametrize("garbage", [
    ["##conf=/etc/nvpmodel.conf", "< POWER_MODEL ID=" + "9" * 5000 + " NAME=X >", "< PM_CONFIG DEFAULT=" + "1" * 5000 + " >"],
    ["##conf=/etc/nvpmodel.conf", "\x00\xff", "< POWER_MODEL ID=1 >"],
    ["< POWER_MODEL ID=0 NAME=MAXN >", "< POWER_MODEL ID=1 NAME=5W >"],  # no header: not the fact's output
    [],
])
def test_garbled_conf_is_no_fact(garbage):
    assert parse_nvpmodel_conf_output(garbage) is None


def test_rendered_jetson_policy_names_the_modes_for_the_daemon(tmp_path):
    vars_ = plan_energy("jetson", conf_fact(tmp_path, board_conf("jetson-orin-nano"))).template_vars()
    p = parse_policy(render_policy(ops_host_kind="jetson", **vars_), "policy.yaml")
    assert {name: p.profiles[name]["jetson"]["nvpmodel"] for name in ("eco", "balanced", "performance")} == \
        {"eco": "7W", "balanced": "15W", "performance": "15W"}


# --- GPUs: the control-side nvidia-smi fact on the lab's stand-in (recorded H200 and the other profiles) --

def standin_root(tmp_path: Path, profile: str) -> Path:
    root = tmp_path / profile
    share = root / "usr/share/tierfleet-lab"
    (share / "nvml").mkdir(parents=True)
    (share / "profile.json").write_text(json.dumps(PROFILES[profile].to_json()))
    for rec in RECORDINGS.iterdir():
        shutil.copy(rec, share / "nvml" / rec.name)
    bindir = root / "bin"
    bindir.mkdir()
    (bindir / "nvidia-smi").write_text(f"#!/bin/sh\nexec {sys.executable} {STANDINS / 'nvidia-smi'} \"$@\"\n")
    (bindir / "nvidia-smi").chmod(0o755)
    return root


def smi(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TIERFLEET_LAB_STANDIN_ROOT=str(root), PATH=f"{root / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(["sh", "-c", " ".join(args)], capture_output=True, text=True, env=env)


def gpus_fact(root: Path):
    fact = NvidiaGpus()
    return fact.process(smi(root, fact.command()).stdout.splitlines())


@pytest.mark.parametrize("profile, expected", [
    ("gpu-node-h200", {"eco": 420, "balanced": 560}),  # 200-700 W, default 700 W
    ("gpu-node-a100", {"eco": 240, "balanced": 320}),  # 100-400 W
    ("gpu-node-t4", {"eco": 60, "balanced": 60}),  # 60-70 W: 42 and 56 W clamp to the minimum
])
def test_gpu_limits_from_each_profiles_constraints_are_accepted_by_nvidia_smi(tmp_path, profile, expected):
    root = standin_root(tmp_path, profile)
    limits, notes = gpu_power_limits(gpus_fact(root))
    assert (limits, notes) == (expected, [])
    for watts in limits.values():
        done = smi(root, "nvidia-smi", "-pl", str(watts))
        assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_limits_come_from_the_default_not_the_limit_the_daemon_set(tmp_path):
    root = standin_root(tmp_path, "gpu-node-h200")
    assert smi(root, "nvidia-smi", "-pl", "420").returncode == 0
    query = gpus_fact(root)
    assert query["gpus"][0]["power_limit_w"] == 420.0
    assert gpu_power_limits(query) == ({"eco": 420, "balanced": 560}, [])


def gpu(index: int, name: str, lo, hi, default) -> dict:
    return {"index": index, "name": name, "power_limit_w": default, "power_default_limit_w": default,
            "power_min_limit_w": lo, "power_max_limit_w": hi}


def test_a_gpu_without_constraints_gets_no_figure_and_a_note():
    limits, notes = gpu_power_limits({"error": None, "gpus": [gpu(0, "NVIDIA H200", 200.0, 700.0, 700.0),
                                                              gpu(1, "Tesla K80", None, None, None)]})
    assert limits == {"eco": 420, "balanced": 560}
    assert notes == ["GPU 1 (Tesla K80): no readable power-limit constraints: no limit derived from it"]
    limits, notes = gpu_power_limits({"error": None, "gpus": [gpu(0, "Tesla K80", None, 149.0, None)]})
    assert limits == {} and notes[-1] == "no GPU reports power-limit constraints: power limits left unset"


@pytest.mark.parametrize("bad", [(float("nan"), 700.0), (200.0, float("inf")), (700.0, 200.0), (0.0, 70.0),
                                 (-5.0, 70.0), (60.4, 60.6)])
def test_constraints_that_make_no_sense_are_unreadable(bad):
    limits, notes = gpu_power_limits({"error": None, "gpus": [gpu(0, "X", *bad, 70.0)]})
    assert limits == {} and "no readable power-limit constraints" in notes[0]


def test_several_gpus_share_one_limit_inside_every_range():
    a100, h200 = gpu(0, "A100", 100.0, 400.0, 400.0), gpu(1, "H200", 200.0, 700.0, 700.0)
    assert gpu_power_limits({"error": None, "gpus": [a100, h200]}) == ({"eco": 240, "balanced": 320}, [])
    t4 = gpu(0, "T4", 60.0, 70.0, 70.0)
    limits, notes = gpu_power_limits({"error": None, "gpus": [t4, a100]})
    assert limits == {} and "do not overlap" in notes[0]
    # the default, not the maximum, is the reference (RTX 4090: 150-600 W, default 450 W)
    assert gpu_power_limits({"error": None, "gpus": [gpu(0, "RTX 4090", 150.0, 600.0, 450.0)]})[0] == \
        {"eco": 270, "balanced": 360}
    # a default above the maximum (a driver's garbled report) still gives limits inside the constraints
    assert gpu_power_limits({"error": None, "gpus": [gpu(0, "X", 200.0, 700.0, 1000.0)]})[0] == \
        {"eco": 600, "balanced": 700}
    # no default reported: the maximum is the reference (0.6 x 300.7, 0.8 x 300.7); whole watts stay inside
    assert gpu_power_limits({"error": None, "gpus": [gpu(0, "X", 99.5, 300.7, None)]})[0] == \
        {"eco": 180, "balanced": 241}
    assert gpu_power_limits({"error": None, "gpus": [gpu(0, "X", 250.5, 300.7, None)]})[0] == \
        {"eco": 251, "balanced": 251}


def test_no_gpu_readable_leaves_the_limits_unset_and_says_so_in_the_policy():
    plan = plan_energy("gpu", gpus={"gpus": [], "error": "no nvidia-smi", "library_version": None})
    assert plan.gpu_power_w == {}
    assert plan.notes == ("no GPU readable through nvidia-smi (no nvidia-smi): power limits left unset",)
    text = render_policy(ops_host_kind="gpu", **plan.template_vars())
    assert "\n# energy policy: no GPU readable through nvidia-smi (no nvidia-smi): power limits left unset\n" in text
    p = parse_policy(text, "policy.yaml")
    assert p.profiles["eco"]["nvml"]["power_limit_w"] is None


def test_rendered_gpu_policy_is_applied_by_the_daemon_on_the_recorded_h200(tmp_path):
    vars_ = plan_energy("gpu", gpus=gpus_fact(standin_root(tmp_path, "gpu-node-h200"))).template_vars()
    p = parse_policy(render_policy(ops_host_kind="gpu", **vars_), "policy.yaml")
    assert [p.profiles[n]["nvml"].get("power_limit_w") for n in ("eco", "balanced")] == [420, 560]
    fake = FakeNvml(H200_PROBE)
    backend = NvmlBackend.detect(HostContext(nvml_loader=lambda: fake))
    try:
        changes, skipped = backend.plan(p.profiles["eco"]["nvml"])
        assert [(c.knob.name, c.value) for c in changes if "power_limit" in c.knob.name] == \
            [("nvml.gpu0.power_limit_mw", "420000")]
        assert skipped == []
        Applier(StateStore(None)).apply(changes)
        assert fake.nvmlDeviceGetPowerManagementLimit(fake.nvmlDeviceGetHandleByIndex(0)) == 420000
    finally:
        backend.close()


def test_notes_render_as_comments_and_cannot_inject_yaml():
    text = render_policy(ops_host_kind="gpu", ops_energy_notes=["first", "x\nprofiles: {}\n# y", "z\r\ntick_s: 9"])
    p = parse_policy(text, "policy.yaml")
    assert set(p.profiles) == {"eco", "balanced", "performance"} and p.top["tick_s"] == 1.0
    assert "# energy policy: first\n" in text and "# energy policy: x profiles: {} # y\n" in text


def test_cpu_hosts_get_no_energy_variables_beyond_the_template_defaults():
    assert plan_energy("cpu").template_vars() == {"ops_jetson_modes": {}, "ops_gpu_power_w": {},
                                                  "ops_energy_notes": []}
