"""Which hosts a lab has: names and profiles from the command line, and their SSH addresses (pure).

>>> parse_hosts("a:jetson-nano,b:cpu-server")
[('a', 'jetson-nano'), ('b', 'cpu-server')]
>>> [p for _, p in cycle_spec(3)]
['jetson-orin-nano', 'jetson-nano', 'cpu-server']
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from tierfleet.exceptions import ConfigError
from tierfleet.lab.profiles import PROFILES, get_profile

HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
ADDR_BASE_ENV = "TIERFLEET_LAB_ADDR_BASE"


def parse_hosts(text: str, source: str = "--hosts") -> list[tuple[str, str]]:
    """Parse ``name:profile,...`` into pairs, checking names and profiles."""
    out: list[tuple[str, str]] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, profile = item.partition(":")
        if not sep:
            raise ConfigError(source, item, "expected name:profile")
        if not HOSTNAME_RE.fullmatch(name):
            raise ConfigError(source, name, "host names are 1-32 of a-z, 0-9 and '-' (not at the ends)")
        get_profile(profile, source)
        if name in {n for n, _ in out}:
            raise ConfigError(source, name, "host name given twice")
        out.append((name, profile))
    if not out:
        raise ConfigError(source, "(empty)", "no hosts given")
    return out


def default_spec() -> list[tuple[str, str]]:
    """One host per profile, named after it."""
    return [(name, name) for name in PROFILES]


def cycle_spec(n: int) -> list[tuple[str, str]]:
    """``n`` hosts ``lab-01`` ... cycling through the profiles."""
    if n < 1 or n > 200:
        raise ConfigError("-n", str(n), "between 1 and 200 hosts")
    names = list(PROFILES)
    return [(f"lab-{i + 1:02d}", names[i % len(names)]) for i in range(n)]


def block_address(last_octet: int) -> str:
    """``127.0.0.<last_octet>``, or that octet in the /24 of ``$TIERFLEET_LAB_ADDR_BASE`` when it is set, so
    the tests' and benchmarks' own labs keep to the checkout's address block."""
    env = os.environ.get(ADDR_BASE_ENV, "127.0.0.10")
    prefix = env.rsplit(".", 1)[0] if env.startswith("127.") and env.count(".") == 3 else "127.0.0"
    return f"{prefix}.{last_octet}"


@contextmanager
def address_block(last_octet: int) -> Iterator[str]:
    """Labs made inside take their addresses from :func:`block_address` ``(last_octet)`` onwards (a test's or a
    benchmark's own lab beside the checkout's); ``$TIERFLEET_LAB_ADDR_BASE`` is put back after."""
    old = os.environ.get(ADDR_BASE_ENV)
    os.environ[ADDR_BASE_ENV] = base = block_address(last_octet)
    try:
        yield base
    finally:
        if old is None:
            os.environ.pop(ADDR_BASE_ENV, None)
        else:
            os.environ[ADDR_BASE_ENV] = old


def addresses(count: int) -> list[str]:
    """SSH addresses ``127.0.0.11`` onwards (``$TIERFLEET_LAB_ADDR_BASE`` sets the one before the first)."""
    text = os.environ.get(ADDR_BASE_ENV, "127.0.0.10")
    try:
        first = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(ADDR_BASE_ENV, text, "an IPv4 address in 127.0.0.0/8") from None
    if first not in ipaddress.IPv4Network("127.0.0.0/8") or int(first) + count > int(
            ipaddress.IPv4Address("127.255.255.254")):
        raise ConfigError(ADDR_BASE_ENV, text, "the lab's addresses must stay inside 127.0.0.0/8")
    return [str(first + i + 1) for i in range(count)]
