"""The click layer: subcommands, usage errors, root check, exit codes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tierfleet.cli import main, make_cli


def test_lab_group_has_the_subcommands():
    lab = make_cli().commands["lab"]
    assert {"up", "down", "status", "exec", "fault", "profiles", "bench", "publish"} <= set(lab.commands)
    assert {"stop", "kill", "cut-ssh", "blackhole", "fill-disk", "mirror", "clear"} <= set(
        lab.commands["fault"].commands)


def test_profiles_lists_every_profile():
    result = CliRunner().invoke(make_cli(), ["lab", "profiles"])
    assert result.exit_code == 0
    assert "jetson-nano" in result.output and "gpu-node-h200" in result.output


def test_up_refuses_without_root(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exc:
        main(["lab", "up", "--hosts", "a:cpu-small"])
    assert exc.value.code == 3
    assert "needs root" in capsys.readouterr().err


def test_bad_host_spec_is_a_config_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "up", "--hosts", "a:no-such-profile"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--hosts: profile: unknown profile 'no-such-profile'; allowed:" in err


def test_hosts_and_n_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "up", "--hosts", "a:cpu-small", "-n", "3"])
    assert exc.value.code == 2


def test_mirror_fault_mode_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lab", "fault", "mirror", "melt"])
    assert exc.value.code == 2


def test_publish_fills_the_store_once(tmp_path, monkeypatch):
    from pathlib import Path

    from tierfleet.artifacts.llama_build import cached_runtime

    cache = Path(__file__).resolve().parents[2] / ".cache" / "runtime"
    if cached_runtime(cache) is None:
        pytest.skip(f"no llama-server build under {cache}")
    monkeypatch.setenv("TIERFLEET_LAB_DIR", str(tmp_path))
    first = CliRunner().invoke(make_cli(), ["lab", "publish", "--cache", str(cache)])
    assert first.exit_code == 0, first.output
    assert "llama-server 0.3.36+" in first.output and "tiny-llama-Q8_0 1: published" in first.output
    assert (tmp_path / "artifacts/tiny-llama-Q8_0/1/manifest.json").is_file()
    assert list((tmp_path / "artifacts/llama-server").glob("*/manifest.json"))
    assert list((tmp_path / "artifacts/tierfleet-ops").glob("*/manifest.json"))
    second = CliRunner().invoke(make_cli(), ["lab", "publish", "--cache", str(cache)])
    assert second.exit_code == 0 and second.output.count("already published") == 3, second.output
