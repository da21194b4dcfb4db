"""The health gate of a tier deploy: the model server answers, or the host goes back to what served before."""

from __future__ import annotations

from shlex import quote

from pyinfra.api import operation


def health_script(port: int, timeout: int, unit: str, restore: dict[str, str], restart: bool = True) -> str:
    """Shell that (re)starts ``unit`` and waits for ``GET /health`` = 200 and one real completion.

    On failure every release root in ``restore`` whose ``current`` no longer points at the target it had
    before this run (the value) goes back to that target; roots this run did not switch, and roots that had
    no release before (an empty value), stay as they are. Then ``unit`` restarts and the script exits 1.

    >>> "curl -fsS --max-time 2 http://127.0.0.1:8080/health" in health_script(8080, 60, "llama-server", {})
    True
    """
    base = f"http://127.0.0.1:{int(port)}"
    body = '{"prompt": "Hello", "n_predict": 8}'
    rollback = " ".join(
        f"( cd {quote(root)} && flock -w 60 9 && "
        f'if [ "$(readlink current)" != {quote(target)} ]; then '
        f"ln -sfn {quote(target)} current.tmp && mv -T current.tmp current && sync -- .; fi ) 9>{quote(root + '/.lock')};"
        for root, target in sorted(restore.items())
        if target
    )
    message = (f"tierfleet: health gate failed: {base} gave no /health 200 and completion within "
               f"{int(timeout)}s; returning to the release that served before")
    start = f"systemctl restart {quote(unit)} && " if restart else ""
    return (
        f"ok=0; if {start}true; then "
        f"end=$(( $(date +%s) + {int(timeout)} )); "
        f"while [ $(date +%s) -lt $end ]; do "
        f"if curl -fsS --max-time 2 {base}/health >/dev/null 2>&1 && "
        f"curl -fsS --max-time 10 -H 'Content-Type: application/json' -d {quote(body)} {base}/completion "
        f"| grep -q '\"content\"'; then ok=1; break; fi; sleep 0.5; done; fi; "
        f"if [ $ok = 1 ]; then exit 0; fi; "
        f"echo {quote(message)} >&2; "
        f"{rollback} systemctl restart {quote(unit)}; exit 1"
    )


@operation(is_idempotent=False)
def healthy(port: int, timeout: int = 120, unit: str = "llama-server.service",
            restore: dict[str, str] | None = None, restart: bool = True):
    """Restart the model server and wait for ``/health`` and one completion; on failure put back what served.

    + port: llama-server port on 127.0.0.1
    + timeout: seconds to wait
    + unit: the systemd unit to (re)start
    + restore: release root -> the ``current`` target it had before this run ("" when it had none)
    + restart: restart ``unit`` first (a failed restart counts as a failed gate)

    Run it only when something changed (``_if=...``): on an unchanged host it is not needed, and a
    converged rerun reports no change.
    """
    yield health_script(port, timeout, unit, restore or {}, restart)
