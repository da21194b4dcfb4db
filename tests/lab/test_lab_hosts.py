"""Lab hosts over real SSH: what the facts will read on each profile (converge -> verify)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from tierfleet.lab.system import wait_until

pytestmark = pytest.mark.lab


def test_every_host_boots_systemd_and_answers_ssh(lab):
    states = lab.wait_running()
    assert set(states) == {"jetson-orin-nano", "jetson-nano", "cpu-server", "cpu-small", "gpu-node-t4",
                           "gpu-node-a100", "gpu-node-h200"}
    assert set(states.values()) <= {"running"}, states
    assert all(s.ssh for s in lab.status())


@pytest.mark.parametrize("host,model,release,version", [
    ("jetson-orin-nano", "NVIDIA Jetson Orin Nano Developer Kit", "# R36 (release), REVISION: 4.3",
     "36.4.3-20250107174145"),
    ("jetson-nano", "NVIDIA Jetson Nano Developer Kit", "# R32 (release), REVISION: 7.6", "32.7.6-20241104234540"),
])
def test_jetson_identity(testinfra_host, host, model, release, version):
    h = testinfra_host(host)
    assert h.file("/sys/firmware/devicetree/base/model").content_string.rstrip("\0") == model
    assert h.file("/etc/nv_tegra_release").content_string.startswith(release)
    assert h.run("dpkg-query -W -f='${Version}' nvidia-l4t-core").stdout == version
    assert h.exists("nvpmodel") and h.exists("jetson_clocks") and not h.exists("nvidia-smi")
    assert h.run("uname -m").stdout.strip() == "x86_64"  # documented: not faked


@pytest.mark.parametrize("host,cpus,memtotal_kib,disk_gib", [
    ("jetson-nano", "0-3", 4059412, 8),
    ("jetson-orin-nano", "0-5", 7759460, 16),
    ("cpu-server", "0-31", 65799548, 24),
    ("cpu-small", "0-1", 4025220, 1),
    ("gpu-node-t4", "0-15", 32863788, 24),
    ("gpu-node-a100", "0-63", 263842788, 48),
    ("gpu-node-h200", "0-15", 132008860, 48),
])
def test_sizes_as_the_facts_see_them(testinfra_host, host, cpus, memtotal_kib, disk_gib):
    h = testinfra_host(host)
    assert h.file("/sys/devices/system/cpu/online").content_string == f"{cpus}\n"
    assert h.file("/proc/meminfo").content_string.splitlines()[0].split()[1] == str(memtotal_kib)
    df = h.run("df -Pk /var/lib/tierfleet/models 2>/dev/null || df -Pk /var/lib/tierfleet").stdout.splitlines()[-1]
    size_kib = int(df.split()[1])
    assert 0.9 * disk_gib * 2 ** 20 < size_kib <= disk_gib * 2 ** 20
    assert df.split()[-1] == "/var/lib/tierfleet"


def test_gpu_node_facts(testinfra_host):
    h = testinfra_host("gpu-node-h200")
    out = h.check_output("nvidia-smi --query-gpu=index,name,memory.total,compute_cap,driver_version,persistence_mode,"
                         "power.limit,power.default_limit,power.min_limit,power.max_limit,clocks.max.sm,"
                         "mig.mode.current --format=csv,noheader,nounits")
    assert out == "0, NVIDIA H200, 143771, 9.0, 580.159.04, Enabled, 700.00, 700.00, 200.00, 700.00, 1980, Disabled"
    assert "00:06.0 3D controller: NVIDIA Corporation GH100 [H200 SXM 141GB] (rev a1)" in h.check_output("lspci")
    assert "580.159.04" in h.file("/proc/driver/nvidia/version").content_string
    t4 = testinfra_host("gpu-node-t4")
    assert "TU104GL [Tesla T4]" in t4.check_output("lspci")
    assert t4.file("/sys/devices/system/cpu/cpu3/topology/core_cpus_list").content_string == "3,11\n"


def test_cpu_server_cpufreq_and_rapl(testinfra_host):
    h = testinfra_host("cpu-server")
    pol = "/sys/devices/system/cpu/cpufreq/policy0"
    assert h.file(f"{pol}/scaling_driver").content_string == "intel_pstate\n"
    assert h.file("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").content_string == "powersave\n"
    assert h.file("/sys/class/powercap/intel-rapl:0/energy_uj").exists
    # governors and EPP are writable, as on the real machine
    h.run_test(f"echo performance > {pol}/scaling_governor")
    assert h.file(f"{pol}/scaling_governor").content_string == "performance\n"
    assert not testinfra_host("cpu-small").file("/sys/class/powercap/intel-rapl:1").exists


def test_nvpmodel_in_a_host_takes_cpus_offline(testinfra_host):
    h = testinfra_host("jetson-nano")
    # an earlier test may have left an ops daemon here that switches modes when idle: stop it (it puts back the
    # mode it found), then start from mode 0
    h.run("systemctl stop tierfleet-ops.service")
    h.run_test("nvpmodel -m 0")
    assert h.check_output("nvpmodel -q") == "NV Power Mode: MAXN\n0"
    h.run_test("nvpmodel -m 1")
    assert h.file("/sys/devices/system/cpu/online").content_string == "0-1\n"
    assert h.check_output("getconf _NPROCESSORS_ONLN") == "2"
    assert h.check_output("grep -c ^processor /proc/cpuinfo") == "2"
    h.run_test("nvpmodel -m 0")
    assert h.file("/sys/devices/system/cpu/online").content_string == "0-3\n"
    assert h.check_output("grep -c ^processor /proc/cpuinfo") == "4"


def test_jetson_power_rails(testinfra_host):
    orin = testinfra_host("jetson-orin-nano")
    hw = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    assert orin.file(f"{hw}/in1_label").content_string == "VDD_IN\n"
    assert int(orin.file(f"{hw}/curr1_input").content_string) > 0
    nano = testinfra_host("jetson-nano")
    iio = "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    assert nano.file(f"{iio}/rail_name_0").content_string == "POM_5V_IN\n"
    assert orin.file("/sys/class/devfreq/17000000.ga10b/device/of_node/name").content_string == "ga10b\0"


def test_hosts_have_their_own_network_namespace(lab, ssh):
    # a service on 0.0.0.0 inside a host is not on the machine's interfaces
    r = ssh("cpu-small", "systemd-run --unit=lab-ns-probe python3 -m http.server 8097 --bind 0.0.0.0 && sleep 1 && "
            "ss -ltn | grep -c :8097")
    assert r.stdout.strip() == "1", r.stderr
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", 8097)) != 0
    ssh("cpu-small", "systemctl stop lab-ns-probe")


def test_reboot_gives_a_fresh_uptime(lab, ssh):
    before = float(ssh("gpu-node-t4", "cut -d' ' -f1 /proc/uptime").stdout)
    ssh("gpu-node-t4", "systemctl reboot", extra=("-o", "ControlPath=none"))
    host = lab.host("gpu-node-t4")
    time.sleep(1)  # let the reboot begin: the old system still answers for a moment

    def uptime() -> float | None:
        r = ssh("gpu-node-t4", "cut -d' ' -f1 /proc/uptime", extra=("-o", "ControlPath=none", "-o", "ConnectTimeout=2"))
        return float(r.stdout) if r.returncode == 0 else None

    after = wait_until(uptime, timeout=60, interval=0.3)
    assert after is not None and host.running()
    assert after < before


def test_plain_up_again_keeps_hosts_and_addresses(lab, ssh):
    """`lab up` with no hosts given brings back the same fleet: nothing moves, nothing restarts."""
    before = {n: h.address for n, h in lab.store.load().hosts.items()}
    uptime = float(ssh("cpu-server", "cut -d' ' -f1 /proc/uptime").stdout)
    lab.up()
    assert {n: h.address for n, h in lab.store.load().hosts.items()} == before
    assert float(ssh("cpu-server", "cut -d' ' -f1 /proc/uptime").stdout) >= uptime


def test_exec_runs_without_ssh_and_with_a_clean_environment(lab):
    r = lab.exec("cpu-small", ["sh", "-c", "hostname; echo ${PIP_INDEX_URL:-unset}"], capture=True)
    assert r.stdout.decode().split() == ["cpu-small", "unset"]


def test_cli_status_json_and_exec(lab, capfd):
    import json

    from tierfleet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["lab", "status", "--json"])
    assert exc.value.code == 0
    rows = {r["name"]: r for r in json.loads(capfd.readouterr().out)}
    assert rows["gpu-node-a100"]["tier"] == "enterprise" and rows["gpu-node-a100"]["ssh"] is True
    with pytest.raises(SystemExit) as exc:
        main(["lab", "exec", "jetson-orin-nano", "--", "sh", "-c", "nvpmodel -q; exit 7"])
    assert exc.value.code == 7
    # the mode is whatever the session's earlier tests left (an ops daemon deployed there switches it when idle)
    assert re.fullmatch(r"NV Power Mode: [0-9A-Z_]+\n[0-9]\n", capfd.readouterr().out)
    with pytest.raises(SystemExit) as exc:
        main(["lab", "exec", "no-such-host", "true"])
    assert exc.value.code == 2
