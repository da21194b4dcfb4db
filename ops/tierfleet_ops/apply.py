"""Save -> apply -> verify -> restore, written once for every backend (tuned's lifecycle).

>>> from tierfleet_ops.knobs import Knob, Change
>>> box = {"v": "a"}
>>> k = Knob("demo", "test", "demo", lambda: box["v"], lambda v: box.update(v=v))
>>> ap = Applier(StateStore(None))
>>> [o.status for o in ap.apply([Change(k, "b")], dry_run=True)], box["v"]
(['would-change'], 'a')
>>> [o.status for o in ap.apply([Change(k, "b")])], box["v"], ap.state.originals
(['changed'], 'b', {'demo': 'a'})
>>> [o.status for o in ap.restore({"demo": k})], box["v"]
(['changed'], 'a')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from .errors import OpsError
from .knobs import Change, Knob, Outcome
from .state import StateStore

log = logging.getLogger(__name__)


class Applier:
    """Applies changes, recording each knob's original value before its first write."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def apply(self, changes: Iterable[Change], dry_run: bool = False) -> list[Outcome]:
        """Apply ``changes`` in order; with ``dry_run`` only report what would change."""
        out: list[Outcome] = []
        for ch in changes:
            out.append(self._one(ch, dry_run))
        return out

    def _one(self, ch: Change, dry_run: bool) -> Outcome:
        k = ch.knob
        before = k.read()
        if before is None:
            return Outcome(k.name, None, ch.value, None, "unavailable", ch.note)
        if k.matches(ch.value, before):
            return Outcome(k.name, before, ch.value, before, "unchanged", ch.note)
        if dry_run:
            return Outcome(k.name, before, ch.value, before, "would-change", ch.note)
        self.state.record(k.name, before)
        try:
            k.write(ch.value)
        except OpsError as exc:
            log.warning("%s: %s", k.name, exc)
            return Outcome(k.name, before, ch.value, k.read(), "failed", str(exc))
        after = k.read()
        if not k.matches(ch.value, after):
            log.warning("%s: wrote %r, reads back %r", k.name, ch.value, after)
            return Outcome(k.name, before, ch.value, after, "verify-failed", ch.note)
        log.info("%s: %s -> %s", k.name, before, after)
        return Outcome(k.name, before, ch.value, after, "changed", ch.note)

    def restore(self, knobs: dict[str, Knob],
                order: Callable[[list[Change]], list[Change]] | None = None,
                dry_run: bool = False) -> list[Outcome]:
        """Write every recorded original back (latest first), then forget the ones restored.

        ``order`` lets a backend reorder writes that depend on each other (cpufreq min/max).
        Originals of knobs that no longer exist stay recorded for a later run.
        """
        names = list(reversed(list(self.state.originals)))
        changes = [Change(knobs[n], self.state.originals[n]) for n in names if n in knobs]
        if order:
            changes = order(changes)
        outcomes = [self._write_back(ch, dry_run) for ch in changes]
        if not dry_run:
            for o in outcomes:
                if o.status in ("changed", "unchanged"):
                    try:
                        self.state.forget(o.name)
                    except OSError as exc:  # the original stays on disk: restored again next time
                        log.warning("%s: restored, but the state file could not be updated: %s", o.name, exc)
        return outcomes

    def _write_back(self, ch: Change, dry_run: bool) -> Outcome:
        """One restore write; any failure (not only the knob's own errors: no file descriptors
        left, a tool that cannot be started) is an outcome, never an exception, so one knob cannot
        stop the others from being restored."""
        try:
            before = ch.knob.read()
        except Exception as exc:  # noqa: BLE001 - see above
            return Outcome(ch.knob.name, None, ch.value, None, "failed", f"read: {exc}")
        if ch.knob.matches(ch.value, before):
            return Outcome(ch.knob.name, before, ch.value, before, "unchanged")
        if dry_run:
            return Outcome(ch.knob.name, before, ch.value, before, "would-change")
        try:
            ch.knob.write(ch.value)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("%s: restore to %r failed: %s", ch.knob.name, ch.value, exc)
            return Outcome(ch.knob.name, before, ch.value, None, "failed", str(exc))
        after = ch.knob.read()
        status = "changed" if ch.knob.matches(ch.value, after) else "verify-failed"
        return Outcome(ch.knob.name, before, ch.value, after, status)
