"""What a rollout runs for one host, in its own process, on pyinfra's Python API.

``python -m tierfleet.rollout.worker upgrade -i INVENTORY --host NAME [--data KEY=VALUE ...] --out RESULT.json``

1. connect and record what serves now (the ``current`` release of the model, runtime and ops daemon roots);
2. run the tier deploy with the rollout's data (``model_version=...``): stage, switch, restart, health gate
   (``/health``, one completion, the ops daemon answering) — a failed gate already puts back what served;
3. if the host failed and any ``current`` still differs from step 1, put every one back, restart and check
   health again (the host rolls back by itself);
4. record what serves now, write the result on the host (``/var/lib/tierfleet/rollout.json``, read by
   ``tierfleet status``) and in ``RESULT.json`` for the rollout.

The parent kills the whole process group past its time limit; the worker also dies with its parent
(``PR_SET_PDEATHSIG``), so a killed CLI never leaves a worker deploying behind a resumed rollout.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import click

from tierfleet.cli._common import parse_data
from tierfleet.rollout.state import write_json

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel kill this process when the process that started it dies."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _state(inventory: str, host: str, data: dict[str, str]):
    """A pyinfra state for one host, connected (raises :class:`ConnectError` when it cannot be)."""
    from pyinfra.api.exceptions import ConnectError

    from tierfleet.fleet import load_fleet

    state = load_fleet(inventory, limit=(host,), data=data or None)
    h = state.inventory.get_host(host)
    from pyinfra.context import ctx_host, ctx_state

    with ctx_state.use(state), ctx_host.use(h):
        h.connect(show_errors=False, raise_exceptions=True)
    state.activate_host(h)
    if not h.connected:
        raise ConnectError(f"cannot connect to {host}")
    return state, h


def _roots(settings) -> dict[str, str]:
    from tierfleet.deploys.tier import OPS_ROOT, RUNTIME_ROOT

    return {"model": settings.model_dir.rstrip("/"), "runtime": RUNTIME_ROOT, "ops": OPS_ROOT}


def snapshot(state, host, settings) -> dict[str, Any]:
    """What serves on ``host``: per root its ``current`` release and link target."""
    from pyinfra.context import ctx_host, ctx_state

    from tierfleet.facts.release import Releases

    out: dict[str, Any] = {"links": {}}
    with ctx_state.use(state), ctx_host.use(host):
        for key, root in _roots(settings).items():
            fact = host.get_fact(Releases, root=root)
            out[key] = fact["current"]
            out["links"][root] = fact["current_target"] or ""
    return out


def _run(state, func, *args, **kwargs) -> bool:
    """Add a deploy function for the state's host and run it; True when the host did not fail."""
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops

    add_deploy(state, func, *args, **kwargs)
    try:
        run_ops(state)
    except PyinfraError as exc:
        if str(exc) != "No hosts remaining!":
            raise
    return not state.failed_hosts


def _disconnect(state) -> None:
    from pyinfra.api.connect import disconnect_all

    try:
        disconnect_all(state)
    except Exception:  # noqa: BLE001 - a failed goodbye must not hide the result
        pass


@contextmanager
def _errors_into(result: dict[str, Any]):
    """Context: an unreachable host, a configuration error or a pyinfra error ends the block and becomes the
    result's ``error`` (one ``tierfleet:`` line), the result's status staying ``failed``."""
    from pyinfra.api.exceptions import ConnectError, PyinfraError

    from tierfleet.exceptions import ConfigError

    try:
        yield
    except ConnectError as exc:
        result["error"] = f"tierfleet: unreachable: {exc}"
    except ConfigError as exc:
        result["error"] = f"tierfleet: {exc}"
    except PyinfraError as exc:
        result["error"] = f"tierfleet: pyinfra: {exc}"


