"""System facts: memory, free disk at a path, OS release."""

from __future__ import annotations

import shlex
from typing import TypedDict

from pyinfra.api import FactBase

from tierfleet.facts._util import parse_key_values, to_int


def parse_meminfo(lines: list[str]) -> dict[str, int]:
    """Parse ``/proc/meminfo`` into bytes per key (``kB`` values are multiplied by 1024).

    >>> parse_meminfo(["MemTotal:       24598032 kB", "HugePages_Total:       0", "garbage"])
    {'MemTotal': 25188384768, 'HugePages_Total': 0}
    """
    values: dict[str, int] = {}
    for line in lines:
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        number = to_int(parts[0])
        if number is None:
            continue
        values[key.strip()] = number * 1024 if parts[1:2] == ["kB"] else number
    return values


class MemInfo(FactBase[dict[str, int]]):
    """``/proc/meminfo`` in bytes: ``MemTotal``, ``MemAvailable``, ... (empty dict if unreadable)."""

    @staticmethod
    def default() -> dict[str, int]:
        return {}

    def command(self) -> str:
        return "cat /proc/meminfo 2>/dev/null; true"

    def process(self, output: list[str]) -> dict[str, int]:
        return parse_meminfo(output)


class DiskSpace(TypedDict):
    #: the path asked for, and the nearest existing directory that was measured
    path: str
    measured: str
    mount: str
    total: int
    free: int


def parse_df(lines: list[str]) -> DiskSpace | None:
    """Parse ``path=``/``measured=`` lines followed by ``df -Pk`` output; ``None`` when garbled.

    >>> space = parse_df(["path=/var/lib/tierfleet/models", "measured=/var/lib",
    ...                   "Filesystem     1024-blocks     Used Available Capacity Mounted on",
    ...                   "/dev/vda        263174212 23154408 229227284      10% /"])
    >>> space["free"], space["mount"]
    (234728738816, '/')
    """
    header = parse_key_values(lines[:2])
    rows = [line.split() for line in lines if not line.startswith(("path=", "measured=", "Filesystem"))]
    rows = [row for row in rows if len(row) >= 6]
    if not rows:
        return None
    row = rows[-1]
    total, available = to_int(row[1]), to_int(row[3])
    if total is None or available is None:
        return None
    return DiskSpace(
        path=header.get("path", ""),
        measured=header.get("measured", ""),
        mount=" ".join(row[5:]),
        total=total * 1024,
        free=available * 1024,
    )


class DiskFree(FactBase[DiskSpace | None]):
    """Free space for ``path``, measured at its nearest existing parent (``df -Pk``)."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"p={quoted}; echo \"path=$p\"; "
            'while [ ! -d "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done; '
            'echo "measured=$p"; df -Pk -- "$p" 2>/dev/null; true'
        )

    def process(self, output: list[str]) -> DiskSpace | None:
        return parse_df(output)


class OsRelease(FactBase[dict[str, str]]):
    """``/etc/os-release`` as a dict (``ID``, ``VERSION_ID``, ``PRETTY_NAME``, ...) plus ``ARCH`` (uname -m)."""

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null; echo \"ARCH=$(uname -m)\"; true"

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_key_values(output)


class Account(FactBase[dict | None]):
    """One local account: ``{"name", "uid", "gid", "home", "shell", "group", "groups", "group_exists"}``, or
    ``{"group_exists": bool}`` alone when there is no such user (a group of that name may exist without it).

    + user: the account name

    Same as ``getent passwd USER; getent group USER; id -gn USER; id -Gn USER``: one command and a few forks,
    where pyinfra's ``server.Users`` reads every account on the host with several forks each.
    ``groups`` are the supplementary groups (the primary one left out).
    """

    @staticmethod
    def default() -> dict:
        return {"group_exists": False}

    def command(self, user: str) -> str:
        q = shlex.quote(user)
        return (f"printf 'passwd\\t%s\\n' \"$(getent passwd {q})\"; printf 'group\\t%s\\n' \"$(getent group {q})\"; "
                f"printf 'primary\\t%s\\n' \"$(id -gn {q} 2>/dev/null)\"; "
                f"printf 'groups\\t%s\\n' \"$(id -Gn {q} 2>/dev/null)\"; true")

    def process(self, output: list[str]) -> dict:
        fields = dict(line.split("\t", 1) for line in output if "\t" in line)
        value: dict = {"group_exists": bool(fields.get("group", "").strip())}
        passwd = fields.get("passwd", "").strip().split(":")
        if len(passwd) != 7 or to_int(passwd[2]) is None or to_int(passwd[3]) is None:
            return value
        primary = fields.get("primary", "").strip()
        value.update(name=passwd[0], uid=to_int(passwd[2]), gid=to_int(passwd[3]), home=passwd[5], shell=passwd[6],
                     group=primary or None,
                     groups=sorted(set(fields.get("groups", "").split()) - {primary}))
        return value
