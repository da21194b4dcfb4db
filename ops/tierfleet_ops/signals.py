"""Load signals: CPU and GPU utilisation, the runtime's queue, whether a model is loaded.

The runtime is llama-server: its ``/metrics`` (Prometheus text; ``llamacpp:requests_processing``
and ``llamacpp:requests_deferred``) and ``/slots`` (JSON list of slots with ``is_processing``,
or ``state`` 0/1 in older builds). Endpoints must be loopback URLs (checked by the policy and
again here). Readings are taken once per tick and cached for that tick.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import urllib.error
import urllib.request
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


def fetch(url: str, timeout_s: float = 0.5) -> str | None:
    """GET a loopback URL; ``None`` when unreachable. Refuses anything but loopback."""
    host = urlsplit(url).hostname or ""
    try:
        loop = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = host == "localhost"
    if not loop:
        raise ValueError(f"{url}: only loopback endpoints are polled")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.read(1 << 20).decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Signals:
    """One tick's readings; call :meth:`sample` once per tick."""

    def __init__(self, runtime: dict[str, Any]) -> None:
        self.runtime = runtime
        psutil.cpu_percent(percpu=True)  # prime the counters
        self.last: dict[str, Any] = {}

    def sample(self, cpus: list[int] | None, gpu_util: float | None, runtime_found: bool | None) -> dict[str, Any]:
        per = psutil.cpu_percent(percpu=True)
        use = [per[c] for c in (cpus or range(len(per))) if c < len(per)]
        cpu = sum(use) / len(use) if use else None
        metrics = slots = None
        reachable = None
        if self.runtime.get("metrics_url"):
            text = fetch(self.runtime["metrics_url"])
            reachable = text is not None
            metrics = parse_prometheus(text) if text is not None else None  # None: no reading
        if self.runtime.get("slots_url"):
            text = fetch(self.runtime["slots_url"])
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
