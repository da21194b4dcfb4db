"""Spec harness for tierfleet operations, following pyinfra's own operation tests.

A spec is one JSON file per operation case::

    {"args": {...},                      keyword arguments of the operation
     "facts": {"<fact name>": {"<arg>=<value>": [recorded output lines]}},
     "commands": ["...", ...],           exactly what the operation yields
     "noop": "..." | null,               the message of host.noop(), when it yields nothing
     "facts_after": {...},               the facts once the commands ran: a second run must
                                         yield nothing (omit only for cases that fail the host)
     "exception": {"name": ..., "message": ...}   instead of commands, for bad arguments
    }

Facts are fed as raw command output through the fact's own ``process()``, so a spec also
checks the parser. The operation runs through its ``_inner`` generator with a stand-in host
that has the two members operations use: ``get_fact(cls, **kwargs)`` and ``noop(message)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.context import ctx_host


@dataclass
class SpecHost:
    facts: dict[str, dict[str, list[str]]]
    noops: list[str] = field(default_factory=list)
    fact_calls: list[str] = field(default_factory=list)

    def get_fact(self, cls, *args, **kwargs):
        key = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        self.fact_calls.append(f"{cls.name}({key})")
        try:
            lines = self.facts[cls.name][key]
        except KeyError:
            raise AssertionError(f"spec has no fact {cls.name} for {key!r}") from None
        return cls().process(lines)

    def noop(self, description: str) -> None:
        self.noops.append(description)


def command_text(command: Any) -> str:
    """A yielded command as text; a host failure (:func:`tierfleet.operations.failure.fail_host`) as
    ``fail_host: <message>``."""
    if isinstance(command, str):
        return StringCommand(command.strip()).get_raw_value()
    if isinstance(command, FunctionCommand):
        return f"fail_host: {command.args[0]}"
    return command.get_raw_value()


def run_operation(op, args: dict[str, Any], facts: dict) -> tuple[list[str], list[str]]:
    """Run ``op`` once against ``facts``; return (commands, noop messages)."""
    fake = SpecHost(facts)
    with ctx_host.use(fake):
        commands = [command_text(c) for c in op._inner(**args)]
    return commands, fake.noops


def load_specs(folder: Path) -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
