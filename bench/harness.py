"""The tier deploy against Ansible on the same lab hosts, how its cost grows with the fleet, and the older rows.

``tierfleet bench`` / ``make bench`` / ``python -m bench.harness`` (root: it runs labs) prints one table (medians,
min-max, ratios), writes ``bench.json`` and draws ``bench.png`` into ``--out`` (default ``bench/results``).

Rows:

1. ``pyinfra -y inventory/lab.py deploys/tier_basic.py`` (exactly as users run it) against
   ``ansible-playbook bench/ansible/tier_basic.yml`` (the same state changes as an Ansible role), each on N fresh
   ``cpu-server`` lab hosts: first converge, then a no-op re-converge; the tools alternate which goes first in
   each repetition. Every run must succeed, and every no-op must change nothing (pyinfra's results table,
   Ansible's PLAY RECAP). In the first repetition of each N both tools' hosts are dumped (packages, files under
   ``/etc/systemd/system`` and ``/etc/tierfleet-ops``, the tmpfiles entry and ``/run/tierfleet-ops``, release
   trees with sha256, ``current``/``previous`` targets, the ops venv, the service user and the control group,
   unit states, llama-server's ``/health``) and compared.
2. CPU per host of each no-op converge: on the managed host, the growth of ``cpu.stat`` ``usage_usec`` of the
   host's payload cgroup (``<lab id>/<host>/payload``: everything inside the host) less that of its
   ``llama-server.service`` and ``tierfleet-ops.service`` (the services the converge leaves running; their own
   ticking is not the converge's); on the controller, the tool's command run in a cgroup of its own (so SSH
   master processes that outlive it still count), divided by N.
3. Scale (tierfleet only): first converge, no-op and ``tierfleet status`` for each N; the time per extra host
   is the slope between the smallest and the largest N.
4. The older rows: ``tierfleet-ops bench`` (daemon CPU and RSS) and ``bench/artifacts.py`` (zstd on a GGUF,
   release install, llama-server start), their output kept as printed.

Each N gets fresh hosts (``lab up`` after ``lab down``) on ``.201`` onwards of the checkout's address block
(:func:`tierfleet.lab.spec.block_address`), in a state dir of its own (``.cache/bench/lab``) whose published
store is reused between runs. Before any tool runs, every fresh host gets Ansible's managed-node needs that the
lab mirror lacks (``python3-apt`` for the ``apt`` module and ``python3-packaging`` for ``pip``, .debs fetched
once on this machine with ``apt-get download``), so both tools start from the same host.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tierfleet.lab.fleet import Lab  # noqa: E402
from tierfleet.lab.runner import grand_total  # noqa: E402
from tierfleet.lab.spec import address_block  # noqa: E402
from tierfleet.lab.system import cgroup2_root  # noqa: E402

ANSIBLE_DIR = REPO / "bench" / "ansible"
#: what Ansible's apt and pip modules need on a managed host and the lab mirror does not carry
PREREQ_PACKAGES = ("python3-apt", "python-apt-common", "distro-info-data", "python3-packaging")
TOOLS = ("tierfleet", "ansible")
PROFILE = "cpu-server"
#: the goals of the comparison (ratio of medians, tierfleet / Ansible) and of CPU per host (seconds)
GOALS = {"first_ratio": 0.15, "noop_ratio": 0.10, "host_cpu_s": 1.0, "controller_cpu_s": 0.3,
         "noop_per_host_s": 0.3}
SERVICES = ("llama-server.service", "tierfleet-ops.service")
Log = Callable[[str], None]


class BenchError(RuntimeError):
    """A benchmark run that cannot give figures (a tool failed, states differ, a prerequisite is missing)."""


@dataclass
class Run:
    """One timed command."""

    tool: str
    n: int
    kind: str  # first | noop | status
    rep: int
    wall_s: float
    controller_cpu_s: float
    host_cpu_s: list[float] = field(default_factory=list)
    changed: int | None = None
    ok: bool = True
    note: str = ""


# --- measuring ---------------------------------------------------------------------------------------------

def _usage_usec(path: Path) -> int:
    """``usage_usec`` of a cgroup2 directory's ``cpu.stat`` (0 when it is gone)."""
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value)
    except OSError:
        pass
    return 0


