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


def parse_installed(lines: list[str]) -> list[str]:
    r"""Parse ``dpkg-query -W -f='${Package}\t${db:Status-Status}\n'``: names whose status is installed.

    >>> parse_installed(["cuda-drivers-570\tinstalled", "nvidia-driver-550\tconfig-files", "junk"])
    ['cuda-drivers-570']
    """
    names = set()
    for line in lines:
        name, _, status = line.partition("\t")
        if status.strip() == "installed" and _PACKAGE_RE.match(name.strip()):
            names.add(name.strip())
    return sorted(names)


class DebInstalled(FactBase[list[str]]):
    """Names of the installed Debian packages (``dpkg-query -W``)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return "dpkg-query -W -f='${Package}\\t${db:Status-Status}\\n' 2>/dev/null; true"

    def process(self, output: list[str]) -> list[str]:
        return parse_installed(output)
