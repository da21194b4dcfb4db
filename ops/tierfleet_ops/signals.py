"""Load signals: CPU and GPU utilisation, the runtime's queue, whether a model is loaded.

The runtime is llama-server: its ``/metrics`` (Prometheus text; ``llamacpp:requests_processing``
and ``llamacpp:requests_deferred``) and ``/slots`` (JSON list of slots with ``is_processing``,
or ``state`` 0/1 in older builds). Endpoints must be loopback URLs (checked by the policy and
again here). Readings are taken once per tick and cached for that tick; the endpoints are
polled over kept-alive connections (:class:`Endpoint`).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import math
from typing import Any
from urllib.parse import urlsplit

import psutil
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)


def parse_prometheus(text: str) -> dict[str, float] | None:
    """Sample values by sample name (labels dropped, values of one name summed), parsed by
    prometheus_client's own text parser; ``None`` ("no reading") for text it does not accept,
    and samples that are not finite numbers are left out.

    >>> parse_prometheus('# HELP x\\nllamacpp:requests_processing 2\\nllamacpp:requests_deferred 1\\n')
    {'llamacpp:requests_processing': 2.0, 'llamacpp:requests_deferred': 1.0}
    >>> parse_prometheus('llamacpp:requests_processing{a="1"} 2\\nllamacpp:requests_processing{a="') is None
    True
    """
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if math.isfinite(sample.value):
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
        return None
    return out


def parse_slots(text: str) -> tuple[int, int]:
    """(busy, total) slots from llama-server ``/slots``.

    >>> parse_slots('[{"id":0,"is_processing":true},{"id":1,"is_processing":false}]')
    (1, 2)
    >>> parse_slots('[{"id":0,"state":1},{"id":1,"state":0}]')
    (1, 2)
    """
    try:
        slots = json.loads(text)
    except RecursionError:
        raise ValueError("slots nested too deeply") from None
    if not isinstance(slots, list):
        raise ValueError("slots is not a list")
    busy = sum(1 for s in slots if isinstance(s, dict) and (s.get("is_processing") is True or s.get("state") == 1))
    return busy, len(slots)


def queue_percent(metrics: dict[str, float] | None, slots: tuple[int, int] | None, queue_full: int) -> float | None:
    """Queue load in percent of ``queue_full`` requests (processing + deferred).

    >>> queue_percent({"llamacpp:requests_processing": 2, "llamacpp:requests_deferred": 2}, None, 4)
    100.0
    >>> queue_percent(None, (1, 4), 4)
    25.0
    """
    if metrics is not None and "llamacpp:requests_processing" in metrics:
        n = metrics["llamacpp:requests_processing"] + metrics.get("llamacpp:requests_deferred", 0.0)
    elif slots is not None:
        n = slots[0]
    else:
        return None
    return 100.0 * n / queue_full


#: the largest answer read from the runtime
MAX_BODY = 1 << 20


class Endpoint:
    """A loopback HTTP endpoint polled every tick over one kept-alive connection.

    Opening a TCP connection and building a urllib opener per request cost more than the rest
    of a tick; ``http.client`` with HTTP/1.1 keep-alive reuses one connection until the server
    closes it (llama-server's keeps it for a few requests) and reconnects on any error.
    Refuses anything but loopback.
    """

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            loop = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loop = host == "localhost"
        if not loop:
            raise ValueError(f"{url}: only loopback endpoints are polled")
        self.url = url
        self.host, self.port = host, parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def get(self) -> str | None:
        """The body of ``GET url`` (at most :data:`MAX_BODY` bytes), or ``None`` when the endpoint
        is unreachable or answers anything but 200."""
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: once more
            fresh = self._conn is None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request("GET", self.path)
                resp = self._conn.getresponse()
                body = resp.read(MAX_BODY)
                if not resp.isclosed():  # longer than MAX_BODY: the connection cannot be reused
                    self.close()
                elif resp.will_close:
                    self.close()
                return body.decode(errors="replace") if resp.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
                if fresh or attempt:
                    return None
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def fetch(url: str, timeout_s: float = 0.5) -> str | None:
    """GET a loopback URL once; ``None`` when unreachable. Refuses anything but loopback."""
    ep = Endpoint(url, timeout_s)
    try:
        return ep.get()
    finally:
        ep.close()


class Signals:
    """One tick's readings; call :meth:`sample` once per tick.

    ``/slots`` is asked only when ``/metrics`` gave no queue reading: the metrics count takes
    precedence (:func:`queue_percent`), so a runtime with both costs one request a tick.
    """

    def __init__(self, runtime: dict[str, Any]) -> None:
        self.runtime = runtime
        self.metrics = Endpoint(runtime["metrics_url"]) if runtime.get("metrics_url") else None
        self.slots = Endpoint(runtime["slots_url"]) if runtime.get("slots_url") else None
        psutil.cpu_percent(percpu=True)  # prime the counters
        self.last: dict[str, Any] = {}

    def close(self) -> None:
        for ep in (self.metrics, self.slots):
            if ep is not None:
                ep.close()

    def sample(self, cpus: list[int] | None, gpu_util: float | None, runtime_found: bool | None) -> dict[str, Any]:
        per = psutil.cpu_percent(percpu=True)
        use = [per[c] for c in (cpus or range(len(per))) if c < len(per)]
        cpu = sum(use) / len(use) if use else None
        metrics = slots = None
        reachable = None
        if self.metrics is not None:
            text = self.metrics.get()
            reachable = text is not None
            metrics = parse_prometheus(text) if text is not None else None  # None: no reading
        if self.slots is not None and (metrics is None or "llamacpp:requests_processing" not in metrics):
            text = self.slots.get()
            reachable = bool(reachable) or text is not None
            try:
                slots = parse_slots(text) if text is not None else None
            except ValueError:
                slots = None
        queue = queue_percent(metrics, slots, self.runtime.get("queue_full") or 4)
        loaded = reachable if reachable is not None else runtime_found
        self.last = {"cpu_util": cpu, "gpu_util": gpu_util, "queue": queue, "model_loaded": loaded}
        return self.last


def combine(sample: dict[str, Any], names: list[str]) -> float | None:
    """Load = the highest of the chosen signals that have a value.

    >>> combine({"cpu_util": 20.0, "gpu_util": None, "queue": 50.0}, ["cpu_util", "gpu_util", "queue"])
    50.0
    """
    vals = [sample[n] for n in names if sample.get(n) is not None]
    return max(vals) if vals else None