def run_in_cgroup(argv: list[str], *, name: str, env: dict[str, str], cwd: Path, timeout: float
                  ) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``argv`` in a cgroup2 leaf of its own: (result, wall seconds, CPU seconds of it and every descendant).

    Processes it left behind (SSH masters) are killed afterwards, once their CPU is read.
    """
    root = cgroup2_root()
    if root is None:
        raise BenchError("no cgroup2 hierarchy on this machine: cannot measure controller CPU")
    group = root / f"tierfleet-bench-{os.getpid()}-{name}"
    group.mkdir(exist_ok=True)
    procs = str(group / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as f:
            f.write("0\n")

    t0 = time.monotonic()
    try:
        try:
            result = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, timeout=timeout, preexec_fn=enter)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            result = subprocess.CompletedProcess(argv, 124, out)
        wall = time.monotonic() - t0
        cpu = _usage_usec(group) / 1e6
    finally:
        if (group / "cgroup.kill").exists():
            (group / "cgroup.kill").write_text("1\n")
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    return result, wall, cpu


def host_usage(lab: Lab, names: list[str]) -> dict[str, int]:
    """Per host: CPU microseconds of everything inside it, less its long-running services."""
    root = cgroup2_root()
    out = {}
    for name in names:
        payload = root / lab.id / name / "payload"
        out[name] = _usage_usec(payload) - sum(_usage_usec(payload / "system.slice" / s) for s in SERVICES)
    return out


# --- the lab -----------------------------------------------------------------------------------------------

def host_names(n: int) -> list[str]:
    return [f"h{i + 1:02d}" for i in range(n)]


def prereq_debs(cache: Path, log: Log) -> list[Path]:
    """The .debs of :data:`PREREQ_PACKAGES`, downloaded once into ``cache`` (``apt-get download``)."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob("*.deb"))
    if len(debs) >= len(PREREQ_PACKAGES):
        return debs
    log(f"bench: fetching {', '.join(PREREQ_PACKAGES)} for Ansible's managed-node needs")
    cmd = ["apt-get", "download", *PREREQ_PACKAGES]
    done = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        done = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"apt-get download {' '.join(PREREQ_PACKAGES)} failed: {done.stderr.strip()[-300:]}")
    return sorted(cache.glob("*.deb"))


def _ssh(lab: Lab, host: str, script: str, timeout: float = 120, stdin: bytes | None = None) -> str:
    done = subprocess.run(["ssh", "-F", str(lab.ssh.config), host, script], input=stdin, capture_output=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"{host}: {script[:60]}...: exit {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout.decode(errors="replace")


def prepare_hosts(lab: Lab, names: list[str], debs: list[Path]) -> None:
    """Install the prerequisite .debs on every host (streamed as one tar over SSH), all hosts at once."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for deb in debs:
            tar.add(deb, arcname=deb.name)
    data = buf.getvalue()
    script = ("d=$(mktemp -d) && tar -xf - -C \"$d\" && dpkg -i \"$d\"/*.deb >/dev/null && rm -rf \"$d\" && "
              "systemctl is-system-running --wait >/dev/null 2>&1; true")
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        list(pool.map(lambda h: _ssh(lab, h, script, 300, data), names))


def fresh_hosts(lab: Lab, n: int, debs: list[Path], log: Log) -> list[str]:
    names = host_names(n)
    lab.down()
    lab.up([(name, PROFILE) for name in names])
    lab.wait_running(timeout=180)
    prepare_hosts(lab, names, debs)
    log(f"bench: {n} fresh {PROFILE} host(s) up")
    return names


# --- the tools ---------------------------------------------------------------------------------------------

def ansible_inventory(lab: Lab, path: Path) -> Path:
    """An Ansible inventory of the lab's hosts with the same data ``inventory/lab.py`` gives pyinfra."""
    from tierfleet.artifacts import wheelhouse
    from tierfleet.catalog import load_catalog
    from tierfleet.lab.inventory import LAB_KEY, tierfleet_data
    from tierfleet.lab.profiles import get_profile

    from tierfleet.settings import KEYS, host_settings

    catalog = load_catalog()
    state = lab.store.load()
    hosts = {}
    for name, h in state.hosts.items():
        data = tierfleet_data(get_profile(h.profile, "bench"), lab.root)
        settings = host_settings({k: data.get(k) for k in KEYS}, catalog, f"bench: host {name}")
        model = settings.model
        hosts[name] = {
            "ansible_host": h.address,
            "artifact_store": settings.artifact_store.rstrip("/"),
            "artifact_key": str(lab.root / LAB_KEY),
            "runtime_release": f"{settings.runtime_version}+{settings.runtime_variant}",
            "model_name": f"{model.name}-{model.quant}",
            "model_version": str(settings.model_version),
            "model_release": f"{model.name}-{model.quant}-{settings.model_version}",
            "model_root": settings.model_dir.rstrip("/"),
            "runtime_port": settings.runtime_port,
            "health_timeout": settings.health_timeout,
            "keep_releases": settings.keep_releases,
            "power_profile": settings.power_profile,
        }
    basic = catalog.tier("basic")
    inventory = {"all": {"hosts": hosts, "vars": {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab.ssh.key),
        "ansible_ssh_common_args": f"-F {shlex.quote(str(lab.ssh.config))}",
        "ops_version": wheelhouse.ops_version(),
        "tier_name": basic.name,
        "tier_context_size": basic.runtime.context_size,
        "tier_gpu_layers": 0,
        "tier_parallel": basic.runtime.parallel,
        "tier_reserved_cores": basic.reserved_cores,
    }}}
    path.write_text(json.dumps(inventory, indent=1))
    return path


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_recap(output: str) -> dict[str, int]:
    """Sum of Ansible's PLAY RECAP over hosts (ValueError when there is none).

    >>> ansible_recap("h01 : ok=80 changed=3 unreachable=0 failed=0 skipped=1\\nh02 : ok=80 changed=0 unreachable=0 failed=1")
    {'hosts': 2, 'ok': 160, 'changed': 3, 'unreachable': 0, 'failed': 1}
    """
    rows = _RECAP.findall(output)
    if not rows:
        raise ValueError("ansible-playbook printed no PLAY RECAP")
    return {"hosts": len(rows), "ok": sum(int(r[1]) for r in rows), "changed": sum(int(r[2]) for r in rows),
            "unreachable": sum(int(r[3]) for r in rows), "failed": sum(int(r[4]) for r in rows)}


