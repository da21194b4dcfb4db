"""The container runtime mode's checks that need no engine: hostile names, the image layer's bytes, the policy
key. The engine itself is exercised in tests/test_container_runtime.py."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest

from tierfleet_ops.containers import (RUNTIME_DIR, ContainerError, ContainerCpus, check_label, check_model_file,
                                      check_release_id, layer_tar, parse_ldd)
from tierfleet_ops.errors import ConfigError
from tierfleet_ops.policy import load_policy


@pytest.mark.parametrize("bad", ["", "x;id", "a b", "../up", "-rf", "x" * 129, "r\n1", "$(id)"])
def test_hostile_release_ids_are_refused(bad):
    with pytest.raises(ContainerError, match="letters, digits"):
        check_release_id(bad)


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x.gguf", "-m", "x\0y"])
def test_hostile_model_files_are_refused(bad):
    with pytest.raises(ContainerError, match="no '/'"):
        check_model_file(bad)


@pytest.mark.parametrize("bad", ["tierfleet.runtime", "=x", "Key=x", "k=x;id", "k=", "k=$(id)", "k=a b"])
def test_hostile_labels_are_refused(bad):
    with pytest.raises(ContainerError, match="key=value"):
        check_label(bad)
    with pytest.raises(ContainerError):
        ContainerCpus(bad, "0-1")


def test_policy_container_label_names_file_and_key(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("profiles: {eco: {}}\nruntime: {container_label: 'k=x; rm -rf /'}\n")
    with pytest.raises(ConfigError) as err:
        load_policy(str(p))
    assert str(p) in str(err.value) and "container_label" in str(err.value) and "key=value" in str(err.value)
    p.write_text("profiles: {eco: {}}\nruntime: {container_label: tierfleet.runtime=llama-server}\n")
    assert load_policy(str(p)).runtime["container_label"] == "tierfleet.runtime=llama-server"


def test_ldd_output_keeps_absolute_resolved_paths_only():
    text = ("\tlinux-vdso.so.1 (0x00007ffd)\n\tlibx.so => /lib/../../etc/shadow (0x1)\n"
            "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\tlibq.so => not found\n"
            "garbage\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f8a)\n")
    assert parse_ldd(text) == ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/ld-linux-x86-64.so.2"]
    assert parse_ldd("") == []


def test_layer_holds_release_and_its_libraries_with_zero_metadata(tmp_path):
    rel = tmp_path / "r1"
    (rel / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("true"), rel / "bin" / "llama-server")
    (rel / "README").write_text("x\n")
    data = layer_tar(rel)
    (rel / "README").touch()  # a new mtime changes nothing
    assert layer_tar(rel) == data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert f"{RUNTIME_DIR.lstrip('/')}/bin/llama-server" in names
    assert any(n.endswith("/libc.so.6") for n in names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)


def test_layer_refuses_a_directory_that_is_no_runtime_release(tmp_path):
    (tmp_path / "bin").mkdir()
    with pytest.raises(ContainerError, match="no bin/llama-server"):
        layer_tar(tmp_path)
