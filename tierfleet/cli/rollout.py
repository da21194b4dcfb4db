"""``tierfleet upgrade``: roll a new model, runtime or driver branch across an inventory in batches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tierfleet.catalog import load_catalog
from tierfleet.cli._common import console, echo_json, json_option, parse_data
from tierfleet.exceptions import ConfigError
from tierfleet.rollout import state as rstate
from tierfleet.rollout.engine import execute
from tierfleet.rollout.plan import ORDERS, parse_serial, plan

DEFAULT_DIR = Path(".tierfleet")


def _worker_argv(state: rstate.RolloutState, kind: str | None = None):
    def argv(host: str, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "tierfleet.rollout.worker", kind or state.kind, "-i", state.inventory,
               "--host", host, "--out", str(out)]
        for key, value in state.data.items():
            cmd += ["--data", f"{key}={value}"]
        if state.policy_file:
            cmd += ["--policy", state.policy_file]
        return cmd
    return argv


def _versions(run: rstate.HostRun) -> str:
    b, a = run.before or {}, run.after or {}
    parts = [f"{k} {b.get(k) or '-'} -> {a.get(k) or '-'}" for k in ("model", "runtime", "policy")
             if b.get(k) != a.get(k)]
    return "; ".join(parts) or "unchanged"


def _summary_table(state: rstate.RolloutState) -> Table:
    table = Table(title=f"rollout {state.id} ({state.kind})")
    for column in ("batch", "host", "result", "versions", "rolled back", "s", "error"):
        table.add_column(column)
    for run in sorted(state.hosts.values(), key=lambda r: (r.batch, r.host)):
        style = {"ok": "green", "pending": "dim"}.get(run.status, "bold red")
        table.add_row(str(run.batch + 1), run.host, f"[{style}]{run.status}[/]", _versions(run),
                      {True: "yes", False: "NO", None: "-"}[run.rolled_back] if run.status != "ok" else "-",
                      f"{run.duration_s:.0f}" if run.duration_s else "-", run.error or "")
    return table


def _new_state(inventory: str, limit, data, serial, order, canaries, max_fail_pct, host_timeout,
               kind: str = "upgrade") -> rstate.RolloutState:
    from tierfleet.fleet import load_fleet
    from tierfleet.resolve import host_settings_of

    serial_parsed = parse_serial(serial)
    fleet = load_fleet(inventory, limit=limit, data=data or None)
    hosts = [h for h in fleet.inventory if fleet.is_host_in_limit(h)]
    catalog = load_catalog()
    for h in hosts:  # every host's data, with the new versions, validated before anything connects
        host_settings_of(h, catalog, inventory)
    batches = plan([(h.name, tuple(h.groups)) for h in hosts], serial_parsed, order, tuple(canaries))
    runs = {name: rstate.HostRun(host=name, batch=i) for i, batch in enumerate(batches) for name in batch}
    return rstate.RolloutState(kind=kind, inventory=inventory, limit=list(limit), data=data, serial=serial,
                               order=order, canaries=list(canaries), max_fail_pct=max_fail_pct,
                               host_timeout=host_timeout, batches=batches, hosts=runs)


def _releases_cell(releases: dict[str, str | None]) -> str:
    """A table cell: the one model's release, or each shard's as ``name=release`` lines."""
    return "\n".join((v or "-") if k == "model" else f"{k}={v or '-'}" for k, v in releases.items()) or "-"


def _dry_run(state: rstate.RolloutState) -> None:
    from tierfleet.deploys.shards import wanted_models
    from tierfleet.deploys.tier import model_release_id
    from tierfleet.fleet import load_fleet
    from tierfleet.resolve import host_settings_of
    from tierfleet.status import gather_status

    catalog = load_catalog()
    fleet = load_fleet(state.inventory, limit=tuple(state.limit), data=state.data or None)
    statuses = {st.host: st for st in gather_status(fleet, catalog, state.inventory, timeout=20)}
    table = Table(title=f"upgrade plan ({len(state.batches)} batches, max {state.max_fail_pct:g}% failed)")
    for column in ("batch", "host", "model now", "model wanted", "runtime now", "runtime wanted", "change"):
        table.add_column(column)
    for i, batch in enumerate(state.batches):
        for name in batch:
            h = fleet.inventory.get_host(name)
            settings = host_settings_of(h, catalog, state.inventory)
            st = statuses[name]
            tier = st.tier or (settings.tier if settings.tier != "auto" else None)
            if tier:
                wanted: dict[str, str | None] = dict(wanted_models(settings, catalog.tier(tier)))
            else:
                wanted = {"model": model_release_id(settings, settings.model) if settings.model else "?"}
            now = {"model": st.model_release} if "model" in wanted else {k: st.shard_releases.get(k) for k in wanted}
            wanted_runtime = f"{settings.runtime_version}+…"
            change = ("unreachable" if not st.reachable else
                      "yes" if (now != wanted or not (st.runtime_release or "").startswith(
                          settings.runtime_version + "+")) else "no")
            table.add_row(str(i + 1), name, _releases_cell(now), _releases_cell(wanted), st.runtime_release or "-",
                          wanted_runtime, change)
    console().print(table)


def rollout_options(func):
    """The options every rollout command shares (batches, threshold, time limits, state, resume)."""
    for option in reversed([
        click.option("-i", "--inventory", help="pyinfra inventory file (a new rollout)."),
        click.option("--limit", multiple=True, help="Only these hosts or groups (repeatable)."),
        click.option("--data", multiple=True, help="Other inventory data for this rollout, KEY=VALUE (repeatable)."),
        click.option("--serial", default="1,25%,100%", show_default=True,
                     help="Batch sizes, as Ansible's serial: counts or percentages; the last repeats."),
        click.option("--order", type=click.Choice(ORDERS), default="inventory", show_default=True,
                     help="Host order: as in the inventory, grouped, or --canary hosts first."),
        click.option("--canary", "canaries", multiple=True,
                     help="Host, group or glob rolled out first, alone (repeatable)."),
        click.option("--max-fail-pct", default=0.0, show_default=True, type=click.FloatRange(0, 100),
                     help="Stop once more than this percent of all hosts failed (unreachable hosts count)."),
        click.option("--host-timeout", default=1800.0, show_default=True, type=click.FloatRange(10, 86400),
                     help="Seconds a host gets for its whole part (a hung host is stopped and counts as failed)."),
        click.option("--forks", default=20, show_default=True, type=click.IntRange(1, 500),
                     help="Hosts at once in a batch."),
        click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=DEFAULT_DIR / "rollout-state.json", show_default=True, help="The rollout's state file."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Write the JSON report here (default: .tierfleet/rollout-<id>.json)."),
        click.option("--resume", is_flag=True,
                     help="Continue the rollout in the state file (e.g. after the CLI was killed)."),
        click.option("--retry-failed", is_flag=True, help="Run the state file's failed hosts again, and only them."),
        click.option("--dry-run", is_flag=True, help="Print the batches and what would change; change nothing."),
        json_option,
    ]):
        func = option(func)
    return func


def _load_state(state_path: Path, resume: bool, retry_failed: bool, kind: str) -> rstate.RolloutState:
    st = rstate.load(state_path)
    if st.kind != kind:
        raise ConfigError(str(state_path), "kind", f"the state is a {st.kind} rollout, not a {kind}")
    if st.policy_file:
        from tierfleet.fleet_policy import read_fleet_policy

        if read_fleet_policy(st.policy_file)[1] != st.policy_sha256:
            raise ConfigError(st.policy_file, "<file>", "changed since the rollout began; start a new rollout")
    if retry_failed:
        if not st.failed():
            raise ConfigError(str(state_path), "hosts", "no failed host to retry")
        for name in st.failed():
            st.hosts[name].status = "pending"
        st.stopped = st.finished = None
    elif st.finished and not [r for r in st.hosts.values() if r.status in ("pending", "running")]:
        raise ConfigError(str(state_path), "(rollout)", "finished: nothing to resume (use --retry-failed)")
    elif st.stopped:
        raise ConfigError(str(state_path), "(rollout)", f"{st.stopped}; use --retry-failed after fixing them")
    return st


def _check_new(state_path: Path, dry_run: bool) -> None:
    if state_path.exists() and not dry_run:
        old = rstate.load(state_path)
        if not old.finished:
            raise ConfigError(str(state_path), "(rollout)", f"rollout {old.id} is unfinished: --resume it, or "
                              "remove the file to start another")


def _execute(ctx: click.Context, st: rstate.RolloutState, state_path: Path, report_path: Path | None, forks: int,
             as_json: bool, revert: bool = False) -> None:
    run_dir = state_path.parent / "rollouts" / st.id
    rstate.save(st, state_path)
    todo = sum(1 for r in st.hosts.values() if r.status not in rstate.DONE)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(), transient=as_json, disable=as_json) as progress:
        task = progress.add_task(f"rollout {st.id}", total=todo)

        def event(kind: str, name: str, run: rstate.HostRun) -> None:
            if kind == "end":
                if run.status != "reverted":
                    progress.advance(task)
                colour = "green" if run.status == "ok" else "red"
                progress.console.print(f"batch {run.batch + 1}: {name}: [{colour}]{run.status}[/] "
                                       f"({_versions(run)}){' ' + run.error if run.error else ''}")

        started = time.time()
        execute(st, state_path, _worker_argv(st), run_dir, forks=forks, on_event=event,
                revert_for=_worker_argv(st, "policy-revert") if revert else None)
    report = report_path or state_path.parent / f"rollout-{st.id}.json"
    rstate.write_json(report, st.report())
    if as_json:
        echo_json(st.report())
    else:
        console().print(_summary_table(st))
        if st.stopped:
            click.echo(st.stopped)
        s = st.summary()
        click.echo(f"{s['ok']} ok, {s['failed'] + s['timeout']} failed, {s['reverted']} reverted, {s['pending']} "
                   f"untouched in {time.time() - started:.0f}s; report {report}, state {state_path}")
    ctx.exit(0 if st.report()["ok"] else 1)


def _shard_versions(values: tuple[str, ...]) -> str:
    """``--shard-version chat=2 --shard-version code=3`` as the ``shard_versions`` data string ``chat=2,code=3``."""
    from tierfleet.settings import parse_shard_versions

    try:
        versions = parse_shard_versions(",".join(values))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard-version") from None
    if any("," in v for v in values):
        raise click.BadParameter("one NAME=VERSION per --shard-version", param_hint="--shard-version")
    return ",".join(f"{k}={v}" for k, v in versions.items())


@click.command()
@click.option("--model-version", help="The model version to roll out (inventory key model_version).")
@click.option("--shard-version", "shard_versions", multiple=True, metavar="NAME=VERSION",
              help="A model shard's version to roll out (shard_versions; repeatable). Shards that name no version "
              "follow --model-version.")
@click.option("--runtime-version", help="The llama-server version to roll out (runtime_version).")
@click.option("--driver-branch", help="The NVIDIA driver branch to roll out (GPU nodes reboot into it).")
@rollout_options
@click.pass_context
def upgrade(ctx: click.Context, inventory: str | None, limit, model_version, shard_versions, runtime_version,
            driver_branch, data,
            serial, order, canaries, max_fail_pct, host_timeout, forks, state_path: Path, report_path: Path | None,
            resume: bool, retry_failed: bool, dry_run: bool, as_json: bool) -> None:
    """Upgrade model, runtime or driver branch across an inventory in batches, each host behind its health gate.

    A host that fails its gate goes back to what served before by itself. Exit 0 when every host is upgraded,
    1 when a host failed or the rollout stopped at --max-fail-pct.
    """
    if resume and retry_failed:
        raise click.UsageError("--resume and --retry-failed are two different runs; give one")
    if resume or retry_failed:
        if inventory or model_version or shard_versions or runtime_version or driver_branch or data:
            raise click.UsageError("--resume/--retry-failed take the inventory and versions from --state")
        st = _load_state(state_path, resume, retry_failed, "upgrade")
    else:
        if not inventory:
            raise click.UsageError("give -i INVENTORY (or --resume / --retry-failed)")
        overrides = parse_data(data)
        for key, value in (("model_version", model_version), ("runtime_version", runtime_version),
                           ("nvidia_driver_branch", driver_branch), ("shard_versions", _shard_versions(shard_versions))):
            if value:
                overrides[key] = value
        if not overrides:
            raise click.UsageError("nothing to upgrade: give --model-version, --shard-version, --runtime-version, "
                                   "--driver-branch or --data")
        _check_new(state_path, dry_run)
        st = _new_state(inventory, limit, overrides, serial, order, canaries, max_fail_pct, host_timeout)
    if dry_run:
        _dry_run(st)
        return
    _execute(ctx, st, state_path, report_path, forks, as_json)


@click.group()
def policy() -> None:
    """Energy policies: check one, roll it out across a fleet."""


@policy.command()
@click.argument("policy_file", type=click.Path(dir_okay=False))
def check(policy_file: str) -> None:
    """Validate a fleet policy for every platform with the ops daemon's own validator."""
    from tierfleet.fleet_policy import check_fleet_policy, read_fleet_policy

    raw, _ = read_fleet_policy(policy_file)
    for platform, digest in check_fleet_policy(raw, policy_file).items():
        click.echo(f"{policy_file}: ok for {platform} hosts (policy {digest} before host values)")


