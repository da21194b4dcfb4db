"""The health gate of a tier deploy: the model server answers, or the host goes back to what served before."""

from __future__ import annotations

from shlex import quote

from pyinfra.api import operation


def health_script(port: int, timeout: int, unit: str, roots: list[str]) -> str:
    """Shell that waits for ``GET /health`` = 200 and one real completion; on failure it re-points every
    release root's ``current`` at its ``previous`` (when there is one), restarts ``unit`` and exits 1.

    >>> "curl -fsS --max-time 2 http://127.0.0.1:8080/health" in health_script(8080, 60, "llama-server", ["/m"])
    True
    """
    base = f"http://127.0.0.1:{int(port)}"
    body = '{"prompt": "Hello", "n_predict": 8}'
    rollback = " ".join(
        f'if [ -L {quote(r + "/previous")} ]; then '
        f'ln -sfn "$(readlink {quote(r + "/previous")})" {quote(r + "/current.tmp")} && '
        f'mv -T {quote(r + "/current.tmp")} {quote(r + "/current")}; fi;'
        for r in roots
    )
    return (
        f"end=$(( $(date +%s) + {int(timeout)} )); ok=0; "
        f"while [ $(date +%s) -lt $end ]; do "
        f"if curl -fsS --max-time 2 {base}/health >/dev/null 2>&1 && "
        f"curl -fsS --max-time 30 -H 'Content-Type: application/json' -d {quote(body)} {base}/completion "
        f"| grep -q '\"content\"'; then ok=1; break; fi; sleep 0.5; done; "
        f'if [ $ok = 1 ]; then exit 0; fi; '
        f"echo {quote(f'tierfleet: health gate failed: {base} gave no /health 200 and completion within {int(timeout)}s; returning to the previous release')} >&2; "
        f"{rollback} systemctl restart {quote(unit)}; exit 1"
    )


@operation(is_idempotent=False)
def healthy(port: int, timeout: int = 120, unit: str = "llama-server.service", roots: list[str] | None = None):
    """Wait for the model server to answer ``/health`` and one completion; roll back and fail otherwise.

    + port: llama-server port on 127.0.0.1
    + timeout: seconds to wait
    + unit: the systemd unit to restart after a rollback
    + roots: release roots (runtime, model) whose ``current`` goes back to ``previous`` on failure

    Run it only when something changed (``_if=...``): on an unchanged host it is not needed, and a
    converged rerun reports no change.
    """
    yield health_script(port, timeout, unit, roots or [])
