"""Load signals: llama-server /metrics and /slots parsing, loopback-only polling, model presence."""

from __future__ import annotations

import pytest

from tierfleet_ops.signals import Signals, combine, fetch, parse_prometheus, parse_slots, queue_percent

from .llama_standin import LlamaStandin

METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1893
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
http_requests{path="/v1/chat completions",code="200"} 7
http_requests{path="/health",code="200"} 5
"""


def test_parse_prometheus_text():
    m = parse_prometheus(METRICS)
    assert m["llamacpp:requests_processing"] == 3.0 and m["llamacpp:requests_deferred"] == 2.0
    assert m["http_requests"] == 12.0  # labelled samples of one name are summed
    assert queue_percent(m, None, 4) == 125.0


def test_parse_slots_and_bad_input():
    assert parse_slots('[{"id":0,"is_processing":true},{"id":1,"is_processing":true},{"id":2}]') == (2, 3)
    with pytest.raises(ValueError):
        parse_slots('{"error": "slots endpoint disabled"}')
    assert queue_percent(None, None, 4) is None


def test_only_loopback_endpoints_are_polled():
    for url in ("http://10.1.2.3:8080/metrics", "http://192.168.0.2/slots", "http://example.org/metrics"):
        with pytest.raises(ValueError, match="only loopback endpoints"):
            fetch(url)
    assert fetch("http://127.0.0.1:1/metrics") is None  # nothing listening: unreachable, not an error


def test_signals_from_a_live_standin_and_model_presence():
    with LlamaStandin(slots=4) as llama:
        sig = Signals({"metrics_url": llama.url("/metrics"), "slots_url": llama.url("/slots"), "queue_full": 4})
        llama.processing = 1
        s = sig.sample(None, 37.5, None)
        assert s["queue"] == 25.0 and s["model_loaded"] is True and s["gpu_util"] == 37.5
        assert 0.0 <= s["cpu_util"] <= 100.0
        assert combine(s, ["queue", "gpu_util"]) == 37.5
        url = llama.url("/metrics")
    sig = Signals({"metrics_url": url, "queue_full": 4})
    s = sig.sample([0], None, None)
    assert s["model_loaded"] is False and s["queue"] is None
    # without endpoints, presence comes from whether the runtime's processes were found
    assert Signals({}).sample(None, None, True)["model_loaded"] is True
    assert Signals({}).sample(None, None, None)["model_loaded"] is None


HOSTILE = [
    b"llamacpp:requests_processing 3\nllamacpp:requests_deferred{a=\"",      # cut mid-label
    b"llamacpp:requests_processing three\n",
    b"\xff\xfe\x00garbage{{{\n",
    b"llamacpp:requests_processing " + b"9" * 5000 + b"\n",
    b"# TYPE llamacpp:requests_processing histogram\nllamacpp:requests_processing 1\n",
    b"llamacpp:requests_processing NaN\nllamacpp:requests_deferred +Inf\n",
    b"[" * 100000,
    b"",
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_or_truncated_answers_are_no_reading_never_a_crash(body):
    with LlamaStandin(slots=4) as llama:
        llama.bodies = {"/metrics": body, "/slots": body}
        sig = Signals({"metrics_url": llama.url("/metrics"), "slots_url": llama.url("/slots"), "queue_full": 4})
        s = sig.sample(None, None, None)
    assert s["model_loaded"] is True  # it answered
    assert s["queue"] is None or (isinstance(s["queue"], float) and s["queue"] == s["queue"])  # no NaN


def test_parse_prometheus_is_all_or_nothing():
    assert parse_prometheus(METRICS[:-20]) is None or "http_requests" in parse_prometheus(METRICS[:-20])
    assert parse_prometheus('llamacpp:requests_processing{a="1"} 2\nx{a="') is None
    assert parse_prometheus("llamacpp:requests_processing NaN\nllamacpp:requests_deferred 1\n") == {
        "llamacpp:requests_deferred": 1.0}