class Tools:
    """Runs each tool against the bench lab and measures it."""

    def __init__(self, lab: Lab, work: Path, log: Log) -> None:
        self.lab, self.work, self.log = lab, work, log
        self.bin = Path(sys.executable).parent
        self.env = dict(os.environ, TIERFLEET_LAB_DIR=str(lab.root), PYTHONUNBUFFERED="1")
        self.counter = 0

    def _measure(self, tool: str, kind: str, rep: int, names: list[str], argv: list[str],
                 env: dict[str, str], timeout: float) -> tuple[Run, str, int]:
        self.counter += 1
        before = host_usage(self.lab, names)
        result, wall, cpu = run_in_cgroup(argv, name=f"{self.counter}", env=env, cwd=REPO, timeout=timeout)
        after = host_usage(self.lab, names)
        log_file = self.work / f"{self.counter:03d}-{tool}-{kind}-n{len(names)}-r{rep}.log"
        log_file.write_text(result.stdout)
        run = Run(tool, len(names), kind, rep, wall, cpu / len(names),
                  [(after[h] - before[h]) / 1e6 for h in names])
        return run, result.stdout, result.returncode

    def tierfleet(self, kind: str, rep: int, names: list[str], timeout: float = 1800) -> Run:
        argv = [str(self.bin / "pyinfra"), "-y", "inventory/lab.py", "deploys/tier_basic.py"]
        run, out, rc = self._measure("tierfleet", kind, rep, names, argv, self.env, timeout)
        try:
            total = grand_total(out)
        except ValueError:
            total = {}
        run.changed = total.get("success")
        run.ok = rc == 0 and bool(total) and total["error"] == 0 and total["hosts"] > 0
        if not run.ok:
            run.note = f"pyinfra exit {rc}: {out.strip()[-400:]}"
        return run

    def ansible(self, kind: str, rep: int, names: list[str], timeout: float = 3600) -> Run:
        inventory = ansible_inventory(self.lab, self.work / "ansible-inventory.json")
        env = dict(self.env, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(self.work / "ansible-tmp"), ANSIBLE_HOME=str(self.work / "ansible-home"))
        argv = [str(self.bin / "ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / "tier_basic.yml"),
                "-f", str(len(names))]
        run, out, rc = self._measure("ansible", kind, rep, names, argv, env, timeout)
        try:
            recap = ansible_recap(out)
        except ValueError:
            recap = {}
        run.changed = recap.get("changed")
        run.ok = rc == 0 and bool(recap) and recap["failed"] == recap["unreachable"] == 0
        if not run.ok:
            run.note = f"ansible-playbook exit {rc}: {out.strip()[-400:]}"
        return run

    def status(self, rep: int, names: list[str], timeout: float = 600) -> Run:
        argv = [str(self.bin / "tierfleet"), "status", "-i", "inventory/lab.py", "--json"]
        run, out, rc = self._measure("tierfleet", "status", rep, names, argv, self.env, timeout)
        run.ok = rc == 0
        if not run.ok:
            run.note = f"tierfleet status exit {rc}: {out.strip()[-400:]}"
        return run


# --- the state each tool leaves --------------------------------------------------------------------------

RELEASE_ROOTS = ("/opt/tierfleet/runtime", "/var/lib/tierfleet/models", "/opt/tierfleet/ops")
DUMP = r"""
echo '## packages'; dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' | sort
echo '## files'
find /etc/systemd/system /etc/tierfleet-ops /etc/tmpfiles.d/tierfleet-ops.conf -printf '%p %y %m %u:%g %l\n' \
  2>/dev/null | sort
find /etc/systemd/system /etc/tierfleet-ops /etc/tmpfiles.d/tierfleet-ops.conf -type f -exec sha256sum {} + \
  2>/dev/null | sort -k2
find /run/tierfleet-ops -maxdepth 0 -printf '%p %y %m %u:%g\n' 2>&1
echo '## releases'
for r in ROOTS; do
  find "$r" -printf '%p %y %m %u:%g %s %l\n' 2>/dev/null | awk '$2 == "d" {$5 = "-"} {print}' | sort
  find "$r" -type f -exec sha256sum {} + 2>/dev/null | sort -k2
  for l in current previous; do echo "$r/$l -> $(readlink "$r/$l")"; done
done
echo '## ops'; echo "venv -> $(readlink /opt/tierfleet-ops/venv)"; /opt/tierfleet-ops/venv/bin/tierfleet-ops --version 2>&1
echo '## user'; getent passwd tierfleet | cut -d: -f1,6,7; id -Gn tierfleet; ls -d /nonexistent 2>&1
getent group tierfleet-ops | cut -d: -f1,4
echo '## units'
for u in llama-server.service tierfleet-ops.service; do echo "$u $(systemctl is-enabled $u) $(systemctl is-active $u)"; done
echo '## serving'; curl -s -o /dev/null -w '/health %{http_code}\n' --max-time 5 http://127.0.0.1:8080/health
""".replace("ROOTS", " ".join(RELEASE_ROOTS))


def dump_state(lab: Lab, names: list[str]) -> dict[str, list[str]]:
    """Each host's normalised state: the lines of :data:`DUMP` (no times, no host names)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        outs = list(pool.map(lambda h: _ssh(lab, h, DUMP, 300), names))
    return {h: out.splitlines() for h, out in zip(names, outs)}


def state_differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> list[str]:
    """Lines in one tool's dump of a host and not the other's (``-`` tierfleet, ``+`` Ansible), host by host.

    >>> state_differences({"h01": ["x", "y"]}, {"h01": ["x", "z"]})
    ['h01: - y', 'h01: + z']
    """
    out = []
    for host in sorted(set(a) | set(b)):
        left, right = a.get(host, []), b.get(host, [])
        out += [f"{host}: - {line}" for line in left if line not in set(right)]
        out += [f"{host}: + {line}" for line in right if line not in set(left)]
    return out


# --- the rows ----------------------------------------------------------------------------------------------

def stats(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def compare(lab: Lab, tools: Tools, sizes: list[int], reps: int, debs: list[Path], log: Log
            ) -> tuple[list[Run], dict]:
    """Row 1 and 2: both tools, each on fresh hosts, first converge then no-op, alternating; state compared."""
    runs: list[Run] = []
    checks = {}
    for n in sizes:
        for rep in range(reps):
            order = TOOLS if rep % 2 == 0 else TOOLS[::-1]
            dumps = {}
            for tool in order:
                names = fresh_hosts(lab, n, debs, log)
                converge = tools.tierfleet if tool == "tierfleet" else tools.ansible
                for kind in ("first", "noop"):
                    run = converge(kind, rep, names)
                    runs.append(run)
                    log(f"bench: {tool:9} N={n:<2} rep {rep + 1}/{reps} {kind:5} {run.wall_s:7.1f} s  "
                        f"controller {run.controller_cpu_s:5.2f} s/host  host {stats(run.host_cpu_s)['median']:5.2f} s"
                        f"  changed {run.changed}{'' if run.ok else '  FAILED'}")
                    if not run.ok:
                        raise BenchError(f"{tool} {kind} converge on {n} host(s) failed: {run.note}")
                    if kind == "noop" and run.changed:
                        raise BenchError(f"{tool}'s re-converge on {n} host(s) changed {run.changed} thing(s); "
                                         f"log in {tools.work}")
                if tool == "tierfleet":
                    status = tools.status(rep, names)
                    runs.append(status)
                if rep == 0:
                    dumps[tool] = dump_state(lab, names)
            if rep == 0:
                diff = state_differences(dumps["tierfleet"], dumps["ansible"])
                checks[n] = {"hosts": n, "same": not diff, "lines": len(next(iter(dumps["tierfleet"].values()))),
                             "differences": diff[:50]}
                log(f"bench: N={n}: states {'are the same' if not diff else 'DIFFER'} "
                    f"({checks[n]['lines']} lines per host)")
    lab.down()
    return runs, checks


def scale(lab: Lab, tools: Tools, sizes: list[int], reps: int, debs: list[Path], log: Log) -> list[Run]:
    """Row 3 for the sizes row 1 did not cover: tierfleet's first converge, no-op and status."""
    runs = []
    for n in sizes:
        for rep in range(reps):
            names = fresh_hosts(lab, n, debs, log)
            for kind in ("first", "noop"):
                run = tools.tierfleet(kind, rep, names)
                runs.append(run)
                log(f"bench: tierfleet N={n:<2} rep {rep + 1}/{reps} {kind:5} {run.wall_s:7.1f} s")
                if not run.ok:
                    raise BenchError(f"tierfleet {kind} converge on {n} host(s) failed: {run.note}")
            runs.append(tools.status(rep, names))
    lab.down()
    return runs


def summarise(runs: list[Run]) -> dict:
    """Medians, min-max and ratios per (N, kind), CPU per host, and the scale slopes."""
    by: dict[tuple[str, int, str], list[Run]] = {}
    for r in runs:
        by.setdefault((r.tool, r.n, r.kind), []).append(r)
    sizes = sorted({r.n for r in runs})
    compare_rows, cpu_rows, scale_rows = [], [], []
    for n in sizes:
        for kind in ("first", "noop"):
            t, a = by.get(("tierfleet", n, kind)), by.get(("ansible", n, kind))
            if t and a:
                ts, as_ = stats([r.wall_s for r in t]), stats([r.wall_s for r in a])
                goal = GOALS["first_ratio" if kind == "first" else "noop_ratio"]
                ratio = ts["median"] / as_["median"]
                compare_rows.append({"n": n, "kind": kind, "tierfleet": ts, "ansible": as_, "ratio": ratio,
                                     "goal": goal, "met": ratio <= goal})
        t, a = by.get(("tierfleet", n, "noop")), by.get(("ansible", n, "noop"))
        if t:
            row = {"n": n}
            for tool, rs in (("tierfleet", t), ("ansible", a)):
                if rs:
                    row[tool] = {"host_cpu_s": stats([x for r in rs for x in r.host_cpu_s]),
                                 "controller_cpu_s": stats([r.controller_cpu_s for r in rs])}
            row["met"] = {"host_cpu_s": row["tierfleet"]["host_cpu_s"]["median"] <= GOALS["host_cpu_s"],
                          "controller_cpu_s": row["tierfleet"]["controller_cpu_s"]["median"]
                          <= GOALS["controller_cpu_s"]}
            cpu_rows.append(row)
        row = {"n": n}
        for kind in ("first", "noop", "status"):
            rs = by.get(("tierfleet", n, kind))
            if rs:
                row[kind] = stats([r.wall_s for r in rs])
        if len(row) > 1:
            scale_rows.append(row)
    slopes = {}
    if len(scale_rows) >= 2:
        lo, hi = scale_rows[0], scale_rows[-1]
        for kind in ("first", "noop", "status"):
            if kind in lo and kind in hi:
                slopes[kind] = (hi[kind]["median"] - lo[kind]["median"]) / (hi["n"] - lo["n"])
        slopes["from"], slopes["to"] = lo["n"], hi["n"]
        if "noop" in slopes:
            slopes["noop_met"] = slopes["noop"] <= GOALS["noop_per_host_s"]
    return {"compare": compare_rows, "cpu": cpu_rows, "scale": scale_rows, "slopes": slopes}


def older_rows(log: Log, quick: bool) -> dict[str, str]:
    """Row 4: the daemon's own benchmark and bench/artifacts.py, their output as printed."""
    bin_dir = Path(sys.executable).parent
    cmds = {
        "tierfleet-ops bench": [str(bin_dir / "tierfleet-ops"), "bench", *(["--seconds", "10" if quick else "30"])],
        "bench/artifacts.py": [sys.executable, str(REPO / "bench" / "artifacts.py"),
                               *(["--size-mb", "32", "--level19-sample-mb", "4"] if quick else [])],
    }
    out = {}
    for name, argv in cmds.items():
        log(f"bench: {name}")
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600)
        out[name] = done.stdout.strip() if done.returncode == 0 else f"FAILED (exit {done.returncode}): " \
            f"{(done.stdout + done.stderr).strip()[-500:]}"
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "load_before": os.getloadavg()}


