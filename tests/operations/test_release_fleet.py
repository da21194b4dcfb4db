"""Across a fleet, one host failing its artifact step does not stop the others (pyinfra's @fake connector).

The fake connector answers the Releases fact from recorded output and makes one host's checksum
verification fail; pyinfra's real executor then runs the rest: the failed host never reaches the
switch (its ``current`` is never touched), the others switch.
"""

from __future__ import annotations

import re

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops

from tierfleet.artifacts.manifest import manifest_from_dict
from tierfleet.facts.release import Releases
from tierfleet.operations import release

ROOT = "/srv/tierfleet/model"
M2 = manifest_from_dict({
    "schema": 1, "kind": "model", "name": "tiny", "version": "2",
    "files": [{"path": "tiny.gguf", "size": 168320, "sha256": "b" * 64}],
})
RECORDED = [
    "current\treleases/tiny-1",
    'release\ttiny-1\t1764300000\t{"entrypoint":"tiny.gguf","files":[{"path":"tiny.gguf","sha256":"'
    + "a" * 64 + '","size":168320}],"kind":"model","name":"tiny","schema":1,"variant":null,"version":"1"}',
    "file\ttiny-1\tregular file\treleases/tiny-1/tiny.gguf\t168320",
]
FACT = re.compile("^" + re.escape(Releases().command(root=ROOT)[:40]))


def host_data(corrupt: bool) -> dict:
    responses: dict = {FACT: RECORDED}
    if corrupt:
        responses["sha256sum -c"] = {"success": False, "stderr": "tierfleet: release tiny-2: sha256 mismatch"}
    return {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": responses}


def test_failed_host_keeps_serving_and_others_finish():
    names = ["@fake/edge-1", "@fake/edge-2", "@fake/edge-3"]
    inventory = Inventory(([(n, host_data(corrupt=n == "@fake/edge-2")) for n in names], {}))
    state = State(inventory, Config())
    connect_all(state)
    try:
        add_op(state, release.artifact, root=ROOT, release="tiny-2", manifest=M2, source="http://127.0.0.1:8000/tiny/2/")
        add_op(state, release.switch, root=ROOT, release="tiny-2")
        run_ops(state)
        hosts = {h.name: h for h in inventory}
        assert {h.name for h in state.failed_hosts} == {"@fake/edge-2"}
        ran = {name: "\n".join(h.connector.executed_commands) for name, h in hosts.items()}
    finally:
        disconnect_all(state)

    switch = "ln -sfn releases/tiny-2 current.tmp && mv -T current.tmp current"
    assert switch in ran["@fake/edge-1"] and switch in ran["@fake/edge-3"]
    assert "current.tmp" not in ran["@fake/edge-2"]
