"""The state file: round trip, validation errors naming file and key, inventory without a lab."""

from __future__ import annotations

import json

import pytest

from tierfleet.exceptions import ConfigError, LabError
from tierfleet.lab.inventory import inventory_from_state
from tierfleet.lab.state import HostState, LabState, StateStore, lab_id, read_state_for_inventory


def test_round_trip(tmp_path):
    store = StateStore(tmp_path)
    state = LabState(hosts={"a": HostState("a", "jetson-nano", "127.0.0.11", 0)}, mirror_port=4321,
                     faults=[{"kind": "mirror", "host": None}])
    store.save(state)
    assert store.load() == state


def test_bad_state_names_file_and_key(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"version": 1, "hosts": {"a": {"name": "a"}}}))
    with pytest.raises(ConfigError) as err:
        StateStore(tmp_path).load()
    assert str(err.value).startswith(f"{tmp_path / 'state.json'}: hosts.a: bad host entry")
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        StateStore(tmp_path).load()


def test_inventory_without_a_lab_says_what_to_do(tmp_path):
    with pytest.raises(LabError, match="run `tierfleet lab up` first"):
        read_state_for_inventory(tmp_path)


def test_inventory_groups_by_kind(tmp_path):
    state = LabState(hosts={n: HostState(n, p, f"127.0.0.{11 + i}", i) for i, (n, p) in enumerate(
        [("o", "jetson-orin-nano"), ("s", "cpu-small"), ("h", "gpu-node-h200")])})
    groups = inventory_from_state(tmp_path, state)
    assert [n for n, _ in groups["jetson"]] == ["o"]
    assert [n for n, _ in groups["cpu_servers"]] == ["s"]
    assert groups["gpu_nodes"][0][1]["tier"] == "enterprise"
    assert groups["gpu_nodes"][0][1]["ssh_key"] == str(tmp_path / "id_ed25519")


def test_lab_id_is_stable_and_short(tmp_path):
    assert lab_id(tmp_path) == lab_id(tmp_path / ".") and len(lab_id(tmp_path)) == 9


def test_lock_refuses_a_second_command(tmp_path):
    store = StateStore(tmp_path)
    with store.locked():
        with pytest.raises(LabError, match="another lab command"):
            with StateStore(tmp_path).locked():
                pass