def versions() -> dict:
    from importlib.metadata import version

    out = {}
    for pkg in ("pyinfra", "ansible-core"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


# --- output ------------------------------------------------------------------------------------------------

def _mm(s: dict) -> str:
    return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def table(result: dict) -> str:
    """The figures as text: medians with [min-max], ratios against the goals."""
    s, m = result["summary"], result["machine"]
    lines = [f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, load {m['load_before'][0]:.1f} "
             f"before / {m['load_after'][0]:.1f} after; pyinfra {result['versions']['pyinfra']}, "
             f"ansible-core {result['versions']['ansible-core']}; {result['config']['reps']} rep(s)"]
    for src in result.get("sources", []):
        c = src["config"]
        lines.append(f"  run of sizes {','.join(map(str, c['sizes'])) or 'none'}, scale "
                     f"{','.join(map(str, c['scale_sizes']))}, {c['reps']} rep(s): load {src['load_before'][0]:.1f} "
                     f"before / {src['load_after'][0]:.1f} after")
    lines.append("")
    if s["compare"]:
        lines += ["1. tier_basic, tierfleet vs Ansible, same fresh cpu-server lab hosts; wall s, median [min-max]",
                  f"{'N':>3} {'run':6} {'tierfleet':>22} {'Ansible':>24} {'ratio':>7} {'goal':>7}"]
        for r in s["compare"]:
            lines.append(f"{r['n']:>3} {r['kind']:6} {_mm(r['tierfleet']):>22} {_mm(r['ansible']):>24} "
                         f"{r['ratio']:>6.3f}x {'<=' + str(r['goal']):>7} {'met' if r['met'] else 'MISSED'}")
        for n, c in sorted(result["state_check"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"    same state on {n} host(s): {'yes' if c['same'] else 'NO'} "
                         f"({c['lines']} lines of packages, files, releases with sha256, links, units, /health)")
            lines += [f"      {d}" for d in c["differences"][:10]]
        lines.append("")
    if s["cpu"]:
        lines += ["2. CPU per host of a no-op converge, s, median [min-max]",
                  f"{'N':>3} {'tool':10} {'managed host':>22} {'controller':>22}"]
        for r in s["cpu"]:
            for tool in TOOLS:
                if tool in r:
                    lines.append(f"{r['n']:>3} {tool:10} {_mm(r[tool]['host_cpu_s']):>22} "
                                 f"{_mm(r[tool]['controller_cpu_s']):>22}")
            th, tc = r["tierfleet"]["host_cpu_s"]["median"], r["tierfleet"]["controller_cpu_s"]["median"]
            ah = r["ansible"]["host_cpu_s"]["median"] if "ansible" in r else 0.0
            ac = r["ansible"]["controller_cpu_s"]["median"] if "ansible" in r else 0.0
            hr, cr = (f"{th / ah:.3f}x", f"{tc / ac:.3f}x") if "ansible" in r else ("-", "-")
            lines.append(f"{'':>3} {'ratio':10} {hr:>22} {cr:>22}   goals <= "
                         f"{GOALS['host_cpu_s']} s ({'met' if r['met']['host_cpu_s'] else 'MISSED'}), <= "
                         f"{GOALS['controller_cpu_s']} s ({'met' if r['met']['controller_cpu_s'] else 'MISSED'})")
        lines.append("")
    if s["scale"]:
        lines += ["3. tierfleet by fleet size; wall s, median [min-max]",
                  f"{'N':>3} {'first converge':>22} {'no-op':>22} {'tierfleet status':>22}"]
        for r in s["scale"]:
            lines.append(f"{r['n']:>3} " + " ".join(f"{_mm(r[k]) if k in r else '-':>22}"
                                                    for k in ("first", "noop", "status")))
        sl = s["slopes"]
        if sl:
            lines.append(f"    per extra host from {sl['from']} to {sl['to']}: first {sl.get('first', float('nan')):.2f} s, "
                         f"no-op {sl.get('noop', float('nan')):.2f} s (goal <= {GOALS['noop_per_host_s']}: "
                         f"{'met' if sl.get('noop_met') else 'MISSED'}), status {sl.get('status', float('nan')):.2f} s")
        lines.append("")
    for name, text in result.get("older", {}).items():
        lines += [f"4. {name}", *("    " + line for line in text.splitlines()), ""]
    return "\n".join(lines).rstrip() + "\n"


def chart(result: dict, path: Path) -> Path:
    """Three panels: wall time per tool (log scale, min-max bars), CPU per host, tierfleet by fleet size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    labels = [f"{r['kind']}\nN={r['n']}" for r in s["compare"]]
    xs = range(len(labels))
    for i, (tool, colour) in enumerate((("tierfleet", "tab:blue"), ("ansible", "tab:red"))):
        med = [r[tool]["median"] for r in s["compare"]]
        err = [[r[tool]["median"] - r[tool]["min"] for r in s["compare"]],
               [r[tool]["max"] - r[tool]["median"] for r in s["compare"]]]
        ax.bar([x + (i - 0.5) * 0.4 for x in xs], med, 0.4, yerr=err, capsize=3, color=colour,
               label="tierfleet (pyinfra)" if tool == "tierfleet" else "Ansible")
    for x, r in zip(xs, s["compare"]):
        ax.annotate(f"{r['ratio']:.2f}x", (x, r["ansible"]["max"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("wall time, s (log)")
    ax.set_title("tier_basic: tierfleet vs Ansible (ratio above)")
    ax.legend()

    ax = axes[1]
    labels, groups = [], []
    for r in s["cpu"]:
        for key, name in (("host_cpu_s", "managed host"), ("controller_cpu_s", "controller")):
            labels.append(f"{name}\nN={r['n']}")
            groups.append((r["tierfleet"][key]["median"],
                           r["ansible"][key]["median"] if "ansible" in r else float("nan")))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [g[0] for g in groups], 0.4, color="tab:blue", label="tierfleet")
    ax.bar([x + 0.2 for x in xs], [g[1] for g in groups], 0.4, color="tab:red", label="Ansible")
    ax.axhline(GOALS["host_cpu_s"], color="grey", ls="--", lw=0.8)
    ax.axhline(GOALS["controller_cpu_s"], color="grey", ls=":", lw=0.8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("CPU s per host, no-op converge")
    ax.set_title("CPU per host (goals dashed: host 1.0 s, dotted: controller 0.3 s)")
    ax.legend()

    ax = axes[2]
    for kind, style in (("first", "o-"), ("noop", "s-"), ("status", "^-")):
        pts = [(r["n"], r[kind]) for r in s["scale"] if kind in r]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1]["median"] for p in pts],
                        yerr=[[p[1]["median"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["median"] for p in pts]],
                        fmt=style, capsize=3, label={"first": "first converge", "noop": "no-op",
                                                     "status": "tierfleet status"}[kind])
    ax.set_xlabel("lab hosts")
    ax.set_ylabel("wall time, s")
    ax.set_title("tierfleet by fleet size")
    ax.legend()
    m = result["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cpus']} CPUs, load {m['load_before'][0]:.1f}; {result['config']['reps']} rep(s)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- entry point -------------------------------------------------------------------------------------------

def run_bench(*, sizes: list[int], scale_sizes: list[int], reps: int, out: Path, older: bool = True,
              quick_older: bool = False, lab_dir: Path | None = None, first_octet: int = 200,
              log: Log = print) -> dict:
    """Every row; writes ``bench.json``, ``bench.png`` and ``bench.txt`` under ``out`` and returns the result.

    The lab lives in ``lab_dir`` (default ``.cache/bench/lab``) on ``first_octet + 1`` onwards of the checkout's
    address block.
    """
    if os.geteuid() != 0:
        raise BenchError("the benchmark runs lab hosts: run it as root")
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        raise BenchError("ansible-playbook is not installed next to this Python: pip install -e '.[bench]'")
    from tierfleet.artifacts.llama_build import cached_runtime

    if cached_runtime(REPO / ".cache" / "runtime") is None:
        raise BenchError("no llama-server build in .cache/runtime: run `make runtime` first")
    out.mkdir(parents=True, exist_ok=True)
    started = machine()
    cache = REPO / ".cache" / "bench"
    debs = prereq_debs(cache / "debs", log)
    with address_block(first_octet):
        lab = Lab(lab_dir or cache / "lab", log=lambda m: None)
        runs: list[Run] = []
        checks: dict = {}
        try:
            with tempfile.TemporaryDirectory(prefix="tierfleet-bench-") as tmp:
                work = Path(tmp)
                (work / "ansible-tmp").mkdir()
                tools = Tools(lab, work, log)
                names = fresh_hosts(lab, 1, debs, log)
                del names
                from tierfleet.lab.artifacts import publish_lab_artifacts

                publish_lab_artifacts(lab.root, REPO / ".cache" / "runtime", log=lambda m: None)
                try:
                    got, checks = compare(lab, tools, sizes, reps, debs, log)
                    runs += got
                    runs += scale(lab, tools, [n for n in scale_sizes if n not in sizes], reps, debs, log)
                except BenchError:
                    kept = out / "logs"
                    kept.mkdir(exist_ok=True)
                    for f in work.glob("*.log"):
                        (kept / f.name).write_text(f.read_text())
                    raise
        finally:
            lab.down()
    result = {
        "machine": started,
        "versions": versions(),
        "config": {"sizes": sizes, "scale_sizes": scale_sizes, "reps": reps, "profile": PROFILE, "goals": GOALS},
        "runs": [asdict(r) for r in runs],
        "state_check": {str(k): v for k, v in checks.items()},
        "summary": summarise(runs),
    }
    if older:
        result["older"] = older_rows(log, quick_older)
    result["machine"]["load_after"] = os.getloadavg()
    write(result, out)
    return result


def combine(results: list[dict]) -> dict:
    """One result from several runs' ``bench.json`` (say the comparison on 3 hosts one day and the scale rows
    on 10 and 20 another): their runs summarised together, each source's machine and load kept.

    >>> a = {"machine": {"cpu": "x", "cpus": 2, "memory_gib": 24, "load_before": [1, 1, 1], "load_after": [2, 2, 2]},
    ...      "versions": {"pyinfra": "3"}, "config": {"reps": 2}, "runs": [], "state_check": {"3": {"same": True}}}
    >>> b = dict(a, config={"reps": 1}, state_check={}, machine=dict(a["machine"], load_after=[5, 5, 5]))
    >>> c = combine([a, b])
    >>> c["machine"]["load_before"], c["machine"]["load_after"], c["config"]["reps"], c["state_check"]
    ([1, 1, 1], [5, 5, 5], '1-2', {'3': {'same': True}})
    """
    if not results:
        raise BenchError("nothing to combine")
    for r in results:
        if not {"machine", "runs", "config", "versions"} <= set(r):
            raise BenchError(f"not a bench.json: missing {sorted({'machine', 'runs', 'config', 'versions'} - set(r))}")
    runs = [Run(**r) for res in results for r in res["runs"]]
    reps = sorted({int(v) for res in results for v in str(res["config"]["reps"]).split("-")})
    out = {
        "machine": dict(results[0]["machine"], load_after=results[-1]["machine"]["load_after"]),
        "versions": results[0]["versions"],
        "config": dict(results[0]["config"], reps=str(reps[0]) if len(reps) == 1 else f"{reps[0]}-{reps[-1]}"),
        "sources": [{"config": res["config"], "load_before": res["machine"]["load_before"],
                     "load_after": res["machine"]["load_after"]} for res in results],
        "runs": [asdict(r) for r in runs],
        "state_check": {k: v for res in results for k, v in res.get("state_check", {}).items()},
        "summary": summarise(runs),
    }
    older = {k: v for res in results for k, v in res.get("older", {}).items()}
    if older:
        out["older"] = older
    return out


def write(result: dict, out: Path) -> None:
    """``bench.json``, ``bench.png`` and ``bench.txt`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    chart(result, out / "bench.png")
    (out / "bench.txt").write_text(table(result))


def _sizes(text: str) -> list[int]:
    if text == "none":
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected host counts such as 3,10") from None
    if not values or any(v < 1 or v > 40 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: host counts are 1 to 40 (or none)")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/harness.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[3, 10],
                        help="host counts of rows 1-2 (default 3,10; none: tierfleet's scale rows only)")
    parser.add_argument("--scale", type=_sizes, default=[3, 10, 20], help="host counts of row 3 (default 3,10,20)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-older", action="store_true", help="skip row 4 (ops daemon, artifacts)")
    parser.add_argument("--quick-older", action="store_true", help="row 4 on small inputs")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="BENCH_JSON",
                        help="run nothing: summarise these runs' bench.json together into --out")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps: at least 1")
    if args.combine:
        try:
            loaded = []
            for path in args.combine:
                try:
                    loaded.append(json.loads(path.read_text()))
                except (OSError, ValueError) as exc:
                    raise BenchError(f"{path}: {exc}") from None
            result = combine(loaded)
            write(result, args.out)
        except (BenchError, KeyError, TypeError) as exc:
            print(f"bench: --combine: {exc}", file=sys.stderr)
            return 1
        print(table(result), end="")
        print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.png'}")
        return 0
    try:
        result = run_bench(sizes=args.sizes, scale_sizes=args.scale, reps=args.reps, out=args.out,
                           older=not args.no_older, quick_older=args.quick_older,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(table(result), end="")
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
