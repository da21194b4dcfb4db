"""The llama-server unit renders to what systemd and llama-server expect."""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def render(**overrides) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    values = dict(runtime_root="/opt/tierfleet/runtime", model_root="/var/lib/tierfleet/models", groups="",
                  port=8080, threads=14, cpus="2 3 4 5", context_size=4096, gpu_layers=99, parallel=1,
                  tier="basic", service_user="tierfleet", mlock=False)
    values.update(overrides)
    return env.get_template("llama-server.service.j2").render(**values)


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return [a.replace("%%", "%") for a in shlex.split(line[len("ExecStart="):])]


def test_exec_start_and_hardening():
    unit = render()
    assert exec_start(unit) == [
        "/opt/tierfleet/runtime/current/bin/llama-server", "--host", "127.0.0.1", "--port", "8080", "--threads", "14", "--ctx-size", "4096",
        "--n-gpu-layers", "99", "--parallel", "1", "--metrics",
    ]
    for line in ("User=tierfleet", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "LimitMEMLOCK=infinity", "CPUAffinity=2 3 4 5", "CapabilityBoundingSet=",
                 "EnvironmentFile=/var/lib/tierfleet/models/current/release.env"):
        assert line in unit.splitlines()


def test_no_affinity_line_without_cpus_and_mlock_flag():
    unit = render(cpus="", mlock=True)
    assert not any(line.startswith(("CPUAffinity", "SupplementaryGroups")) for line in unit.splitlines())
    assert "SupplementaryGroups=video" in render(groups="video").splitlines()
    assert exec_start(unit)[-1] == "--mlock"


def test_paths_are_quoted_for_systemd():
    unit = render(runtime_root="/srv/my runtime/100%")
    assert exec_start(unit)[0] == "/srv/my runtime/100%/current/bin/llama-server"
    assert '"/srv/my runtime/100%%/current/bin/llama-server"' in unit