@policy.command()
@click.argument("policy_file", type=click.Path(dir_okay=False), required=False)
@rollout_options
@click.pass_context
def rollout(ctx: click.Context, policy_file: str | None, inventory: str | None, limit, data, serial, order, canaries,
            max_fail_pct, host_timeout, forks, state_path: Path, report_path: Path | None, resume: bool,
            retry_failed: bool, dry_run: bool, as_json: bool) -> None:
    """Roll an energy policy out in batches: each host's daemon reloads it and must report its hash, every
    knob applied and a healthy runtime; a batch where a host fails goes back to the previous policy.

    The policy is validated for every platform before any host is touched.
    """
    from tierfleet.fleet_policy import check_fleet_policy, read_fleet_policy

    if resume and retry_failed:
        raise click.UsageError("--resume and --retry-failed are two different runs; give one")
    if resume or retry_failed:
        if policy_file or inventory or data:
            raise click.UsageError("--resume/--retry-failed take the policy and inventory from --state")
        st = _load_state(state_path, resume, retry_failed, "policy")
    else:
        if not (policy_file and inventory):
            raise click.UsageError("give POLICY_FILE and -i INVENTORY (or --resume / --retry-failed)")
        raw, digest = read_fleet_policy(policy_file)
        check_fleet_policy(raw, policy_file)  # a bad policy stops here, before any host
        _check_new(state_path, dry_run)
        st = _new_state(inventory, limit, parse_data(data), serial, order, canaries, max_fail_pct, host_timeout,
                        kind="policy")
        st.policy_file, st.policy_sha256 = str(Path(policy_file).resolve()), digest
    if dry_run:
        table = Table(title=f"policy rollout plan ({len(st.batches)} batches)")
        for column in ("batch", "hosts"):
            table.add_column(column)
        for i, batch in enumerate(st.batches):
            table.add_row(str(i + 1), ", ".join(batch))
        console().print(table)
        return
    _execute(ctx, st, state_path, report_path, forks, as_json, revert=True)
