"""The store's HTTP server answers byte ranges the way curl -C - needs."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tierfleet.artifacts.http_store import StoreServer
from tierfleet.exceptions import ConfigError


@pytest.fixture
def srv(tmp_path):
    (tmp_path / "f.bin").write_bytes(bytes(range(100)))
    with StoreServer(tmp_path) as s:
        yield s


def get(url, rng=None):
    req = urllib.request.Request(url, headers={"Range": rng} if rng else {})
    with urllib.request.urlopen(req) as resp:
        return resp.status, resp.headers, resp.read()


def test_whole_file(srv):
    status, _, body = get(srv.url + "f.bin")
    assert (status, body) == (200, bytes(range(100)))


@pytest.mark.parametrize(("rng", "body", "content_range"), [
    ("bytes=90-", bytes(range(90, 100)), "bytes 90-99/100"),
    ("bytes=10-19", bytes(range(10, 20)), "bytes 10-19/100"),
    ("bytes=95-500", bytes(range(95, 100)), "bytes 95-99/100"),
])
def test_ranges(srv, rng, body, content_range):
    status, headers, got = get(srv.url + "f.bin", rng)
    assert (status, got, headers["Content-Range"]) == (206, body, content_range)


def test_unsatisfiable_range(srv):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(srv.url + "f.bin", "bytes=100-")
    assert info.value.code == 416
    assert info.value.headers["Content-Range"] == "bytes */100"


def test_missing_file_is_404(srv):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(srv.url + "nope.bin")
    assert info.value.code == 404


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example"])
def test_only_loopback_addresses(tmp_path, host):
    with pytest.raises(ConfigError, match="expected a loopback address"):
        StoreServer(tmp_path, host=host)
