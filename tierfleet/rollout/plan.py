"""The order of a rollout's hosts and its batches.

``serial`` is Ansible's: a list of batch sizes, each a host count or a percentage of all hosts (rounded
down, at least one host); the last size repeats until every host has a batch.

>>> plan_batches([f"h{i}" for i in range(10)], parse_serial("1,30%,100%"))
[['h0'], ['h1', 'h2', 'h3'], ['h4', 'h5', 'h6', 'h7', 'h8', 'h9']]
>>> plan_batches(["a", "b", "c", "d", "e"], parse_serial("2"))
[['a', 'b'], ['c', 'd'], ['e']]
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from typing import Literal

from tierfleet.exceptions import ConfigError

Order = Literal["inventory", "group", "canary"]
ORDERS = ("inventory", "group", "canary")
_ITEM = re.compile(r"([1-9][0-9]{0,5})(%?)")


def parse_serial(text: str, source: str = "--serial") -> list[tuple[int, bool]]:
    """``"1,10%,100%"`` -> ``[(1, False), (10, True), (100, True)]`` (count or percent)."""
    out = []
    for item in (text or "").split(","):
        m = _ITEM.fullmatch(item.strip())
        if not m or (m.group(2) and int(m.group(1)) > 100):
            raise ConfigError(source, item.strip() or "(empty)",
                              "allowed: a comma list of host counts (>= 1) or percentages (1%..100%), e.g. 1,10%,100%")
        out.append((int(m.group(1)), bool(m.group(2))))
    return out


def batch_sizes(total: int, serial: list[tuple[int, bool]]) -> list[int]:
    """The size of each batch for ``total`` hosts (pure)."""
    sizes, left, i = [], total, 0
    while left > 0:
        value, pct = serial[min(i, len(serial) - 1)]
        size = max(1, total * value // 100) if pct else value
        sizes.append(min(size, left))
        left -= sizes[-1]
        i += 1
    return sizes


def plan_batches(hosts: list[str], serial: list[tuple[int, bool]]) -> list[list[str]]:
    """Cut ordered ``hosts`` into batches."""
    out, start = [], 0
    for size in batch_sizes(len(hosts), serial):
        out.append(hosts[start:start + size])
        start += size
    return out


def order_hosts(hosts: list[tuple[str, tuple[str, ...]]], order: Order = "inventory",
                canaries: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(canary hosts, the other hosts), each in rollout order.

    ``hosts`` are ``(name, groups)`` in inventory order; ``canaries`` are host or group names or glob
    patterns. ``group`` keeps each group's hosts together, groups in the order they first appear.
    """
    if order not in ORDERS:
        raise ConfigError("--order", order, f"allowed: {', '.join(ORDERS)}")
    names = [name for name, _ in hosts]
    picked = [name for name, groups in hosts
              if any(fnmatch(name, p) or any(fnmatch(g, p) for g in groups) for p in canaries)]
    if canaries and not picked:
        raise ConfigError("--canary", ", ".join(canaries), "names no host or group of the inventory")
    if order == "canary" and not picked:
        raise ConfigError("--order", "canary", "needs --canary HOST (or group, or glob)")
    rest = [name for name in names if name not in picked]
    if order == "group":
        first_group = {name: (groups[0] if groups else "") for name, groups in hosts}
        group_rank = {}
        for name in names:
            group_rank.setdefault(first_group[name], len(group_rank))
        rest.sort(key=lambda name: (group_rank[first_group[name]], names.index(name)))
    return picked, rest


def plan(hosts: list[tuple[str, tuple[str, ...]]], serial: list[tuple[int, bool]], order: Order = "inventory",
         canaries: tuple[str, ...] = ()) -> list[list[str]]:
    """Batches: the canary hosts as their own first batch, then the others cut by ``serial``."""
    picked, rest = order_hosts(hosts, order, canaries)
    return ([picked] if picked else []) + plan_batches(rest, serial)
