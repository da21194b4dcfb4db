"""Run a rollout's batches: one worker process per host, each under an outer time limit.

A host whose worker does not finish within ``host_timeout`` (a host that black-holes its packets mid-run
hangs any SSH client) has its worker's whole process group killed and counts as failed (``timeout``). After
every host the state file is written; once more than ``max_fail_pct`` percent of all hosts failed no new host
starts, the batch's running hosts finish, and the rollout stops with the reason. Hosts never started stay
``pending``: untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tierfleet.rollout.state import DONE, FAILED, HostRun, RolloutState, save

#: a worker's argv for one host, given the file it writes its result to
WorkerArgv = Callable[[str, Path], list[str]]


def _tierfleet_lines(text: str) -> str | None:
    """The worker log's ``tierfleet: ...`` lines (the failure messages), joined; None when there are none."""
    lines = []
    for line in text.splitlines():
        i = line.find("tierfleet: ")
        if i >= 0 and line[i:] not in lines:
            lines.append(line[i:].strip())
    return " | ".join(lines[-4:]) or None


def run_host(name: str, argv_for: WorkerArgv, run_dir: Path, timeout: float) -> dict:
    """Run one host's worker; its result dict (``status`` ok/failed/timeout, before/after, error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out, log = run_dir / f"{name}.json", run_dir / f"{name}.log"
    out.unlink(missing_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv_for(name, out), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "timeout", "log": str(log),
                    "error": f"no result within {timeout:g}s (host unreachable or hung); worker stopped"}
    text = log.read_text(errors="replace")
    try:
        result = json.loads(out.read_text())
    except (OSError, ValueError):
        return {"status": "failed", "log": str(log),
                "error": _tierfleet_lines(text) or f"worker exited {proc.returncode} without a result"}
    result["log"] = str(log)
    if result.get("status") != "ok" and not result.get("error"):
        result["error"] = _tierfleet_lines(text) or "failed"
    return result


def execute(state: RolloutState, state_path: Path, argv_for: WorkerArgv, run_dir: Path, forks: int = 20,
            on_event: Callable[[str, str, HostRun], None] | None = None,
            revert_for: WorkerArgv | None = None) -> RolloutState:
    """Run every batch of ``state`` whose hosts are not done yet; returns the state (also saved).

    With ``revert_for``, a batch in which a host failed is rolled back as a whole: its hosts that succeeded run
    the revert worker and end ``reverted`` (or ``failed`` when the revert fails too).
    """
    lock = threading.Lock()
    stop = threading.Event()
    event = on_event or (lambda *_: None)
    if state.over_threshold():
        state.stopped = state.stopped or _stop_reason(state)
        stop.set()

    def one(name: str) -> None:
        run = state.hosts[name]
        with lock:
            if stop.is_set():
                return
            run.status, run.started, run.finished, run.error = "running", time.time(), None, None
            run.attempts += 1
            save(state, state_path)
        event("start", name, run)
        result = run_host(name, argv_for, run_dir, state.host_timeout)
        with lock:
            run.status = result.get("status") if result.get("status") in DONE else "failed"
            for key in ("before", "after", "changed", "rolled_back", "error", "log"):
                if key in result:
                    setattr(run, key, result[key])
            run.finished = time.time()
            if state.over_threshold() and not stop.is_set():
                state.stopped = _stop_reason(state)
                stop.set()
            save(state, state_path)
        event("end", name, run)

    for batch in state.batches:
        todo = [h for h in batch if state.hosts[h].status not in DONE]
        if stop.is_set():
            break
        if not todo:
            continue
        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(todo)))) as pool:
            list(pool.map(one, todo))
        if revert_for is not None and any(state.hosts[h].status in FAILED for h in batch):
            done = [h for h in batch if state.hosts[h].status == "ok"]
            with ThreadPoolExecutor(max_workers=max(1, min(forks, len(done) or 1))) as pool:
                list(pool.map(lambda h: _revert(state, state_path, h, revert_for, run_dir, lock, event), done))
    with lock:
        state.finished = time.time()
        save(state, state_path)
    return state


def _revert(state: RolloutState, state_path: Path, name: str, argv_for: WorkerArgv, run_dir: Path, lock, event) -> None:
    run = state.hosts[name]
    result = run_host(f"{name}", lambda h, out: argv_for(h, out), run_dir / "revert", state.host_timeout)
    with lock:
        run.status = "reverted" if result.get("status") == "ok" else "failed"
        run.rolled_back = result.get("status") == "ok"
        if result.get("after"):
            run.after = result["after"]
        run.error = ("reverted: another host of its batch failed" if run.status == "reverted"
                     else f"revert failed: {result.get('error') or 'no result'}")
        save(state, state_path)
    event("end", name, run)


def _stop_reason(state: RolloutState) -> str:
    failed = state.failed()
    return (f"stopped: {len(failed)} of {len(state.hosts)} hosts failed ({state.failed_pct():.0f}% > "
            f"max {state.max_fail_pct:g}%): {', '.join(failed)}")
