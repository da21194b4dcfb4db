"""Package facts pyinfra does not ship: held apt packages."""

from __future__ import annotations

import re

from pyinfra.api import FactBase

_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]+(:[a-z0-9]+)?$")


def parse_showhold(lines: list[str]) -> list[str]:
    """Parse ``apt-mark showhold``: one package per line (architecture qualifiers dropped).

    >>> parse_showhold(["cuda-drivers-570", "nvidia-utils-570-server:amd64", "W: junk line"])
    ['cuda-drivers-570', 'nvidia-utils-570-server']
    """
    return sorted({line.strip().split(":")[0] for line in lines if _PACKAGE_RE.match(line.strip())})


class AptHeld(FactBase[list[str]]):
    """Packages marked held (``apt-mark showhold``); empty where apt is missing."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return "apt-mark showhold 2>/dev/null; true"

    def process(self, output: list[str]) -> list[str]:
        return parse_showhold(output)
