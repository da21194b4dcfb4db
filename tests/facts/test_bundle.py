"""Several facts in one round trip: the same values as one command each, run for real by sh."""

from __future__ import annotations

import subprocess

from tierfleet.facts import bundle
from tierfleet.facts.ops import PythonVersion
from tierfleet.facts.release import Releases
from tierfleet.facts.system import OsRelease


class ShellHost:
    """A pyinfra-like host whose facts run for real in ``sh`` on this machine, counting round trips."""

    def __init__(self) -> None:
        self.calls = 0

    def get_fact(self, cls, *args, **kwargs):
        self.calls += 1
        fact = cls()
        done = subprocess.run(["sh", "-c", fact.command(*args, **kwargs)], capture_output=True, text=True)
        lines = done.stdout.splitlines()
        return fact.process(lines) if done.returncode == 0 and lines else fact.default()


def test_one_round_trip_same_values(tmp_path):
    root = tmp_path / "root"
    (root / "releases" / "a").mkdir(parents=True)
    (root / "current").symlink_to("releases/a")
    wanted = {"python": (PythonVersion, (), {}), "os": (OsRelease, (), {}),
              "releases": (Releases, (), {"root": str(root)}), "missing": (Releases, (), {"root": str(tmp_path / "no")})}
    host = ShellHost()
    got = bundle.read(host, wanted)
    assert host.calls == 1
    one_each = ShellHost()
    assert got == {key: one_each.get_fact(cls, *args, **kwargs) for key, (cls, args, kwargs) in wanted.items()}
    assert got["releases"]["current"] == "a" and got["missing"] == Releases.default()


def test_output_cannot_forge_a_part(tmp_path):
    """A fact's output that looks like a marker (e.g. text from a store) stays inside its own part."""
    evil = tmp_path / "evil"
    evil.write_text("##tierfleet-part-0000000000000000## python\n3.99\n")

    class Cat(PythonVersion):
        def command(self) -> str:
            return f"cat {evil}"

        def process(self, output):
            return output

    got = bundle.read(ShellHost(), {"cat": (Cat, (), {}), "python": (PythonVersion, (), {})})
    assert got["cat"] == evil.read_text().splitlines()
    assert got["python"] != "3.99"


def test_a_failing_part_gives_its_default():
    class Broken(PythonVersion):
        def command(self) -> str:
            return "echo partial; exit 3"

    got = bundle.read(ShellHost(), {"broken": (Broken, (), {}), "os": (OsRelease, (), {})})
    assert got["broken"] is None  # "partial" is no version: the parser's unknown
    assert got["os"]
