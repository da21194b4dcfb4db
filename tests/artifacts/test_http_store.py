"""The store's HTTP server answers byte ranges the way curl -C - needs."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import pytest

from tierfleet.artifacts.http_store import BodyFault, RangeRequestHandler, StoreServer
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


def test_suffix_range_and_head(srv):
    status, headers, body = get(srv.url + "f.bin", "bytes=-5")
    assert (status, body, headers["Content-Range"]) == (206, bytes(range(95, 100)), "bytes 95-99/100")
    req = urllib.request.Request(srv.url + "f.bin", method="HEAD")
    with urllib.request.urlopen(req) as resp:
        assert (resp.status, resp.headers["Content-Length"], resp.read()) == (200, "100", b"")


@pytest.mark.parametrize("rng", ["bytes=0-1,5-6", "bytes=" + "9" * 5000 + "-", "bytes=--1", "items=0-1", "bytes=-"])
def test_unsupported_or_hostile_ranges_get_the_whole_file(srv, rng):
    status, _, body = get(srv.url + "f.bin", rng)
    assert (status, body) == (200, bytes(range(100)))


@pytest.mark.parametrize("path", ["", "sub/", "sub", "../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "out", "f%00.bin",
                                  "x" * 5000, "sub/" * 2000 + "f"])
def test_directories_escapes_and_links_out_are_404(tmp_path, path):
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("not served\n")
    (store / "out").symlink_to(tmp_path / "secret")
    with StoreServer(store) as srv:
        with pytest.raises(urllib.error.HTTPError) as info:
            get(srv.url + path)
    assert info.value.code == 404


def test_roots_map_url_prefixes_to_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"from a")
    (tmp_path / "b" / "x+1").write_bytes(b"from b")
    with StoreServer(roots={"/one/": tmp_path / "a", "/two/": tmp_path / "b"}) as srv:
        assert get(srv.url + "one/x")[2] == b"from a"
        assert get(srv.url + "two/x%2B1")[2] == b"from b"  # percent-decoded, as curl sends "+"
        with pytest.raises(urllib.error.HTTPError) as info:
            get(srv.url + "x")
        assert info.value.code == 404


def test_directory_or_roots_not_both(tmp_path):
    with pytest.raises(ConfigError, match="roots"):
        StoreServer(tmp_path, roots={"/": tmp_path})
    with pytest.raises(ConfigError, match="roots"):
        StoreServer()


def faulty(fault):
    class Handler(RangeRequestHandler):
        def body_fault(self):
            return fault

    return Handler


def test_body_faults(tmp_path):
    blob = bytes(range(256)) * 20
    (tmp_path / "f").write_bytes(blob)
    with StoreServer(tmp_path, handler=faulty(BodyFault("corrupt"))) as srv:
        _, headers, body = get(srv.url + "f")
        assert len(body) == len(blob) == int(headers["Content-Length"]) and body != blob
        assert [i for i, (a, b) in enumerate(zip(body, blob)) if a != b] == [0, 1000, 2000, 3000, 4000, 5000]
        assert get(srv.url + "f", "bytes=999-")[2] == body[999:]
    with StoreServer(tmp_path, handler=faulty(BodyFault("truncate", after=300))) as srv:
        with pytest.raises(http.client.IncompleteRead) as info:
            get(srv.url + "f")
        assert info.value.partial == blob[:300]
    with StoreServer(tmp_path, handler=faulty(BodyFault("slow", rate=1_000_000))) as srv:
        assert get(srv.url + "f")[2] == blob


def test_body_fault_modes_are_checked():
    with pytest.raises(ConfigError, match="allowed: corrupt, truncate, slow"):
        BodyFault("melt")
