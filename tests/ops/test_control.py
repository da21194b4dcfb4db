"""The control socket's gate: SO_PEERCRED/SO_PEERGROUPS from real processes of other users, and
the restore that goes on past a knob that cannot be written."""

from __future__ import annotations

import errno
import grp
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tierfleet_ops.apply import Applier
from tierfleet_ops.backends.base import HostContext
from tierfleet_ops.control import request
from tierfleet_ops.daemon import Daemon, DaemonConfig
from tierfleet_ops.knobs import Change, Knob
from tierfleet_ops.state import StateStore
from tierfleet_ops.sysfs import Sysfs

POLICY = "version: 1\nprofiles: {eco: {}}\npinning: {enabled: false}\n"

#: a client that runs as another user (python -c, nothing imported from the project)
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b'{"cmd": "status"}\\n')
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps(json.loads(data).get("error", "ok")))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
#: an interpreter other users may run (the test's own may live under /root)
PUBLIC_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.fixture
def daemon(tmp_path):
    # a directory every user may enter, so the socket's own mode and the peer check are what decide
    d = tempfile.mkdtemp(prefix="tierfleet-ops-ctl-")
    os.chmod(d, 0o755)
    pol = tmp_path / "policy.yaml"
    pol.write_text(POLICY)
    os.chmod(tmp_path, 0o755)
    sysroot = tmp_path / "sys"
    sysroot.mkdir()
    cfg = DaemonConfig(policy_path=str(pol), state_path=None, socket_path=f"{d}/ops.sock",
                       socket_group="daemon", metrics_port=None, backends=[],
                       ctx=HostContext(sysfs=Sysfs(sysroot)))
    dm = Daemon(cfg)
    dm.start()
    try:
        yield dm
    finally:
        dm.stop()
        os.rmdir(d)


def as_user(sock, uid, gid, groups=()):
    if PUBLIC_PYTHON is None:
        pytest.skip("no python3 in /usr/bin that another user may run")
    p = subprocess.run([PUBLIC_PYTHON, "-c", CLIENT, sock], user=uid, group=gid, extra_groups=list(groups),
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout.strip(), p.stderr


@needs_root
def test_the_socket_group_may_ask_and_nobody_else(daemon, caplog):
    sock = daemon.cfg.socket_path
    group = grp.getgrnam("daemon").gr_gid
    assert os.stat(sock).st_gid == group
    assert request(sock, {"cmd": "status"})["profile"] == "eco"  # root
    # the file mode keeps strangers out first
    rc, _, err = as_user(sock, 65534, 65534)
    assert rc != 0 and "Permission denied" in err
    # with the file opened to everyone (a wrong chmod), the peer check still refuses them
    os.chmod(sock, 0o666)
    rc, out, _ = as_user(sock, 65534, 65534)
    assert rc == 0 and json.loads(out) == "not allowed: control needs root or the socket's group"
    assert "refused pid" in caplog.text and "uid 65534" in caplog.text
    # a member of the group through a supplementary group, and through its primary group, may
    assert as_user(sock, 65534, 65534, [group])[1] == '"ok"'
    assert as_user(sock, 65534, group)[1] == '"ok"'
    assert daemon.server.refused_total == 1


class Box:
    """A knob whose value lives in a dict; ``fail`` makes writes fail like a process out of fds."""

    def __init__(self, name, value, fail=False):
        self.value, self.fail = value, fail
        self.knob = Knob(name, "test", name, lambda: self.value, self.write)

    def write(self, v):
        if self.fail:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        self.value = v


def test_restore_goes_on_past_a_knob_that_cannot_be_written(tmp_path):
    state = StateStore(tmp_path / "state.json")
    a, b, c = Box("a", "1"), Box("b", "1"), Box("c", "1")
    ap = Applier(state)
    assert [o.status for o in ap.apply([Change(k.knob, "2") for k in (a, b, c)])] == ["changed"] * 3
    b.fail = True
    out = ap.restore({k.knob.name: k.knob for k in (a, b, c)})
    assert {o.name: o.status for o in out} == {"a": "changed", "b": "failed", "c": "changed"}
    assert (a.value, b.value, c.value) == ("1", "2", "1")
    assert "Too many open files" in next(o.note for o in out if o.name == "b")
    assert state.originals == {"b": "1"}  # kept for the next run to restore
    assert json.loads((tmp_path / "state.json").read_text())["originals"] == [["b", "1"]]


def test_metrics_idle_connections_cost_no_threads(daemon):
    from tierfleet_ops.metrics import start_metrics
    import socket
    import threading
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads0 = threading.active_count()
    srv = start_metrics(daemon, "127.0.0.1", port)
    idle = []
    try:
        for _ in range(5):  # each holds the one serving thread for its deadline
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            idle.append(c)
        assert threading.active_count() <= threads0 + 2  # the serving thread and one scrape deadline
        # each idle one is cut after its deadline; a scrape behind them is still served
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
        assert 'tierfleet_ops_profile{profile="eco"} 1.0' in text
        assert threading.active_count() <= threads0 + 2  # the serving thread and one scrape deadline
    finally:
        for c in idle:
            c.close()
        srv.shutdown()
        srv.server_close()


def test_a_metrics_client_that_drips_is_cut_at_the_scrape_deadline(daemon):
    import socket
    import time

    from tierfleet_ops.metrics import SCRAPE_DEADLINE_S, start_metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = start_metrics(daemon, "127.0.0.1", port)
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        start = time.monotonic()
        cut = False
        for ch in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":  # one byte a second, never the end
            try:
                c.sendall(bytes([ch]))
            except OSError:
                cut = True
                break
            c.settimeout(1.0)
            try:
                if c.recv(100) == b"":
                    cut = True
                    break
            except socket.timeout:
                pass
            if time.monotonic() - start > SCRAPE_DEADLINE_S + 10:
                break
        assert cut, "a dripping client held the metrics endpoint past its deadline"
        c.close()
    finally:
        srv.shutdown()
        srv.server_close()
