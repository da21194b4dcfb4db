"""The stand-in programs against recorded real outputs and the real command-line behaviour."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import RECORDINGS, STANDINS

QUERY = ("index,name,memory.total,compute_cap,driver_version,persistence_mode,power.limit,"
         "power.default_limit,power.min_limit,power.max_limit,clocks.max.sm,mig.mode.current")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the real tools need root to change settings")


def test_nvidia_smi_query_matches_recorded_h200(standin):
    out = standin("gpu-node-h200", "nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits")
    assert out.returncode == 0
    # the real H200's answer, recorded
    assert out.stdout == "0, NVIDIA H200, 143771, 9.0, 580.159.04, Enabled, 700.00, 700.00, 200.00, 700.00, 1980, Disabled\n"


@pytest.mark.parametrize("profile,expected", [
    ("gpu-node-a100", "0, NVIDIA A100-SXM4-40GB, 40960, 8.0, 550.163.01, Enabled, 400.00, 400.00, 100.00, 400.00, 1410, Disabled"),
    ("gpu-node-t4", "0, Tesla T4, 15360, 7.5, 550.163.01, Enabled, 70.00, 70.00, 60.00, 70.00, 1590, [N/A]"),
])
def test_nvidia_smi_query_spec_values(standin, profile, expected):
    out = standin(profile, "nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits")
    assert out.stdout.strip() == expected


def test_nvidia_smi_header_and_units(standin):
    out = standin("gpu-node-h200", "nvidia-smi", "--query-gpu=name,memory.total,power.limit", "--format=csv")
    assert out.stdout.splitlines() == ["name, memory.total [MiB], power.limit [W]",
                                       "NVIDIA H200, 143771 MiB, 700.00 W"]


def test_nvidia_smi_bad_field(standin):
    out = standin("gpu-node-t4", "nvidia-smi", "--query-gpu=name,bogus", "--format=csv")
    assert out.returncode == 2 and 'Field "bogus" is not a valid field to query.' in out.stdout


@pytest.mark.parametrize("args,recording", [(("-q",), "h200_nvidia-smi-q.txt"),
                                             (("-q", "-x"), "h200_nvidia-smi-q.xml")])
def test_nvidia_smi_q_replays_recording(standin, args, recording):
    out = standin("gpu-node-h200", "nvidia-smi", *args)
    assert out.stdout == (RECORDINGS / recording).read_text()


def test_nvidia_smi_q_for_unrecorded_gpu(standin):
    out = standin("gpu-node-a100", "nvidia-smi", "-q")
    assert "Product Name" in out.stdout and "NVIDIA A100-SXM4-40GB" in out.stdout
    assert "Max Power Limit                                : 400.00 W" in out.stdout


def test_nvidia_smi_list(standin):
    out = standin("gpu-node-h200", "nvidia-smi", "-L")
    assert out.stdout == "GPU 0: NVIDIA H200 (UUID: GPU-1def259d-64df-1d6b-e7a7-59227e1000aa)\n"


@ROOT_ONLY
def test_nvidia_smi_power_limit_persists_and_is_range_checked(standin):
    ok = standin("gpu-node-h200", "nvidia-smi", "-pl", "350")
    assert ok.returncode == 0
    assert ok.stdout == "Power limit for GPU 00000000:00:06.0 was set to 350.00 W from 700.00 W.\nAll done.\n"
    limit = standin("gpu-node-h200", "nvidia-smi", "--query-gpu=power.limit", "--format=csv,noheader")
    assert limit.stdout == "350.00 W\n"
    bad = standin("gpu-node-h200", "nvidia-smi", "-pl", "150")
    assert bad.returncode != 0
    assert "should be between 200.00 W and 700.00 W" in bad.stdout


def test_lspci_lines(standin):
    h200 = standin("gpu-node-h200", "lspci").stdout.splitlines()
    assert "00:06.0 3D controller: NVIDIA Corporation GH100 [H200 SXM 141GB] (rev a1)" in h200
    t4 = standin("gpu-node-t4", "lspci", "-nn").stdout
    assert "3b:00.0 3D controller [0302]: NVIDIA Corporation TU104GL [Tesla T4] [10de:1eb8] (rev a1)" in t4
    server = standin("cpu-server", "lspci").stdout
    assert "NVIDIA" not in server and "Ethernet controller" in server


def test_nvpmodel_query_and_print(standin):
    q = standin("jetson-orin-nano", "nvpmodel", "-q")
    assert q.stdout == "NV Power Mode: 15W\n0\n"
    p = standin("jetson-orin-nano", "nvpmodel", "-p", "--verbose").stdout.splitlines()
    assert "NVPM VERB: POWER_MODEL: ID=0 NAME=15W" in p
    assert "NVPM VERB: POWER_MODEL: ID=1 NAME=7W" in p
    assert p[-1] == "NVPM VERB: PM_CONFIG: DEFAULT=15W(0)"
    nano = standin("jetson-nano", "nvpmodel", "-p", "--verbose").stdout
    assert "ID=0 NAME=MAXN" in nano and "ID=1 NAME=5W" in nano


@ROOT_ONLY
def test_nvpmodel_nano_5w_takes_cpus_offline_and_back(standin):
    assert standin("jetson-nano", "nvpmodel", "-m", "1").returncode == 0
    root = standin.roots["jetson-nano"]
    cpu = root / "sys/devices/system/cpu"
    assert (cpu / "online").read_text() == "0-1\n" and (cpu / "offline").read_text() == "2-3\n"
    assert (cpu / "cpu3/online").read_text() == "0\n"
    assert (cpu / "cpufreq/policy0/scaling_max_freq").read_text() == "918000\n"
    assert (root / "sys/class/devfreq/57000000.gpu/max_freq").read_text() == "640000000\n"
    cpuinfo = root / "usr/lib/tierfleet-lab/dress/proc/cpuinfo"
    assert cpuinfo.read_text().count("processor\t:") == 2  # arm64 lists online CPUs only
    assert standin("jetson-nano", "nvpmodel", "-q").stdout == "NV Power Mode: 5W\n1\n"
    assert standin("jetson-nano", "nvpmodel", "-m", "0").returncode == 0
    assert (cpu / "online").read_text() == "0-3\n"
    assert cpuinfo.read_text().count("processor\t:") == 4
    assert (cpu / "cpufreq/policy0/scaling_max_freq").read_text() == "1479000\n"
    assert (root / "sys/class/devfreq/57000000.gpu/max_freq").read_text() == "921600000\n"


@ROOT_ONLY
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) not installed")
def test_nvpmodel_switches_modes_under_a_read_only_usr(standin):
    """The ops daemon runs nvpmodel with /usr read-only (ProtectSystem=): the mode still switches."""
    assert standin("jetson-nano", "nvpmodel", "-q").returncode == 0
    root = standin.roots["jetson-nano"]
    usr = root / "usr"
    env = dict(os.environ, TIERFLEET_LAB_STANDIN_ROOT=str(root), HOME="/root")
    script = f"mount --bind {usr} {usr} && mount -o remount,bind,ro {usr} && exec \"$@\""
    run = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", sys.executable,
                          str(STANDINS / "nvpmodel"), "-m", "1"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (root / "sys/devices/system/cpu/online").read_text() == "0-1\n"
    assert standin("jetson-nano", "nvpmodel", "-q").stdout == "NV Power Mode: 5W\n1\n"


@ROOT_ONLY
def test_nvpmodel_orin_7w_and_bad_mode(standin):
    assert standin("jetson-orin-nano", "nvpmodel", "-m", "1").returncode == 0
    cpu = standin.roots["jetson-orin-nano"] / "sys/devices/system/cpu"
    assert (cpu / "online").read_text() == "0-3\n"
    bad = standin("jetson-orin-nano", "nvpmodel", "-m", "7")
    assert bad.returncode != 0 and bad.stdout.startswith("NVPM ERROR:")


@ROOT_ONLY
def test_jetson_clocks_store_max_restore(standin):
    standin("jetson-orin-nano", "jetson_clocks", "--show")
    root = standin.roots["jetson-orin-nano"]
    policy = root / "sys/devices/system/cpu/cpufreq/policy0"
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    before = (policy / "scaling_min_freq").read_text(), (gpu / "min_freq").read_text()
    assert standin("jetson-orin-nano", "jetson_clocks").returncode == 0
    assert (policy / "scaling_min_freq").read_text() == (policy / "scaling_max_freq").read_text()
    assert (gpu / "min_freq").read_text() == (gpu / "max_freq").read_text()
    assert (root / "root/l4t_dfs.conf").exists()  # stored before the first change
    assert standin("jetson-orin-nano", "jetson_clocks", "--restore").returncode == 0
    assert ((policy / "scaling_min_freq").read_text(), (gpu / "min_freq").read_text()) == before
    show = standin("jetson-orin-nano", "jetson_clocks", "--show").stdout
    assert show.startswith("SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit\n")
    assert "Online CPUs: 0-5" in show and "NV Power Mode: 15W" in show


@ROOT_ONLY
def test_nvpmodel_super_conf_is_remembered(standin):
    conf = "/etc/nvpmodel/nvpmodel_p3767_0003_super.conf"
    p = standin("jetson-orin-nano", "nvpmodel", "-f", conf, "-p", "--verbose").stdout
    assert "NVPM VERB: POWER_MODEL: ID=2 NAME=MAXN_SUPER" in p and "ID=1 NAME=25W" in p
    assert standin("jetson-orin-nano", "nvpmodel", "-f", conf, "-m", "2").returncode == 0
    assert standin("jetson-orin-nano", "nvpmodel", "-q").stdout == "NV Power Mode: MAXN_SUPER\n2\n"
    root = standin.roots["jetson-orin-nano"]
    assert (root / "sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq").read_text() == "1728000\n"
    assert (root / "sys/class/devfreq/17000000.ga10b/max_freq").read_text() == "1020000000\n"
