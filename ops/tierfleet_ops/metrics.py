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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

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
        yield from shard_metrics(st["shards"], st.get("shard_budget"))
        info = InfoMetricFamily(P + "policy", "the applied policy")
        info.add_metric([], {"hash": st["policy"]["hash"], "reload_error": "1" if st["policy"]["error"] else "0"})
        yield info


#: shard counters: status key -> (metric suffix, help)
SHARD_COUNTERS = {
    "loads": ("shard_loads", "shard loads that completed (llama-server router POST /models/load)"),
    "unloads": ("shard_unloads", "shard unloads: TTL, eviction or after each request (POST /models/unload)"),
    "evictions": ("shard_evictions", "unloads to make room for another shard (least recently used, idle)"),
    "refusals": ("shard_refusals", "requests the gate answered itself: never fits, failed shard, no room in time"),
    "failures": ("shard_load_failures", "loads that failed (a damaged file, the runtime's child exiting)"),
}


def shard_metrics(shards: list[dict[str, Any]], budget: dict[str, Any] | None) -> Iterator[Any]:
    """Per-shard families: state, memory (estimate and resident), last use, counters and the wake-up
    latency histogram (``curl -s 127.0.0.1:9464/metrics | grep shard``)."""
    if not shards:
        return
    state = GaugeMetricFamily(P + "shard_state", "1 for each shard's state (loaded, sleeping, unloaded, ...)",
                              labels=["shard", "state"])
    loaded = GaugeMetricFamily(P + "shard_loaded", "1 while the shard holds memory (loading, loaded, unloading)",
                               labels=["shard"])
    mem = GaugeMetricFamily(P + "shard_memory_bytes", "the shard's memory estimate (weights + KV cache), bytes",
                            labels=["shard"])
    rss = GaugeMetricFamily(P + "shard_resident_bytes", "resident memory of the shard's runtime process, bytes "
                            "(ps -o rss of the router child serving it)", labels=["shard"])
    last = GaugeMetricFamily(P + "shard_last_used_timestamp_seconds", "when the last request for the shard ended, "
                             "seconds since the epoch", labels=["shard"])
    flight = GaugeMetricFamily(P + "shard_requests_in_flight", "requests being served by the shard",
                               labels=["shard"])
    slots = GaugeMetricFamily(P + "shard_runtime_busy_slots", "slots the shard's runtime showed processing at the "
                              "gate's last look (GET /slots: requests sent to the runtime, not through the gate)",
                              labels=["shard"])
    counters = {k: CounterMetricFamily(P + m, h, labels=["shard"]) for k, (m, h) in SHARD_COUNTERS.items()}
    wake = HistogramMetricFamily(P + "shard_wake_seconds", "from a request for an unloaded shard to the shard "
                                 "loaded (eviction and load included), seconds", labels=["shard"])
    for s in shards:
        n = s["name"]
        state.add_metric([n, s["state"]], 1.0)
        loaded.add_metric([n], 1.0 if s["state"] in ("loading", "loaded", "unloading") else 0.0)
        if s.get("memory_bytes") is not None:
            mem.add_metric([n], float(s["memory_bytes"]))
        if s.get("rss_bytes") is not None:
            rss.add_metric([n], float(s["rss_bytes"]))
        if s.get("last_used") is not None:
            last.add_metric([n], float(s["last_used"]))
        flight.add_metric([n], float(s.get("in_flight") or 0))
        slots.add_metric([n], float(s.get("processing") or 0))
        for k, fam in counters.items():
            fam.add_metric([n], float(s.get(k) or 0))
        w = s.get("wake_s") or {}
        buckets = [(str(float(b)) if b != "+Inf" else "+Inf", c) for b, c in w.get("buckets", [])]
        if buckets:
            wake.add_metric([n], buckets, w.get("sum", 0.0))
    yield from (state, loaded, mem, rss, last, flight, slots, *counters.values(), wake)
    if budget and budget.get("budget_bytes") is not None:
        yield GaugeMetricFamily(P + "shard_memory_budget_bytes", "memory the loaded shards may hold, bytes",
                                value=float(budget["budget_bytes"]))
        yield GaugeMetricFamily(P + "shard_memory_held_bytes", "memory the loaded shards hold by their "
                                "estimates, bytes", value=float(budget["held_bytes"]))


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
