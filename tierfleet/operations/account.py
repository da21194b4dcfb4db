"""The service account: a system user for a unit's ``User=``/``Group=``, without a home directory."""

from __future__ import annotations

import re
from shlex import quote

from pyinfra import host
from pyinfra.api import OperationValueError, operation

from tierfleet.facts.system import Account

_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@operation()
def system_user(user: str, shell: str = "/usr/sbin/nologin", home: str = "/nonexistent",
                groups: list[str] | None = None):
    """A system account ``user`` (and its group of the same name) with ``shell``, ``home`` and supplementary
    ``groups`` exactly.

    + user: the account name (``[a-z_][a-z0-9_-]{0,31}``)
    + shell: its login shell (a service account: ``nologin``)
    + home: its home directory as written in ``passwd``; never created (``/nonexistent`` by convention)
    + groups: supplementary groups; None leaves them as they are

    Unlike ``server.user`` it reads only this account (one command) and never makes the home directory, which
    for ``/nonexistent`` would make that path exist and belong to the service.
    """
    for what, name in [("user", user), *(("groups", g) for g in groups or [])]:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise OperationValueError(f"{what}: {name!r} is not allowed; expected [a-z_][a-z0-9_-]{{0,31}}")
    for what, path in (("shell", shell), ("home", home)):
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\n\0:"):
            raise OperationValueError(f"{what}: {path!r} is not allowed; expected an absolute path without ':'")
    wanted = sorted(set(groups)) if groups is not None else None
    account = host.get_fact(Account, user=user)
    if "uid" not in account:
        args = ["useradd", "-r", "-M", "-d", quote(home), "-s", quote(shell)]
        if account["group_exists"]:
            args += ["-g", quote(user)]
        if wanted:
            args += ["-G", quote(",".join(wanted))]
        yield " ".join([*args, quote(user)])
        return
    mods = []
    if account["home"] != home:
        mods += ["-d", quote(home)]
    if account["shell"] != shell:
        mods += ["-s", quote(shell)]
    if wanted is not None and account["groups"] != wanted:
        mods += ["-G", quote(",".join(wanted))]
    if not mods:
        host.noop(f"system user {user} exists")
        return
    yield " ".join(["usermod", *mods, quote(user)])
