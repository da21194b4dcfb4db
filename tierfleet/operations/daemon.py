"""Install the ops daemon into its own venv from a verified wheelhouse release."""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import operation

from tierfleet.facts.ops import OpsInstalled


@operation()
def installed(venv: str, wheels: str, version: str):
    """Make ``venv`` hold ``tierfleet-ops==version``, installed offline from the wheels in ``wheels``.

    + venv: the path the unit runs from: a link to ``<venv>s/<version>`` (a venv per version)
    + wheels: directory of wheels (the ops release's ``wheels/``)
    + version: the package version wanted

    The new venv is built beside the running one and the link switched only after pip succeeded, so a
    failed install leaves the running daemon's venv whole.
    """
    if host.get_fact(OpsInstalled, venv=venv) == version:
        host.noop(f"tierfleet-ops {version} installed in {venv}")
        return
    target = f"{venv}s/{version}"
    yield (
        f"python3 -m venv --clear {quote(target)} && "
        f"{quote(target + '/bin/pip')} install --quiet --no-index --find-links {quote(wheels)} "
        f"{quote('tierfleet-ops==' + version)} && "
        f"ln -sfn {quote(target)} {quote(venv + '.tmp')} && mv -T {quote(venv + '.tmp')} {quote(venv)}"
    )


@operation(is_idempotent=False)
def answering(cli: str, timeout: int = 30):
    """Wait up to ``timeout`` s for the ops daemon to answer ``status`` with its policy loaded.

    + cli: the ``tierfleet-ops`` program in the daemon's venv

    Same as ``tierfleet-ops status --json`` by hand. Fails the host when the daemon does not answer (it
    is part of a tier deploy's health gate).
    """
    message = f"tierfleet: ops daemon health: {cli} status gave no answer within {int(timeout)}s"
    yield (f"end=$(( $(date +%s) + {int(timeout)} )); while [ $(date +%s) -lt $end ]; do "
           f"if {quote(cli)} status --json >/dev/null 2>&1; then exit 0; fi; sleep 0.5; done; "
           f"echo {quote(message)} >&2; exit 1")


#: the daemon's policy on a host, and the copy a rollout keeps of the one before
POLICY = "/etc/tierfleet-ops/policy.yaml"
PREVIOUS = POLICY + ".prev"


def _loaded(python: str, cli: str, expected: str, knobs: bool = True) -> str:
    """Shell test: the daemon runs the policy whose hash is ``expected`` (``$h`` when empty) without error,
    and (with ``knobs``) its last profile change applied every knob."""
    check = ("import json, sys; s = json.load(sys.stdin); p = s.get('policy') or {}; "
             "bad = [o for o in s.get('last_apply') or [] if o.get('status') in ('failed', 'verify-failed')]; "
             f"sys.exit(0 if p.get('hash') == sys.argv[1] and not p.get('error') and {'not bad' if knobs else 'True'} "
             "else 1)")
    want = quote(expected) if expected else '"$h"'
    return f"{quote(cli)} status --json 2>/dev/null | {quote(python)} -c {quote(check)} {want}"


def _explain(python: str, cli: str, what: str) -> str:
    """Shell: one ``tierfleet:`` line on stderr with ``what`` and what the daemon reports (policy hash and
    error, knobs its last profile change could not apply), so a failed check says why."""
    show = ("import json, sys\n"
            "try:\n s = json.load(sys.stdin)\nexcept ValueError:\n print('no status from the daemon'); sys.exit()\n"
            "p = s.get('policy') or {}\n"
            "bad = ['%s: %s' % (o.get('knob'), o.get('note') or o.get('status')) for o in s.get('last_apply') or []"
            " if o.get('status') in ('failed', 'verify-failed')]\n"
            "print('the daemon reports policy %s%s%s' % (p.get('hash'), '; policy error: %s' % p['error'] "
            "if p.get('error') else '', '; knobs not applied: ' + ', '.join(bad) if bad else ''))")
    return (f"printf '%s; %s\\n' {quote(what)} \"$({quote(cli)} status --json 2>/dev/null | "
            f"{quote(python)} -c {quote(show)} 2>&1 | head -c 600 | tr '\\n' ' ')\" >&2")


@operation(is_idempotent=False)
def policy_applied(text: str, expected_hash: str, cli: str, python: str, port: int, timeout: int = 60):
    """Install a policy, reload the daemon, and check it runs it; otherwise put the previous one back.

    + text: the policy file's content
    + expected_hash: the hash the daemon reports for it (:func:`tierfleet_ops.policy.parse_policy`)
    + cli, python: ``tierfleet-ops`` and the Python of the daemon's venv
    + port: the runtime's port on 127.0.0.1 (it must still answer ``/health``)

    The running policy is kept as ``policy.yaml.prev``; the new one is checked on the host
    (``tierfleet-ops check-policy``) before it replaces anything. Fails the host, after restoring and reloading
    the previous policy, when the daemon does not report the new hash with every knob applied, or the runtime
    stops answering, within ``timeout`` seconds.
    """
    new = POLICY + ".new"
    fail = (_explain(python, cli, f"tierfleet: policy rollout: the daemon did not run policy {expected_hash} with "
                                  f"every knob applied and a healthy runtime within {int(timeout)}s; the previous "
                                  "policy is back") + "; "
            f"cp -p {quote(PREVIOUS)} {quote(POLICY)} && systemctl reload tierfleet-ops.service; exit 1")
    yield (
        f"set -u; printf '%s' {quote(text)} > {quote(new)} && "
        f"{quote(cli)} check-policy {quote(new)} >/dev/null || {{ rm -f {quote(new)}; "
        f"echo {quote('tierfleet: policy rollout: the host refused the policy (tierfleet-ops check-policy)')} >&2; "
        f"exit 1; }}; "
        f"cp -p {quote(POLICY)} {quote(PREVIOUS)} && mv -f {quote(new)} {quote(POLICY)} && "
        "systemctl reload tierfleet-ops.service || { " + fail + "; }; "
        f"end=$(( $(date +%s) + {int(timeout)} )); ok=0; while [ $(date +%s) -lt $end ]; do "
        f"if {_loaded(python, cli, expected_hash)} && curl -fsS --max-time 2 http://127.0.0.1:{int(port)}/health "
        ">/dev/null 2>&1; then ok=1; break; fi; sleep 0.5; done; "
        f"if [ $ok = 1 ]; then exit 0; fi; {fail}"
    )


@operation(is_idempotent=False)
def policy_reverted(cli: str, python: str, timeout: int = 60):
    """Put the policy a rollout replaced (``policy.yaml.prev``) back, reload, and check the daemon runs it.

    The check is the policy's hash without error, not every knob: a knob the previous policy could not apply
    either is that policy's state, which the revert restores rather than judges."""
    yield (
        f"[ -f {quote(PREVIOUS)} ] || {{ echo {quote('tierfleet: policy revert: no previous policy kept')} >&2; "
        "exit 1; }; "
        rf"h=$({quote(cli)} check-policy {quote(PREVIOUS)} | sed -n 's/.*policy \([0-9a-f]*\),.*/\1/p'); "
        f"cp -p {quote(PREVIOUS)} {quote(POLICY)} && systemctl reload tierfleet-ops.service && "
        f"end=$(( $(date +%s) + {int(timeout)} )); while [ $(date +%s) -lt $end ]; do "
        f"if {_loaded(python, cli, '', knobs=False)}; then exit 0; fi; sleep 0.5; done; "
        + _explain(python, cli, f"tierfleet: policy revert: the daemon did not run the previous policy within "
                                f"{int(timeout)}s") + "; exit 1"
    )
