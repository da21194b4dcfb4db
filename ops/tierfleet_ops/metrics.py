"""Prometheus metrics on 127.0.0.1 through prometheus_client, computed at scrape time.

Nothing is updated per tick: a collector reads the daemon's last tick on each scrape
(``curl -s 127.0.0.1:9464/metrics``).

prometheus_client's own ``start_http_server`` starts a thread per connection, so any local user
could hold a thousand idle connections and a thousand threads. Here its WSGI app is served by
one thread, one connection at a time, with a :data:`CLIENT_TIMEOUT_S` deadline on every read
and write and :data:`SCRAPE_DEADLINE_S` for the whole scrape: a flood only queues in the
kernel's backlog.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from .records import ENERGY, POWER  # readings key -> source label, shared with the energy records

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

#: seconds a scraper may take for each read or write before it is cut
CLIENT_TIMEOUT_S = 2.0
#: seconds a whole scrape may take
SCRAPE_DEADLINE_S = 5.0

P = "tierfleet_ops_"



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


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # socket timeout on every read and write of one scrape

    def setup(self) -> None:
        super().setup()
        # and a deadline for the whole scrape: a client that drips a byte now and then is cut too
        self._deadline = threading.Timer(SCRAPE_DEADLINE_S, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


class _Server(WSGIServer):
    request_queue_size = 16

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: a scrape from %s failed or timed out", client_address)


def start_metrics(daemon: Daemon, addr: str, port: int) -> Any:
    """Serve ``/metrics`` on ``addr:port`` (loopback only); returns the server (``.shutdown()``)."""
    if not (addr.startswith("127.") or addr == "::1"):
        raise ValueError(f"metrics address {addr} is not loopback")

    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    server = make_server(addr, port, make_wsgi_app(make_registry(daemon)), Server, handler_class=_Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
