"""The ``tierfleet-ops`` command line: a thin click shell over the daemon and its socket API.

Exceptions are mapped to exit codes and messages in one place, :func:`main`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import OpsError

DEFAULT_SOCKET = "/run/tierfleet-ops/ops.sock"
DEFAULT_POLICY = "/etc/tierfleet-ops/policy.yaml"
DEFAULT_STATE = "/var/lib/tierfleet-ops/state.json"


def host_context(sysfs_root: str, runner_path: str | None, fake_nvml: str | None, state_dir: str,
                 sysfs_also_on: tuple[str, ...] = ()) -> Any:
    from .backends.base import HostContext
    from .runner import Runner
    from .sysfs import Sysfs

    loader = None
    if fake_nvml:
        from .testing.fakenvml import FakeNvml

        fake = FakeNvml(fake_nvml)
        loader = lambda: fake  # noqa: E731
    try:
        sysfs = Sysfs(sysfs_root, also_on=tuple(sysfs_also_on))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sysfs-also-on") from None
    return HostContext(sysfs=sysfs, runner=Runner(path=runner_path), nvml_loader=loader,
                       state_dir=state_dir)


def hardware_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--sysfs-root", default="/sys", show_default=True, help="sysfs root (recorded trees in tests)"),
        click.option("--proc-root", default="/proc", show_default=True, help="procfs root"),
        click.option("--runner-path", default=None, help="PATH for nvpmodel/jetson_clocks/systemctl"),
        click.option("--fake-nvml", default=None, metavar="PROBE.json",
                     help="replay a recorded NVML probe instead of the driver (testing aid)"),
        click.option("--backend", "backends", multiple=True, help="only these backends (repeatable)"),
        click.option("--sysfs-also-on", "sysfs_also_on", multiple=True, metavar="FSTYPE",
                     envvar="TIERFLEET_OPS_SYSFS_ALSO_ON",
                     help="on /sys, also write files on this filesystem (overlay: hosts whose /sys files are "
                          "dressed on purpose, as in the lab); default: sysfs only"),
    ]):
        f = opt(f)
    return f


def print_changes(result: dict[str, Any]) -> None:
    """A dry run's diff: ``~`` would change, ``=`` already so, ``?`` knob unavailable, ``-`` skipped,
    ``x`` a backend this host does not have (why, and which of the profile's settings it leaves)."""
    click.echo(f"profile {result['profile']}:")
    for c in result["changes"]:
        mark = {"would-change": "~", "unchanged": "=", "unavailable": "?"}.get(c["status"], "!")
        note = f"  ({c['note']})" if c.get("note") else ""
        click.echo(f"  {mark} {c['knob']}: {c['before']} -> {c['want']}{note}")
    for s in result["skipped"]:
        click.echo(f"  - {s['knob']}: skipped: {s['reason']}")
    for a in result.get("absent", []):
        left = f"; not applied: {', '.join(a['settings'])}" if a["settings"] else ""
        click.echo(f"  x {a['backend']}: absent: {a['reason']}{left}")
    if not result["changes"] and not result["skipped"]:
        click.echo("  nothing to compare: no knob of this profile exists on this host")


def print_shards(shards: list[dict[str, Any]], budget: dict[str, Any] | None) -> None:
    """One line per shard: state, memory (estimate / resident), last use, counters, wake-up latency."""
    if not shards:
        return
    import time

    from .shards import fmt_bytes

    if budget:
        total = "-" if budget.get("budget_bytes") is None else fmt_bytes(budget["budget_bytes"])
        click.echo(f"shards:   {budget['mode']} mode, {fmt_bytes(budget['held_bytes'])} held of {total} "
                   f"{budget['memory_kind']}" + (f", {budget['waiting']} waiting" if budget.get("waiting") else ""))
    for s in shards:
        mem = "-" if s.get("memory_bytes") is None else fmt_bytes(s["memory_bytes"])
        if s.get("rss_bytes") is not None:
            mem += f" (rss {fmt_bytes(s['rss_bytes'])})"
        last = "never" if s.get("last_used") is None else f"{max(0.0, time.time() - s['last_used']):.0f}s ago"
        w = s.get("wake_s") or {}
        wake = f"{w['sum'] / w['count']:.2f}s avg of {w['count']}" if w.get("count") else "-"
        flags = "".join(f" {f}" for f in ("pinned", "preload") if s.get(f))
        ttl = s.get("ttl_s")
        ttl_s = "never" if ttl is None or ttl < 0 else f"{ttl:g}s"
        click.echo(f"  {s['name']:<16} {s['state']:<9} {mem:<22} last {last:<9} ttl {ttl_s}{flags}  "
                   f"loads {s['loads']} unloads {s['unloads']} evictions {s['evictions']} "
                   f"refused {s.get('refusals', 0)}  wake {wake}")
        if s.get("error"):
            click.echo(f"  {'':<16} error: {s['error']}")


def make_cli() -> click.Group:
    @click.group()
    @click.version_option(package_name="tierfleet-ops")
    def cli() -> None:
        """Power profiles and CPU placement for the inference runtime on this host."""

    @cli.command()
    @click.option("--policy", "policy_path", default=DEFAULT_POLICY, show_default=True)
    @click.option("--state", "state_path", default=DEFAULT_STATE, show_default=True)
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    @click.option("--socket-group", default=None, help="group that may use the control socket")
    @click.option("--metrics-port", type=int, default=9464, show_default=True, help="0 disables metrics")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(["debug", "info", "warning", "error"]))
    @click.option("--dry-run", is_flag=True, help="observe only: log what would be set and pinned, change nothing")
    @hardware_options
    def run(policy_path: str, state_path: str, socket_path: str, socket_group: str | None, metrics_port: int,
            log_level: str, dry_run: bool, sysfs_root: str, proc_root: str, runner_path: str | None,
            fake_nvml: str | None, backends: tuple[str, ...], sysfs_also_on: tuple[str, ...]) -> None:
        """Run the daemon (systemd: Type=notify). ``kill -USR1`` writes every thread's stack to stderr (the
        journal), changing nothing: what a daemon that does not stop or answer is doing."""
        import faulthandler
        import os
        import signal

        import psutil

        faulthandler.register(signal.SIGUSR1, all_threads=True)

        from . import logs
        from .daemon import Daemon, DaemonConfig

        logs.setup(log_level)
        psutil.PROCFS_PATH = proc_root  # psutil's own movable proc root (recorded trees in tests)
        cfg = DaemonConfig(policy_path=policy_path, state_path=state_path, socket_path=socket_path,
                           socket_group=socket_group, metrics_port=metrics_port or None,
                           backends=list(backends) or None,
                           ctx=host_context(sysfs_root, runner_path, fake_nvml, os.path.dirname(state_path),
                                            sysfs_also_on),
                           dry_run=dry_run)
        Daemon(cfg).run()

    @cli.command()
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="print the full status as JSON")
    def status(socket_path: str, as_json: bool) -> None:
        """Show the active profile, signals, readings, knobs and pinning."""
        from .control import request

        st = request(socket_path, {"cmd": "status"})
        if as_json:
            click.echo(json.dumps(st, indent=1, default=str))
            return
        held = " (held)" if st["held"] else ""
        click.echo(f"profile:  {st['profile']}{held}  [{st['reason']}]")
        click.echo(f"policy:   {st['policy']['hash']}  {st['policy']['path']}"
                   + (f"  reload error: {st['policy']['error']}" if st["policy"]["error"] else ""))
        load = "n/a" if st["load_pct"] is None else f"{st['load_pct']:.0f}%"
        sig = " ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in st["signals"].items())
        click.echo(f"load:     {load}  {sig}")
        click.echo("readings: " + (" ".join(f"{k}={v:.1f}" for k, v in st["readings"].items()) or "none"))
        click.echo("backends: " + (", ".join(b["name"] for b in st["backends"]) or "none"))
        for name, why in st.get("absent_backends", {}).items():
            click.echo(f"absent:   {name}: {why}")
        avail = sum(st["knobs"].values())
        missing = [k for k, ok in st["knobs"].items() if not ok]
        click.echo(f"knobs:    {avail} available of {len(st['knobs'])}"
                   + (f"; unavailable: {', '.join(missing)}" if missing else ""))
        if st["placement"]:
            p = st["placement"]
            click.echo(f"cpus:     os {p['reserved'] or '-'}  inference {p['inference']}")
        pin = st["pinning"]
        click.echo(f"pinning:  {len(pin['pids'])} process(es), {pin['threads']} thread(s)")
        for pid, n in pin["thread_mismatch"].items():
            click.echo(f"warning:  pid {pid} runs {n} threads; inference cpus are "
                       f"{st['placement']['inference']}")
        rec = st.get("records") or {}
        if rec.get("path"):
            click.echo(f"records:  {rec['path']}: {rec['written']} written, {rec['dropped']} dropped")
        if rec.get("error"):
            click.echo(f"warning:  energy records are dropped: {rec['error']}")
        for m in st["other_power_managers"]:
            click.echo(f"warning:  another power manager is running: {m}")
        print_shards(st.get("shards") or [], st.get("shard_budget"))

    @cli.group()
    def profile() -> None:
        """Hold or release a profile."""

    @profile.command("hold")
    @click.argument("name")
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    def hold(name: str, socket_path: str) -> None:
        """Hold profile NAME until released (load switching pauses)."""
        from .control import request

        r = request(socket_path, {"cmd": "hold", "profile": name})
        click.echo(f"holding {r['held']}")

    @profile.command("release")
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    def release(socket_path: str) -> None:
        """Release a held profile: load switching resumes."""
        from .control import request

        request(socket_path, {"cmd": "release"})
        click.echo("released")

    @cli.command()
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    def reload(socket_path: str) -> None:
        """Reload the policy file (a bad file keeps the running policy)."""
        from .control import request

        r = request(socket_path, {"cmd": "reload"})
        click.echo(f"policy {r['policy']}")

    @cli.command("dry-run")
    @click.option("--profile", "profile_name", default=None, help="profile to compare (default: the active one)")
    @click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True)
    @click.option("--policy", "policy_path", default=None,
                  help="compare this policy file directly, without a running daemon")
    @hardware_options
    def dry_run(profile_name: str | None, socket_path: str, policy_path: str | None, sysfs_root: str,
                proc_root: str, runner_path: str | None, fake_nvml: str | None, backends: tuple[str, ...],
                sysfs_also_on: tuple[str, ...]) -> None:
        """Print the diff between live values and a profile; change nothing."""
        if policy_path is None:
            from .control import request

            print_changes(request(socket_path, {"cmd": "dry-run", "profile": profile_name}))
            return
        from .apply import Applier
        from .backends.base import not_applied, probe_backends
        from .errors import ConfigError
        from .policy import load_policy
        from .state import StateStore

        pol = load_policy(policy_path)
        name = profile_name or pol.default_profile
        if name not in pol.profiles:
            raise ConfigError(policy_path, "profile", f"{name!r} is not a profile; allowed: "
                              f"{', '.join(sorted(pol.profiles))}")
        ctx = host_context(sysfs_root, runner_path, fake_nvml, "/nonexistent", sysfs_also_on)
        found, absent = probe_backends(ctx, list(backends) or None)
        changes, skipped = [], []
        for b in found:
            c, s = b.plan(pol.profiles[name][b.name]) if b.name in pol.profiles[name] else ([], [])
            changes += c
            skipped += s
        out = Applier(StateStore(None)).apply(changes, dry_run=True)
        for b in found:
            b.close()
        print_changes({"profile": name, "changes": [o.as_dict() for o in out],
                       "skipped": [{"knob": s.name, "reason": s.reason} for s in skipped],
                       "absent": not_applied(pol.profiles[name], absent)})

    @cli.command("check-policy")
    @click.argument("path")
    def check_policy(path: str) -> None:
        """Validate a policy file and print its hash."""
        from .policy import load_policy

        p = load_policy(path)
        click.echo(f"{path}: ok, policy {p.hash}, profiles {', '.join(sorted(p.profiles))}")

    @cli.command()
    @click.option("--seconds", type=float, default=60.0, show_default=True, help="how long to measure")
    @click.option("--tick", type=float, default=1.0, show_default=True)
    @click.option("--llama-server", "llama_server", default=None, metavar="BIN",
                  help="start this llama-server (with --model) and scrape it, as on a deployed host")
    @click.option("--model", default=None, metavar="GGUF", help="model for --llama-server")
    @click.option("--runtime-url", default=None, metavar="URL", help="scrape an already running llama-server")
    @click.option("--sysfs-root", default="/sys", show_default=True)
    @click.option("--fake-nvml/--no-fake-nvml", default=True, show_default=True,
                  help="replay the recorded H200 NVML probe")
    def bench(seconds: float, tick: float, llama_server: str | None, model: str | None, runtime_url: str | None,
              sysfs_root: str, fake_nvml: bool) -> None:
        """Measure the daemon's CPU share, RSS and load-step reaction time (every backend, a scraped runtime)."""
        from .bench import FAKE_NVML, run_bench

        if bool(llama_server) != bool(model):
            raise click.UsageError("--llama-server and --model go together")
        run_bench(seconds, tick, click.echo, llama_server=llama_server, model=model, runtime_url=runtime_url,
                  fake_nvml=str(FAKE_NVML) if fake_nvml else None, sysfs_root=sysfs_root)

    @cli.group()
    def container() -> None:
        """The runtime as a container on this host's Docker engine (runtime_mode: container)."""

    docker_host = click.option("--docker-host", default=None, metavar="URL",
                               help="the engine's API (default: DOCKER_HOST or the local socket)")

    def spec_options(f: Any) -> Any:
        for opt in reversed([
            click.option("--image", required=True, help="image tag, e.g. tierfleet/llama-server:<release id>"),
            click.option("--model-root", required=True, help="the model's release root (current under it)"),
            click.option("--model-file", required=True, help="the GGUF file inside the model release"),
            click.option("--port", type=click.IntRange(1024, 65535), required=True),
            click.option("--threads", type=click.IntRange(1, 1024), required=True),
            click.option("--name", default="llama-server", show_default=True,
                         help="label tierfleet.runtime=NAME; the daemon's container_label"),
            click.option("--arg", "args", multiple=True, help="another llama-server argument (repeatable)"),
            click.option("--gate-timeout", type=click.FloatRange(1, 3600), default=120.0, show_default=True),
            docker_host]):
            f = opt(f)
        return f

    def _runtime(image: str, model_root: str, model_file: str, port: int, threads: int, name: str,
                 args: tuple[str, ...], gate_timeout: float, docker_host: str | None) -> Any:
        from .containers import RuntimeContainer, RuntimeSpec, check_label, check_model_file, client

        check_label(f"tierfleet.runtime={name}")
        check_model_file(model_file)
        return RuntimeContainer(client(docker_host), RuntimeSpec(image=image, model_root=model_root,
                                                                 model_file=model_file, port=port,
                                                                 threads=threads, args=list(args), name=name),
                                gate_timeout=gate_timeout)

    @container.command("image")
    @click.argument("release_dir", type=click.Path(exists=True, file_okay=False))
    @docker_host
    def container_image(release_dir: str, docker_host: str | None) -> None:
        """Import a runtime release as tierfleet/llama-server:<release id> (nothing when it is there)."""
        from pathlib import Path

        from .containers import build_image, check_release_id, client

        tag = check_release_id(Path(release_dir).resolve().name)  # before the engine is asked anything
        image_id = build_image(client(docker_host), Path(release_dir))
        click.echo(json.dumps({"image": f"tierfleet/llama-server:{tag}", "id": image_id}))

    @container.command("ensure")
    @spec_options
    def container_ensure(**kw: Any) -> None:
        """Run the runtime container as specified; no change when it already runs so and is healthy."""
        r = _runtime(**kw).ensure()
        click.echo(json.dumps({"changed": r.changed, "container": r.container, "replaced": r.replaced}))

    @container.command("rollback")
    @spec_options
    def container_rollback(**kw: Any) -> None:
        """Go back to the container the serving one replaced."""
        r = _runtime(**kw).rollback()
        click.echo(json.dumps({"changed": r.changed, "container": r.container, "replaced": r.replaced}))

    return cli


cli = make_cli()


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place that maps errors to exit codes and messages."""
    try:
        cli.main(args=argv, prog_name="tierfleet-ops", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OpsError as exc:
        click.echo(f"tierfleet-ops: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
