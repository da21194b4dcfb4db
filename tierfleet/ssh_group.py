"""Run one command per host on many hosts at once with fabric's ``ThreadingGroup``, in a process of its own.

Loading a pyinfra inventory imports ``pyinfra_cli``, which monkey-patches the interpreter with gevent; fabric
and invoke deadlock under that patch. So the controller describes the hosts and commands as JSON and runs this
module as a child process (:func:`run_group`), which imports neither pyinfra nor gevent::

    python -m tierfleet.ssh_group < jobs.json > results.json

A job is ``{"name", "hostname", "port", "user", "key", "password", "known_hosts", "strict", "command"}``; a
result is ``{"name", "ok", "stdout", "exit", "error"}``. Each host gets ``timeout`` seconds to connect, and
as long again to answer; hosts that run the same command form one group, and the groups run at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _connection(job: dict[str, Any], timeout: float):
    from fabric import Connection
    from paramiko import AutoAddPolicy, RejectPolicy

    kwargs: dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
    if job.get("key"):
        kwargs.update(key_filename=job["key"], look_for_keys=False, allow_agent=False)
    if job.get("password"):
        kwargs["password"] = job["password"]
    conn = Connection(job["hostname"], user=job.get("user"), port=int(job.get("port") or 22),
                      connect_timeout=timeout, connect_kwargs=kwargs)
    if job.get("known_hosts"):
        conn.client.load_host_keys(job["known_hosts"])
    conn.client.set_missing_host_key_policy(RejectPolicy() if job.get("strict") else AutoAddPolicy())
    return conn


def _reason(exc: BaseException | None, timeout: float) -> str:
    from invoke.exceptions import CommandTimedOut

    if exc is None:
        return "no result"
    if isinstance(exc, CommandTimedOut):
        return f"no answer within {timeout:g}s"
    text = str(exc) or type(exc).__name__
    if "timed out" in text.lower():
        return f"no answer within {timeout:g}s ({text})"
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def gather(jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Run every job; results in the jobs' order."""
    from fabric import ThreadingGroup
    from fabric.exceptions import GroupException

    by_command: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for job in jobs:
        by_command.setdefault(job["command"], []).append((job, _connection(job, timeout)))

    def run(command: str, members):
        group = ThreadingGroup.from_connections([conn for _, conn in members])
        try:
            return members, group.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except GroupException as exc:
            return members, exc.result

    results: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(by_command))) as pool:
        for members, outcome in pool.map(lambda item: run(*item), by_command.items()):
            for job, conn in members:
                res = outcome.get(conn)
                if res is None or isinstance(res, BaseException):
                    results[job["name"]] = {"name": job["name"], "ok": False, "stdout": "", "exit": None,
                                            "error": _reason(res, timeout)}
                else:
                    results[job["name"]] = {"name": job["name"], "ok": True, "stdout": res.stdout,
                                            "exit": res.exited, "error": None}
                conn.close()
    return [results[job["name"]] for job in jobs]


def run_group(jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """:func:`gather` in a child process (free of gevent); an outer limit of twice ``timeout`` plus slack."""
    proc = subprocess.run([sys.executable, "-m", "tierfleet.ssh_group"], input=json.dumps(
        {"jobs": jobs, "timeout": timeout}), capture_output=True, text=True, timeout=2 * timeout + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"tierfleet.ssh_group failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def main() -> None:
    request = json.load(sys.stdin)
    json.dump(gather(request["jobs"], float(request["timeout"])), sys.stdout)


if __name__ == "__main__":
    main()
