"""``tierfleet lab ...``: the local lab fleet (see :mod:`tierfleet.lab`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from tierfleet.lab import fleet as lab_fleet
from tierfleet.lab.profiles import PROFILES
from tierfleet.lab.spec import cycle_spec, parse_hosts
from tierfleet.lab.status import status_json


def _lab() -> lab_fleet.Lab:
    return lab_fleet.Lab(log=lambda msg: click.echo(f"lab: {msg}", err=True))


@click.group()
def lab() -> None:
    """Throw-away systemd hosts over SSH, dressed as Jetsons, CPU servers and GPU nodes."""


@lab.command()
@click.option("--hosts", "hosts", metavar="NAME:PROFILE,...", help="Exactly these hosts.")
@click.option("-n", "count", type=int, help="N hosts lab-01.. cycling through the profiles.")
@click.option("--no-wait", is_flag=True, help="Return before sshd answers in every host.")
@click.option("--publish", "publish_", is_flag=True,
              help="Also publish the tier deploy's artifacts into the lab's store (see `lab publish`).")
def up(hosts: str | None, count: int | None, no_wait: bool, publish_: bool) -> None:
    """Bring the lab fleet up (default: the current fleet, or one host per profile)."""
    if hosts and count:
        raise click.UsageError("give --hosts or -n, not both")
    spec = parse_hosts(hosts) if hosts else cycle_spec(count) if count else None
    started = time.monotonic()
    lab_obj = _lab()
    lab_obj.up(spec, wait=not no_wait)
    if publish_:
        _print_published(lab_obj.publish())
    _print_status(lab_obj.status())
    click.echo(f"lab up in {time.monotonic() - started:.1f} s; ssh config: {lab_obj.root / 'ssh_config'}",
               err=True)


@lab.command()
@click.option("--keep", is_flag=True, help="Keep the hosts' files (upper layers, disks) for the next up.")
def down(keep: bool) -> None:
    """Stop every host and the mirror; remove mounts, namespaces, firewall rules and cgroups."""
    started = time.monotonic()
    _lab().down(purge=not keep)
    click.echo(f"lab down in {time.monotonic() - started:.1f} s", err=True)


def _print_status(statuses) -> None:
    click.echo(f"{'HOST':<18} {'PROFILE':<18} {'GROUP':<12} {'TIER':<11} {'ADDRESS':<12} {'STATE':<8} FAULTS")
    for s in statuses:
        state = "up" if s.ssh else "no-ssh" if s.running else "down"
        click.echo(f"{s.name:<18} {s.profile:<18} {s.kind:<12} {s.tier:<11} {s.address:<12} {state:<8} "
                   f"{','.join(s.faults) or '-'}")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the lab's hosts, their profiles, addresses, state and faults."""
    statuses = _lab().status()
    if as_json:
        click.echo(status_json(statuses))
    else:
        _print_status(statuses)


@lab.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST without SSH (nsenter, clean environment)."""
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command given")
    rc = _lab().exec(host, argv).returncode
    sys.exit(rc)


def _print_published(published) -> None:
    for p in published:
        click.echo(f"{p.name} {p.version}: {'already published' if p.reused else 'published'} ({p.path})")


@lab.command()
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="llama-server build cache (default: .cache/runtime at the repository root).")
def publish(cache: Path | None) -> None:
    """Publish what the tier deploy fetches (llama-server, the tiny model) into the lab's artifact store.

    Builds llama-server once (4-10 minutes) unless a build is cached; the store outlives `lab down`.
    """
    started = time.monotonic()
    _print_published(_lab().publish(cache))
    click.echo(f"lab publish in {time.monotonic() - started:.1f} s", err=True)


@lab.command()
def profiles() -> None:
    """List the host profiles."""
    for p in PROFILES.values():
        click.echo(f"{p.name:<18} {p.kind:<12} {p.tier:<11} {p.physical_cores:>3} cores "
                   f"{p.logical_cpus:>3} threads {p.mem_total_kib / 1024 / 1024:6.1f} GiB "
                   f"{p.disk_gib:>3} GiB disk  {p.note}")


@lab.group()
def fault() -> None:
    """Inject faults (each recorded; `fault clear` and `down` undo them)."""


def _fault_cmd(kind: str, doc: str):
    @fault.command(kind, help=doc)
    @click.argument("host")
    def cmd(host: str) -> None:
        record = _lab().fault(kind, host)
        click.echo(json.dumps(record))

    return cmd


_fault_cmd("stop", "Stop HOST in an orderly way (like `shutdown -h`).")
_fault_cmd("kill", "Kill HOST hard (SIGKILL to everything: a power cut).")
_fault_cmd("cut-ssh", "Reject HOST's SSH connections with TCP resets (new and open ones).")
_fault_cmd("blackhole", "Drop HOST's SSH packets both ways (connections hang).")


@fault.command("fill-disk")
@click.argument("host")
@click.option("--leave", type=int, default=0, show_default=True, help="Bytes to leave free.")
def fill_disk(host: str, leave: int) -> None:
    """Fill HOST's model disk (/var/lib/tierfleet)."""
    click.echo(json.dumps(_lab().fault("fill-disk", host, leave=leave)))


@fault.command("mirror")
@click.argument("mode", type=click.Choice(["corrupt", "truncate", "slow"]))
@click.option("--after", type=int, default=1024, show_default=True, help="truncate: bytes sent before closing.")
@click.option("--rate", type=int, default=65536, show_default=True, help="slow: bytes per second.")
def mirror_fault(mode: str, after: int, rate: int) -> None:
    """Make the artifact mirror serve bad bytes (corrupt), stop mid-file (truncate) or crawl (slow)."""
    click.echo(json.dumps(_lab().fault("mirror", mode=mode, after=after, rate=rate)))


@fault.command("clear")
def clear() -> None:
    """Undo every recorded fault."""
    cleared = _lab().clear()
    click.echo(f"cleared {len(cleared)} fault(s)", err=True)


@lab.command()
@click.option("-n", "counts", type=int, multiple=True, help="Fleet sizes (default 3 and 10).")
def bench(counts: tuple[int, ...]) -> None:
    """Print lab up/down times and memory per host for fleets of N hosts."""
    from tierfleet.lab.bench import run_bench

    for line in run_bench(list(counts) or [3, 10], log=lambda m: click.echo(f"lab: {m}", err=True)):
        click.echo(line)
