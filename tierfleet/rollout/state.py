"""A rollout's state file and report: what was planned, what each host did, and why the rollout stopped.

The state is written atomically (temporary file, fsync, rename) each time a host starts or ends, so a
rollout whose CLI is killed can be resumed (``--resume``) from the file: hosts that had finished keep their
result, a host that was running is run again (every step is idempotent and holds the release root's lock).
The same document is the report (``--report``, JSON).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pydantic

from tierfleet.exceptions import ConfigError
from tierfleet.validation import validate

#: ``reverted``: the host had its change, and lost it again because another host of its batch failed
HostStatus = Literal["pending", "running", "ok", "failed", "timeout", "reverted"]
DONE = ("ok", "failed", "timeout", "reverted")
FAILED = ("failed", "timeout")


class HostRun(pydantic.BaseModel):
    """One host's part in a rollout."""

    model_config = pydantic.ConfigDict(extra="forbid")

    host: str
    batch: int
    status: HostStatus = "pending"
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    changed: bool | None = None
    rolled_back: bool | None = None
    error: str | None = None
    log: str | None = None
    attempts: int = 0
    started: float | None = None
    finished: float | None = None

    @property
    def duration_s(self) -> float | None:
        return round(self.finished - self.started, 2) if self.started and self.finished else None


class RolloutState(pydantic.BaseModel):
    """A whole rollout: its inputs, its batches and every host's run."""

    model_config = pydantic.ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    id: str = pydantic.Field(default_factory=lambda: uuid.uuid4().hex[:12])
    kind: Literal["upgrade", "policy"]
    inventory: str
    limit: list[str] = []
    data: dict[str, str] = {}
    serial: str
    order: str
    canaries: list[str] = []
    max_fail_pct: float = pydantic.Field(ge=0, le=100)
    host_timeout: float = pydantic.Field(gt=0)
    batches: list[list[str]]
    hosts: dict[str, HostRun]
    #: a policy rollout's file and the sha256 of its bytes (a resume refuses a file that changed since)
    policy_file: str | None = None
    policy_sha256: str | None = None
    started: float = pydantic.Field(default_factory=time.time)
    finished: float | None = None
    stopped: str | None = None

    def failed(self) -> list[str]:
        return [h for h, run in self.hosts.items() if run.status in FAILED]

    def failed_pct(self) -> float:
        return 100.0 * len(self.failed()) / max(1, len(self.hosts))

    def over_threshold(self) -> bool:
        """True once more than ``max_fail_pct`` percent of all hosts failed (unreachable ones count)."""
        return bool(self.failed()) and self.failed_pct() > self.max_fail_pct

    def summary(self) -> dict[str, int]:
        out = {s: 0 for s in ("ok", "failed", "timeout", "reverted", "pending", "running")}
        for run in self.hosts.values():
            out[run.status] += 1
        return out

    def report(self) -> dict[str, Any]:
        """The JSON report: the state plus per-host durations and a summary."""
        doc = self.model_dump()
        for name, run in self.hosts.items():
            doc["hosts"][name]["duration_s"] = run.duration_s
        doc["summary"] = self.summary()
        doc["ok"] = not self.failed() and not self.stopped and all(r.status == "ok" for r in self.hosts.values())
        return doc


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (a crash leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(state: RolloutState, path: Path) -> None:
    write_json(path, state.model_dump())


def load(path: Path) -> RolloutState:
    """Read a state file; a missing, truncated or foreign file is a :class:`ConfigError` naming it."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read the rollout state: {exc.strerror}") from None
    except (ValueError, RecursionError):
        raise ConfigError(str(path), "(file)", "not a rollout state (invalid JSON; truncated?)") from None
    return validate(RolloutState, raw, str(path))