def upgrade(inventory: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    from tierfleet.catalog import load_catalog
    from tierfleet.deploys.tier import restore, tier
    from tierfleet.resolve import host_settings_of

    result: dict[str, Any] = {"host": name, "status": "failed"}
    with _errors_into(result):
        state, host = _state(inventory, name, data)
        settings = host_settings_of(host, load_catalog(), inventory)
        before = result["before"] = snapshot(state, host, settings)
        print(f"worker: {name}: connected, deploying", flush=True)
        ok = _run(state, tier)
        _disconnect(state)
        state, host = _state(inventory, name, data)
        after = snapshot(state, host, settings)
        _disconnect(state)
        if not ok and after["links"] != before["links"]:
            state, host = _state(inventory, name, data)
            result["rolled_back"] = _run(state, restore, before["links"])
            _disconnect(state)
            state, host = _state(inventory, name, data)
            after = snapshot(state, host, settings)
            _disconnect(state)
        elif not ok:
            result["rolled_back"] = True  # nothing was switched, or the health gate already put it back
        result.update(status="ok" if ok else "failed", after=after,
                      changed={k: before[k] for k in ("model", "runtime", "ops")}
                      != {k: after[k] for k in ("model", "runtime", "ops")})
        state, host = _state(inventory, name, data)
        _run(state, record, {"kind": "upgrade", "result": result["status"], "finished": _now(),
                             "before": {k: before[k] for k in ("model", "runtime", "ops")},
                             "after": {k: after[k] for k in ("model", "runtime", "ops")}})
        _disconnect(state)
    return result


def _policy_status(state, host) -> dict[str, Any]:
    from pyinfra.context import ctx_host, ctx_state

    from tierfleet.deploys.policy import OPS_CLI
    from tierfleet.facts.ops import OpsStatus

    with ctx_state.use(state), ctx_host.use(host):
        return host.get_fact(OpsStatus, cli=OPS_CLI)


def _gpu_range(gpus: dict | None) -> tuple[float, float] | None:
    """The power-limit range every GPU of a host accepts, or None when no GPU reports one."""
    ranges = [(g["power_min_limit_w"], g["power_max_limit_w"]) for g in (gpus or {}).get("gpus") or []
              if g.get("power_min_limit_w") is not None and g.get("power_max_limit_w") is not None]
    return (max(lo for lo, _ in ranges), min(hi for _, hi in ranges)) if ranges else None


def policy(inventory: str, name: str, data: dict[str, str], policy_path: str) -> dict[str, Any]:
    """Roll the fleet policy at ``policy_path`` onto one host (see :mod:`tierfleet.fleet_policy`)."""
    from pyinfra.context import ctx_host, ctx_state

    from tierfleet.catalog import load_catalog
    from tierfleet.deploys.policy import apply_policy
    from tierfleet.energy import plan_energy
    from tierfleet.exceptions import ConfigError
    from tierfleet.facts.jetson import NvpmodelConf
    from tierfleet.facts.nvidia import NvidiaGpus
    from tierfleet.facts.ops import OpsPolicyShards
    from tierfleet.fleet_policy import host_policy, read_fleet_policy
    from tierfleet.resolve import host_settings_of, resolve

    result: dict[str, Any] = {"host": name, "status": "failed"}
    with _errors_into(result):
        raw, _ = read_fleet_policy(policy_path)
        state, host = _state(inventory, name, data)
        catalog = load_catalog()
        settings = host_settings_of(host, catalog, inventory)
        resolved = resolve(host, catalog, settings)
        platform = resolved.profile.platform
        with ctx_state.use(state), ctx_host.use(host):
            nv = host.get_fact(NvpmodelConf) if platform == "jetson" else None
            gpus = host.get_fact(NvidiaGpus) if platform == "gpu" else None
            running = host.get_fact(OpsPolicyShards)  # the host's model shards stay as they are
        if "error" in running:
            raise ConfigError(f"host {name}: /etc/tierfleet-ops/policy.yaml", "shards",
                              f"{running['error']}; the host's model shards cannot be kept, so its policy "
                              "is left as it is")
        before = _policy_status(state, host)
        result["before"] = {"policy": before.get("policy_hash"), "profile": before.get("profile")}
        plan = plan_energy(platform, nv, gpus)
        tier = resolved.verdict.tier
        reserve = catalog.tier(tier).reserved_cores if tier else 2
        text, want = host_policy(raw, platform, source=f"{policy_path}: host {name}",
                                 jetson_modes=plan.jetson_modes,
                                 board_modes=[m["name"] for m in (nv or {}).get("modes") or []] if nv else None,
                                 gpu_power_w=plan.gpu_power_w, gpu_range_w=_gpu_range(gpus),
                                 runtime_port=settings.runtime_port, reserve=reserve,
                                 shards=running["shards"])
        result["want"] = want
        print(f"worker: {name}: connected, applying policy {want}", flush=True)
        ok = _run(state, apply_policy, text, want, settings.runtime_port)
        _disconnect(state)
        state, host = _state(inventory, name, data)
        after = _policy_status(state, host)
        result["after"] = {"policy": after.get("policy_hash"), "profile": after.get("profile")}
        result["changed"] = result["after"]["policy"] != result["before"]["policy"]
        if not ok:
            result["rolled_back"] = result["after"]["policy"] == result["before"]["policy"]
        result["status"] = "ok" if ok and after.get("policy_hash") == want else "failed"
        _run(state, record, {"kind": "policy", "result": result["status"], "finished": _now(),
                             "before": result["before"], "after": result["after"]})
        _disconnect(state)
    return result


def policy_revert(inventory: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    """Put back the policy a rollout replaced on a host of a batch that failed elsewhere."""
    from tierfleet.deploys.policy import revert_policy

    result: dict[str, Any] = {"host": name, "status": "failed"}
    with _errors_into(result):
        state, host = _state(inventory, name, data)
        ok = _run(state, revert_policy)
        _disconnect(state)
        state, host = _state(inventory, name, data)
        after = _policy_status(state, host)
        result["after"] = {"policy": after.get("policy_hash"), "profile": after.get("profile")}
        result["status"] = "ok" if ok else "failed"
        _disconnect(state)
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record(doc: dict[str, Any]) -> None:
    """Write the rollout's result on the host, where ``tierfleet status`` reads it."""
    from pyinfra.operations import files

    from tierfleet.status import ROLLOUT_RECORD

    files.put(name="Record the rollout", src=StringIO(json.dumps(doc, sort_keys=True) + "\n"),
              dest=ROLLOUT_RECORD, mode="644", create_remote_dir=True)


@click.command()
@click.argument("kind", type=click.Choice(["upgrade", "policy", "policy-revert"]))
@click.option("-i", "--inventory", required=True)
@click.option("--host", "name", required=True)
@click.option("--data", multiple=True)
@click.option("--policy", "policy_path", default=None)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(kind: str, inventory: str, name: str, data: tuple[str, ...], policy_path: str | None, out: Path) -> None:
    """Run one host's part of a rollout and write its result as JSON."""
    die_with_parent()
    from tierfleet.cli import _logging

    _logging(1)
    if kind == "upgrade":
        result = upgrade(inventory, name, parse_data(data))
    elif kind == "policy":
        result = policy(inventory, name, parse_data(data), policy_path or "")
    else:
        result = policy_revert(inventory, name, parse_data(data))
    write_json(out, result)
    sys.exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
