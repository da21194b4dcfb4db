"""Prometheus metrics on 127.0.0.1 through prometheus_client, computed at scrape time.

Nothing is updated per tick: a collector reads the daemon's last tick on each scrape
(``curl -s 127.0.0.1:9464/metrics``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import start_http_server

if TYPE_CHECKING:
    from .daemon import Daemon

P = "tierfleet_ops_"

#: readings key -> (metric suffix, label) for power (W) and energy (J)
POWER = {"gpu_power_w": "gpu", "board_power_w": "board", "cpu_power_w": "cpu_package"}
ENERGY = {"gpu_energy_j": "gpu", "cpu_energy_j": "cpu_package", "board_energy_j": "board"}


class DaemonCollector:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        st = d.status()
        prof = GaugeMetricFamily(P + "profile", "1 for the active profile", labels=["profile"])
        for name in sorted(d.policy.profiles):
            prof.add_metric([name], 1.0 if name == st["profile"] else 0.0)
        yield prof
        gov = GaugeMetricFamily(P + "governor", "1 for each cpufreq policy's live governor",
                                labels=["policy", "governor"])
        for pol, g in st["governors"].items():
            if g:
                gov.add_metric([pol, g], 1.0)
        yield gov
        pw = GaugeMetricFamily(P + "power_watts", "power draw, W (nvidia-smi power.draw, INA3221 rails)",
                               labels=["source"])
        for key, label in POWER.items():
            if key in st["readings"]:
                pw.add_metric([label], st["readings"][key])
        yield pw
        en = CounterMetricFamily(P + "energy_joules", "energy since the counter started, J (NVML total energy, "
                                 "RAPL energy_uj, integrated rails)", labels=["source"])
        for key, label in ENERGY.items():
            if key in st["readings"]:
                en.add_metric([label], st["readings"][key])
        yield en
        av = GaugeMetricFamily(P + "knob_available", "1 when the host has the knob", labels=["knob"])
        for k, ok in st["knobs"].items():
            av.add_metric([k], 1.0 if ok else 0.0)
        yield av
        yield GaugeMetricFamily(P + "pinned_threads", "runtime threads seen at the last pinning pass",
                                value=st["pinning"]["threads"])
        yield CounterMetricFamily(P + "thread_pins", "thread affinity changes made",
                                  value=st["pinning"]["pinned_total"])
        yield CounterMetricFamily(P + "profile_switches", "load-driven and manual profile switches",
                                  value=st["switches"])
        yield CounterMetricFamily(P + "reapplied_knobs", "knobs re-applied after drifting (driver reloads)",
                                  value=st["reapplied_total"])
        if st["load_pct"] is not None:
            yield GaugeMetricFamily(P + "load_percent", "combined load signal, %", value=st["load_pct"])
        info = InfoMetricFamily(P + "policy", "the applied policy")
        info.add_metric([], {"hash": st["policy"]["hash"], "reload_error": "1" if st["policy"]["error"] else "0"})
        yield info


def make_registry(daemon: Daemon) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(daemon))
    return reg


def start_metrics(daemon: Daemon, addr: str, port: int) -> Any:
    """Serve ``/metrics`` on ``addr:port`` (loopback only); returns the server (``.shutdown()``)."""
    if not (addr.startswith("127.") or addr == "::1"):
        raise ValueError(f"metrics address {addr} is not loopback")
    server, _thread = start_http_server(port, addr=addr, registry=make_registry(daemon))
    return server
