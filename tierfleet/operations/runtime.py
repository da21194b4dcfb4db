"""The health gate of a tier deploy: the model server answers, or the host goes back to what served before."""

from __future__ import annotations

import json
from shlex import quote

from pyinfra.api import operation


def restore_links(restore: dict[str, str]) -> str:
    """Shell that points each root's ``current`` back at its target (the value), under the root's lock.

    Roots with an empty target (no release before) are left alone.

    >>> restore_links({"/srv/m": "releases/m-1"}).startswith("( cd /srv/m && flock -w 60 9 && ")
    True
    """
    return " ".join(
        f"( cd {quote(root)} && flock -w 60 9 && "
        f'if [ "$(readlink current)" != {quote(target)} ]; then '
        f"ln -sfn {quote(target)} current.tmp && mv -T current.tmp current && sync -- .; fi ) 9>{quote(root + '/.lock')};"
        for root, target in sorted(restore.items())
        if target
    )


def wait_script(port: int, timeout: int, model: str | None = None) -> str:
    """Shell that waits up to ``timeout`` s for ``GET /health`` = 200 and one real completion; sets ``ok=1``.

    With ``model`` (a router serving model shards) the completion names that shard and asks the router to
    load it (``?autoload=true``).

    >>> "autoload=true" in wait_script(8081, 60, "chat") and '"model": "chat"' in wait_script(8081, 60, "chat")
    True
    """
    base = f"http://127.0.0.1:{int(port)}"
    body = json.dumps({"prompt": "Hello", "n_predict": 8, **({"model": model} if model else {})})
    completion = f"{base}/completion" + ("?autoload=true" if model else "")
    return (
        f"end=$(( $(date +%s) + {int(timeout)} )); "
        f"while [ $(date +%s) -lt $end ]; do "
        f"if curl -fsS --max-time 2 {base}/health >/dev/null 2>&1 && "
        f"curl -fsS --max-time 10 -H 'Content-Type: application/json' -d {quote(body)} {quote(completion)} "
        f"| grep -q '\"content\"'; then ok=1; break; fi; sleep 0.5; done"
    )


def health_script(port: int, timeout: int, unit: str, restore: dict[str, str], restart: bool = True,
                  model: str | None = None) -> str:
    """Shell that (re)starts ``unit`` and waits for ``GET /health`` = 200 and one real completion.

    On failure every release root in ``restore`` whose ``current`` no longer points at the target it had
    before this run (the value) goes back to that target; roots this run did not switch, and roots that had
    no release before (an empty value), stay as they are. Then ``unit`` restarts and the script exits 1.

    >>> "curl -fsS --max-time 2 http://127.0.0.1:8080/health" in health_script(8080, 60, "llama-server", {})
    True
    """
    base = f"http://127.0.0.1:{int(port)}"
    message = (f"tierfleet: health gate failed: {base} gave no /health 200 and completion within "
               f"{int(timeout)}s; returning to the release that served before")
    start = f"systemctl restart {quote(unit)} && " if restart else ""
    return (
        f"ok=0; if {start}true; then {wait_script(port, timeout, model)}; fi; "
        f"if [ $ok = 1 ]; then exit 0; fi; "
        f"echo {quote(message)} >&2; "
        f"{restore_links(restore)} systemctl restart {quote(unit)}; exit 1"
    )


@operation(is_idempotent=False)
def healthy(port: int, timeout: int = 120, unit: str = "llama-server.service",
            restore: dict[str, str] | None = None, restart: bool = True, model: str | None = None):
    """Restart the model server and wait for ``/health`` and one completion; on failure put back what served.

    + port: llama-server port on 127.0.0.1
    + timeout: seconds to wait
    + unit: the systemd unit to (re)start
    + restore: release root -> the ``current`` target it had before this run ("" when it had none)
    + restart: restart ``unit`` first (a failed restart counts as a failed gate)
    + model: the shard the completion names (a router serving model shards), loaded for it

    Run it only when something changed (``_if=...``): on an unchanged host it is not needed, and a
    converged rerun reports no change.
    """
    yield health_script(port, timeout, unit, restore or {}, restart, model)


@operation(is_idempotent=False)
def restored(restore: dict[str, str], port: int, timeout: int = 120, unit: str = "llama-server.service",
             units: list[str] | None = None):
    """Put every root's ``current`` back to what served before, restart, and check the model server answers.

    + restore: release root -> the ``current`` target it had before (roots with "" are left alone)
    + units: other units to restart after the links moved back (e.g. the ops daemon when its release moved)

    What a rollout runs on a host whose upgrade failed after something was switched; fails the host when the
    restored release does not answer either.
    """
    message = (f"tierfleet: rollback failed: after restoring the releases that served before, "
               f"http://127.0.0.1:{int(port)} gave no /health 200 and completion within {int(timeout)}s")
    restarts = " && ".join(f"systemctl restart {quote(u)}" for u in [*(units or []), unit])
    yield (f"{restore_links(restore)} ok=0; if {restarts}; then {wait_script(port, timeout)}; fi; "
           f"if [ $ok = 1 ]; then exit 0; fi; echo {quote(message)} >&2; exit 1")
