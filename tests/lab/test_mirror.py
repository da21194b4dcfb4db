"""The mirror's HTTP behaviour: ranges, faults, the artifact manifest (a real server on loopback)."""

from __future__ import annotations

import hashlib
import http.client
import json

import pytest

from tierfleet.exceptions import ConfigError
from tierfleet.lab import mirror


@pytest.fixture
def server(tmp_path):
    lab_dir = tmp_path / "lab"
    apt = tmp_path / "apt"
    (apt / "dists").mkdir(parents=True)
    (apt / "dists" / "x").write_text("apt file\n")
    blob = bytes(range(256)) * 40  # 10240 bytes
    src = tmp_path / "model.bin"
    src.write_bytes(blob)
    with mirror.mirror_server(lab_dir, apt) as srv:
        entry = mirror.publish(lab_dir, src, "models/model.bin")
        yield srv.port, lab_dir, blob, entry


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    try:
        body = resp.read()
    except http.client.IncompleteRead as exc:
        body = exc.partial
    return resp, body


def test_publish_writes_manifest_and_sums(server):
    port, lab_dir, blob, entry = server
    sha = hashlib.sha256(blob).hexdigest()
    assert entry == {"name": "models/model.bin", "sha256": sha, "size": len(blob), "path": "/artifacts/models/model.bin"}
    store = mirror.artifacts_dir(lab_dir)
    assert json.loads((store / "manifest.json").read_text())["models/model.bin"]["sha256"] == sha
    assert (store / "SHA256SUMS").read_text() == f"{sha}  models/model.bin\n"


def test_publish_refuses_escaping_names(tmp_path):
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(ConfigError, match="name"):
        mirror.publish(tmp_path, src, "../etc/passwd")


def test_full_and_range_requests(server):
    port, _lab, blob, _ = server
    resp, body = get(port, "/artifacts/models/model.bin")
    assert resp.status == 200 and body == blob and resp.getheader("Accept-Ranges") == "bytes"
    resp, body = get(port, "/artifacts/models/model.bin", {"Range": "bytes=1000-"})
    assert resp.status == 206 and body == blob[1000:]
    assert resp.getheader("Content-Range") == f"bytes 1000-{len(blob) - 1}/{len(blob)}"
    resp, _ = get(port, "/artifacts/models/model.bin", {"Range": "bytes=99999-"})
    assert resp.status == 416
    resp, body = get(port, "/apt/dists/x")
    assert body == b"apt file\n"
    resp, _ = get(port, "/artifacts/../../etc/passwd")
    assert resp.status == 404


def test_fault_corrupt_keeps_length_changes_bytes(server):
    port, lab_dir, blob, _ = server
    mirror.set_fault(lab_dir, "corrupt")
    _resp, body = get(port, "/artifacts/models/model.bin")
    assert len(body) == len(blob) and body != blob
    assert hashlib.sha256(body).hexdigest() != hashlib.sha256(blob).hexdigest()
    # a resumed download gets the same bad bytes at the same offsets
    _resp, tail = get(port, "/artifacts/models/model.bin", {"Range": "bytes=5000-"})
    assert tail == body[5000:]
    _resp, apt_body = get(port, "/apt/dists/x")
    assert apt_body == b"apt file\n"  # the default fault prefix is /artifacts/
    mirror.clear_fault(lab_dir)
    assert get(port, "/artifacts/models/model.bin")[1] == blob


def test_fault_truncate_closes_mid_file(server):
    port, lab_dir, blob, _ = server
    mirror.set_fault(lab_dir, "truncate", after=3000)
    resp, body = get(port, "/artifacts/models/model.bin")
    assert int(resp.getheader("Content-Length")) == len(blob) and body == blob[:3000]
    # resuming from where it stopped still gets the rest (the fault counts per response)
    mirror.clear_fault(lab_dir)
    _resp, rest = get(port, "/artifacts/models/model.bin", {"Range": "bytes=3000-"})
    assert body + rest == blob


def test_fault_modes_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="allowed: corrupt, truncate, slow"):
        mirror.set_fault(tmp_path, "explode")
