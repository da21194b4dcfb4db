"""The ops daemon: one 1 s loop that reads signals, picks a profile, applies it and pins threads.

Lifecycle: load the policy (a bad first policy is fatal; a bad reload keeps the last good one),
choose backends from what the host has, apply the default profile (recording originals), then
tick. On stop (SIGTERM/SIGINT) the recorded originals are put back when ``on_stop: restore``,
threads get their original masks and slice CPU limits are undone.

Energy records (:mod:`tierfleet_ops.records`): every profile change appends a switch record with
its reason, and every ``records.interval_s`` (and right after a switch) the tick appends a sample
of the readings it has just taken, to ``energy.jsonl`` next to the state file.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psutil

from .apply import Applier
from .backends.base import Backend, HostContext, not_applied, probe_backends
from .containers import ContainerCpus
from .errors import ConfigError, ControlError, FatalError, OpsError
from .knobs import Knob, Outcome, Skipped
from .notify import notify, watchdog_interval_s
from .pinning import Pinner, PinReport, RuntimeMatch, SliceCpus
from .policy import Policy, load_policy
from .records import RECORDS_NAME, EnergyRecorder
from .selector import Selector
from .signals import Signals, combine
from .state import StateStore
from .sysfs import format_cpulist
from .topology import Placement, choose_cores, read_topology

log = logging.getLogger(__name__)

#: other power managers, by process name (comm is cut to 15 characters)
POWER_MANAGERS = {"tuned": "tuned", "power-profiles-": "power-profiles-daemon", "power-profiles-daemon":
                  "power-profiles-daemon",
                  "auto-cpufreq": "auto-cpufreq", "tlp": "tlp"}


def detect_power_managers(procs: list[tuple[str, list[str]]]) -> list[str]:
    """Names of other power managers among ``(comm, argv)`` pairs.

    >>> detect_power_managers([("tuned", ["/usr/bin/python3", "/usr/sbin/tuned"]), ("bash", ["bash"]),
    ...                        ("python3", ["python3", "/usr/bin/auto-cpufreq", "--daemon"])])
    ['auto-cpufreq', 'tuned']
    """
    found = set()
    for comm, argv in procs:
        if comm in POWER_MANAGERS:
            found.add(POWER_MANAGERS[comm])
        for a in argv[:3]:
            base = os.path.basename(a)
            if base in ("tuned", "power-profiles-daemon", "auto-cpufreq"):
                found.add(base)
    return sorted(found)


#: seconds between two looks for other power managers (long-lived services) and at which knobs exist
POWER_MANAGER_CHECK_S = 60.0


def process_names() -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every process (psutil's name: comm, completed from argv when cut). The
    command line is read only for interpreters (``python3 /usr/sbin/tuned``), where the name
    alone does not tell: one small read per process, not two."""
    out = []
    for p in psutil.process_iter(["name"]):
        name = p.info["name"] or ""
        argv: list[str] = []
        if name.startswith("python") or name in ("perl", "sh", "bash"):
            try:
                argv = p.cmdline()
            except psutil.Error:
                pass
        out.append((name, argv))
    return out



def from_signal(fn: Any) -> Any:
    """A signal handler that calls ``fn`` (an ``Event.set``) on a thread of its own.

    Python runs a handler in the main thread between two bytecodes, which can be while that thread holds the
    lock of the very event the handler sets: inside ``Event.wait``, where the control loop spends its time.
    ``Event.set`` there waits for a lock its own thread holds, and the daemon never stops (it hung so on
    SIGTERM, until systemd's kill, which skips the restore). A new thread takes the lock once the main thread
    lets it go, inside the wait.
    """
    def handler(signum: int, _frame: Any) -> None:
        threading.Thread(target=fn, name=f"signal-{signum}", daemon=True).start()

    return handler

@dataclass
class DaemonConfig:
    policy_path: str
    state_path: str | None = "/var/lib/tierfleet-ops/state.json"
    socket_path: str | None = "/run/tierfleet-ops/ops.sock"
    socket_group: str | None = None
    metrics_port: int | None = 9464
    metrics_addr: str = "127.0.0.1"
    backends: list[str] | None = None
    ctx: HostContext = field(default_factory=HostContext)
    cgroup_root: str = "/sys/fs/cgroup"
    #: CPUs placement may use; None: this process's affinity (``os.sched_getaffinity(0)``)
    allowed_cpus: set[int] | None = None
    #: observe only: log what would be set and pinned, change nothing, restore nothing
    dry_run: bool = False
    #: the Docker engine of ``runtime.container_label`` (None: ``DOCKER_HOST`` or the default socket)
    docker_host: str | None = None


class Daemon:
    """The control loop and its state; :meth:`run` is the process's main function."""

    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.policy: Policy = load_policy(cfg.policy_path)  # fatal when bad at start
        self.policy_mtime = self._mtime()
        self.policy_error: str | None = None
        self.backends: list[Backend] = []
        #: backends this host does not have, and why
        self.absent: dict[str, str] = {}
        self.state = StateStore(cfg.state_path)
        self.applier = Applier(self.state)
        self.selector = Selector(self.policy.switching, self.policy.default_profile, self.policy.windows)
        self.signals = Signals(self.policy.runtime)
        self.pinner = Pinner(self._match(), self.state)
        self.containers: ContainerCpus | None = None
        self.slices = SliceCpus(cfg.ctx.runner, cfg.cgroup_root)
        self.placement: Placement | None = None
        self.online_seen: str | None = None
        self.last_outcomes: list[Outcome] = []
        self.last_skipped: list[Skipped] = []
        self.last_pin = PinReport()
        self.reapplied_total = 0
        self.reloads_total = 0
        self.ticks = 0
        self.readings: dict[str, float] = {}
        self.sample: dict[str, Any] = {}
        self.load: float | None = None
        self.other_managers: list[str] = []
        self.knob_available: dict[str, bool] = {}
        self._next_pin = 0.0
        self._next_reapply: float | None = None
        self._next_pm_check = float("-inf")  # looked at in start(); then every POWER_MANAGER_CHECK_S
        self._next_watchdog = 0.0
        self._last_now: float | None = None
        #: energy records next to the state file (the state directory: the one place the unit lets it write)
        self.recorder = EnergyRecorder(
            os.path.join(os.path.dirname(cfg.state_path), RECORDS_NAME) if cfg.state_path and not cfg.dry_run
            else None, max_bytes=self.policy.records["max_kib"] * 1024)
        #: the profile the last switch record named (None before the first)
        self._recorded_profile: str | None = None
        self._next_record = float("-inf")
        self.server: Any = None
        self.metrics_server: Any = None
        #: model shards loaded on demand (the gate, or the single shard's sleep watch); None without them
        self.shards: Any = None
        #: why the daemon must stop (set from any thread by :meth:`fatal`)
        self.fatal_error: BaseException | None = None
        self._stopped = False

    # --- setup ------------------------------------------------------------------------------

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.cfg.policy_path).st_mtime
        except OSError:
            return None

    def _match(self) -> RuntimeMatch:
        r = self.policy.runtime
        return RuntimeMatch(unit=r.get("unit"), pidfile=r.get("pidfile"), container=r.get("container"),
                            name=r.get("name"), container_label=r.get("container_label"))

    def _containers(self) -> ContainerCpus | None:
        """The runtime's containers on the Docker engine (``runtime.container_label``), or the recorded ones'
        cpusets still to restore with the label gone from the policy."""
        label = self.policy.runtime.get("container_label")
        if not label and not any(n.startswith("docker.") for n in self.state.originals):
            return None
        online = self.cfg.ctx.sysfs.read("devices/system/cpu/online") or format_cpulist(os.sched_getaffinity(0))
        if self.containers is None or (label and self.containers.label != label):
            self.containers = ContainerCpus(label or "tierfleet.runtime=none", online.strip(),
                                            base_url=self.cfg.docker_host)
        return self.containers

    def start(self) -> None:
        """Take the control socket (fails if another daemon answers on it, before anything is
        changed), choose backends, apply the default profile, serve metrics, notify systemd."""
        if self.cfg.socket_path:
            from .control import ControlServer

            self.server = ControlServer(self, self.cfg.socket_path, self.cfg.socket_group, on_fatal=self.fatal)
            self.server.start()
        try:
            self.shards = self.start_shards(self.policy.shards)
        except BaseException:
            if self.server:
                self.server.stop()
            raise
        self.backends, self.absent = probe_backends(self.cfg.ctx, self.cfg.backends)
        names = list(self.state.originals)
        for b in self.backends:
            adopt = getattr(b, "adopt_originals", None)
            if adopt:
                adopt(names)
        if names:
            log.warning("found %d original value(s) recorded by an earlier run; they will be restored on stop",
                        len(names))
        self.check_power_managers()
        self._next_pm_check = time.monotonic() + POWER_MANAGER_CHECK_S
        with self.lock:
            self.apply_profile(self.selector.current, reason="start")
            self.update_placement(force=True)
            self.refresh_knob_availability()
            self._next_reapply = None  # first re-verify one period after the first tick
        if self.cfg.metrics_port is not None:
            from .metrics import start_metrics

            try:
                self.metrics_server = start_metrics(self, self.cfg.metrics_addr, self.cfg.metrics_port)
            except OSError as exc:  # port taken: run without metrics rather than not at all
                log.error("metrics on %s:%d: %s", self.cfg.metrics_addr, self.cfg.metrics_port, exc)
        notify(f"READY=1\nSTATUS=profile {self.selector.current}, policy {self.policy.hash}")
        log.info("started", extra={"fields": {"profile": self.selector.current, "policy": self.policy.hash,
                                              "backends": ",".join(b.name for b in self.backends)}})

    # --- model shards -------------------------------------------------------------------------

    def start_shards(self, cfg: Any) -> Any:
        """The shard gate (router mode) or the single shard's sleep watch for ``cfg``; None without shards.
        A gate whose port is taken raises :class:`ControlError` (at start, before anything is changed)."""
        if cfg is None:
            return None
        if cfg.mode == "sleep":
            from .shards import SleepWatch

            return SleepWatch(cfg)
        from .gate import Gate

        gate = Gate(cfg, on_loaded=self._shard_loaded)
        gate.start()
        return gate

    def _shard_loaded(self, name: str) -> None:
        """A shard came up in a new runtime process: pin its threads at the next tick, not a pinning interval later."""
        self._next_pin = 0.0

    def stop_shards(self) -> None:
        if self.shards is not None:
            (getattr(self.shards, "stop", None) or self.shards.close)()
            self.shards = None

    def shard_signals(self, now: float) -> None:
        """Fold the shards into this tick's signals: no shard loaded is "no model loaded" (the idle
        profile), and requests in flight or waiting for a shard are the queue."""
        sh = self.shards
        if sh is None:
            return
        if hasattr(sh, "tick"):
            sh.tick(now, time.time())
        loaded = sh.any_loaded()
        if loaded is not None:
            self.sample["model_loaded"] = loaded
        q = sh.queue()
        if q is not None:
            self.sample["queue"] = 100.0 * q / (self.policy.runtime.get("queue_full") or 4)

    def check_power_managers(self) -> None:
        """Warn (once per change) when tuned, power-profiles-daemon or auto-cpufreq runs."""
        found = detect_power_managers(process_names())
        for m in sorted(set(found) - set(self.other_managers)):
            log.warning("another power manager is running: %s; it will fight this daemon over the same knobs", m)
        self.other_managers = found

    def refresh_knob_availability(self) -> None:
        """Which knobs exist; read at start and every POWER_MANAGER_CHECK_S, not per status request."""
        self.knob_available = {n: k.read() is not None for n, k in sorted(self.knobs().items())}

    # --- profile application -----------------------------------------------------------------

    def knobs(self) -> dict[str, Knob]:
        out: dict[str, Knob] = {}
        for b in self.backends:
            out.update(b.knobs())
        if self.policy.pinning["move_os_slices"] or any(n.startswith("systemd.") for n in self.state.originals):
            out.update(self.slices.knobs())
        ctrs = self._containers()
        if ctrs is not None:
            out.update(ctrs.knobs([n for n in self.state.originals if n.startswith("docker.")]))
        return out

    def plan(self, profile: str) -> tuple[list[Any], list[Skipped]]:
        changes, skipped = [], []
        for b in self.backends:
            settings = self.policy.profiles[profile].get(b.name)
            if settings is None:
                continue
            c, s = b.plan(settings)
            changes.extend(c)
            skipped.extend(s)
        return changes, skipped

    def apply_profile(self, profile: str, reason: str, dry_run: bool = False) -> list[Outcome]:
        """Apply ``profile`` (or with ``dry_run`` only report the diff)."""
        changes, skipped = self.plan(profile)
        outcomes = self.applier.apply(changes, dry_run=dry_run or self.cfg.dry_run)
        if self.cfg.dry_run and not dry_run:
            self.last_outcomes, self.last_skipped = outcomes, skipped
            for o in outcomes:
                if o.status == "would-change":
                    log.info("dry run: would set %s: %s -> %s", o.name, o.before, o.want,
                             extra={"fields": {"profile": profile, "reason": reason}})
        elif not dry_run:
            self.last_outcomes, self.last_skipped = outcomes, skipped
            if profile != self._recorded_profile:
                if self.policy.records["enabled"]:
                    self.recorder.switch(self._recorded_profile, profile, reason)
                self._recorded_profile = profile
                self._next_record = float("-inf")  # a sample on the next tick opens the new profile's time
            for b in self.backends:
                b.after_apply(outcomes)
            changed = [o for o in outcomes if o.status == "changed"]
            for s in skipped:
                log.info("skipped %s: %s", s.name, s.reason)
            log.info("profile %s applied", profile, extra={"fields": {
                "reason": reason, "changed": len(changed),
                "failed": sum(o.status in ("failed", "verify-failed") for o in outcomes)}})
            if any(o.name == "jetson.nvpmodel" and o.status == "changed" for o in outcomes):
                self.update_placement(force=True)
        return outcomes

    def dry_run(self, profile: str | None = None) -> dict[str, Any]:
        with self.lock:
            p = profile or self.selector.current
            outcomes = self.apply_profile(p, "dry-run", dry_run=True)
            skipped = self.plan(p)[1]
        return {"profile": p, "changes": [o.as_dict() for o in outcomes],
                "skipped": [{"knob": s.name, "reason": s.reason} for s in skipped],
                "absent": not_applied(self.policy.profiles[p], self.absent)}

    # --- placement ----------------------------------------------------------------------------

    def update_placement(self, force: bool = False) -> None:
        online = self.cfg.ctx.sysfs.read("devices/system/cpu/online")
        if not force and online == self.online_seen:
            return
        self.online_seen = online
        pin = self.policy.pinning
        topo = read_topology(self.cfg.ctx.sysfs)
        allowed = self.cfg.allowed_cpus or os.sched_getaffinity(0)
        self.placement = choose_cores(topo, reserve=pin["reserve_cores"], allowed=allowed,
                                      numa=pin["numa"])
        for w in self.placement.warnings:
            log.warning("placement: %s", w)
        log.info("placement", extra={"fields": self.placement.as_dict() | {"warnings": len(self.placement.warnings)}})
        self._next_pin = 0.0
        if pin["move_os_slices"] and self.placement.os_side and not self.cfg.dry_run:
            changes = self.slices.changes(self.placement.os_side)
            if not changes:
                log.warning("move_os_slices: cgroup v2 with cpuset, or systemctl, not available here")
            for o in self.applier.apply(changes):
                if o.status not in ("changed", "unchanged"):
                    log.warning("%s: %s %s", o.name, o.status, o.note)

    def pin_now(self) -> PinReport:
        if not (self.policy.pinning["enabled"] and self.placement and self.placement.inference):
            return self.last_pin
        ctrs = self._containers() if self.policy.runtime.get("container_label") else None
        if ctrs is not None:  # the container's cpuset first (the engine's view), then every thread inside it
            for o in self.applier.apply(ctrs.changes(self.placement.inference), dry_run=self.cfg.dry_run):
                if o.status not in ("changed", "unchanged", "would-change"):
                    log.warning("%s: %s %s", o.name, o.status, o.note)
            self.pinner.match.container_ids = ctrs.ids()
            for name in ctrs.gone(list(self.state.originals)):
                log.info("%s: the container is gone, its original cpuset with it", name)
                self.state.forget(name)
        rep = self.pinner.pin(self.placement.inference, dry_run=self.cfg.dry_run, threads=self.placement.threads)
        self.last_pin = rep
        if self.shards is not None and hasattr(self.shards, "measure"):
            self.shards.measure(rep.pids)
        return rep

    # --- the loop -----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.ticks += 1
            self._last_now = now
            if self.reload_requested.is_set() or self._mtime() != self.policy_mtime:
                self.reload_requested.clear()
                self.reload()
            self.readings = {}
            for b in self.backends:
                self.readings.update(b.readings())
            self.update_placement()
            runtime_found = bool(self.last_pin.pids) if not self.pinner.match.empty() else None
            self.sample = self.signals.sample(self.placement.inference if self.placement else None,
                                              self.readings.get("gpu_util_pct"), runtime_found)
            self.shard_signals(now)
            self.load = combine(self.sample, self.policy.switching["signals"])
            new = self.selector.step(now, self.load, self.sample.get("model_loaded"), datetime.now())
            if new:
                log.info("switching to %s", new, extra={"fields": {"reason": self.selector.reason}})
                self.apply_profile(new, self.selector.reason)
                self._next_reapply = now + self.policy.top["reapply_s"]
            if self._next_reapply is None:
                self._next_reapply = now + self.policy.top["reapply_s"]
            if now >= self._next_reapply:
                self._next_reapply = now + self.policy.top["reapply_s"]
                self.reapply()
            if now >= self._next_pm_check:
                self._next_pm_check = now + POWER_MANAGER_CHECK_S
                self.check_power_managers()
                self.refresh_knob_availability()
            if now >= self._next_pin:
                self._next_pin = now + self.policy.pinning["interval_s"]
                self.pin_now()
            record = None
            if now >= self._next_record and self.policy.records["enabled"]:
                self._next_record = now + self.policy.records["interval_s"]
                record = (self.selector.current, dict(self.readings), self.load)
        if record is not None:
            self.recorder.sample(*record)  # outside the lock: a slow disk holds up no status request
        wd = watchdog_interval_s()
        if wd and now >= self._next_watchdog:
            notify("WATCHDOG=1")
            self._next_watchdog = now + wd

    def reapply(self) -> None:
        """Re-verify the live profile; re-apply what drifted (a driver reload, another tool)."""
        if self.cfg.dry_run:
            return
        for b in self.backends:
            check = getattr(b, "check", None)
            if check and check():
                log.warning("%s: re-applying after driver reload", b.name)
        outcomes = self.applier.apply(self.plan(self.selector.current)[0])
        n = sum(o.status == "changed" for o in outcomes)
        if n:
            self.reapplied_total += n
            log.warning("re-applied %d drifted knob(s)", n, extra={"fields": {
                "knobs": ",".join(o.name for o in outcomes if o.status == "changed")}})

    def reload(self) -> bool:
        """Load the policy file again; keep the last good policy when the new one is bad."""
        self.policy_mtime = self._mtime()
        try:
            new = load_policy(self.cfg.policy_path)
        except ConfigError as exc:
            self.policy_error = str(exc)
            log.error("policy reload failed, keeping policy %s: %s", self.policy.hash, exc)
            return False
        self.policy_error = None
        if new.hash == self.policy.hash:
            return True
        old = self.policy
        self.policy = new
        self.reloads_total += 1
        held = self.selector.held
        current = self.selector.current if self.selector.current in new.profiles else new.default_profile
        self.selector = Selector(new.switching, new.default_profile, new.windows)
        self.selector.current = current
        self.selector.held = held if held in new.profiles else None
        self.signals.close()
        self.signals = Signals(new.runtime)
        self.pinner.match = self._match()
        self.recorder.max_bytes = new.records["max_kib"] * 1024
        if new.records["interval_s"] != old.records["interval_s"]:
            self._next_record = float("-inf")
        if new.shards != old.shards:
            self.stop_shards()
            try:
                self.shards = self.start_shards(new.shards)
            except ControlError as exc:
                self.policy_error = f"shards: {exc}"
                log.error("shards: %s; running without them", exc)
        log.info("policy reloaded", extra={"fields": {"old": old.hash, "new": new.hash}})
        self.apply_profile(self.selector.held or current, "reload")
        self.update_placement(force=True)
        return True

    def fatal(self, exc: BaseException) -> None:
        """Stop the daemon because of ``exc`` (from any thread): :meth:`run` restores the recorded
        originals, then raises :class:`FatalError` (exit status 1, so systemd restarts it)."""
        if self.fatal_error is None:
            self.fatal_error = exc
        self.stop_event.set()

    def run(self) -> None:
        """The process's main function: start, tick until stopped, restore on every way out.

        SIGTERM/SIGINT stop it cleanly. Whatever ends the loop (a signal, an error that escapes a
        tick, a dead control server) passes through :meth:`stop`, which puts the recorded
        originals back; an error is then raised again as :class:`FatalError`.
        """
        signal.signal(signal.SIGTERM, from_signal(self.stop_event.set))
        signal.signal(signal.SIGINT, from_signal(self.stop_event.set))
        signal.signal(signal.SIGHUP, from_signal(self.reload_requested.set))
        try:
            self.start()
        except ControlError:
            raise  # another daemon owns the socket (and the state): change nothing
        except BaseException:
            self.stop()
            raise
        try:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                try:
                    self.tick(t0)
                except OpsError as exc:
                    log.error("tick: %s", exc)
                except Exception:  # noqa: BLE001 - keep serving; a tick that keeps failing
                    # stops the watchdog pings and systemd restarts the daemon
                    log.exception("tick failed")
                self.stop_event.wait(max(0.0, self.policy.top["tick_s"] - (time.monotonic() - t0)))
        except BaseException as exc:
            log.critical("control loop failed: %r", exc, exc_info=exc)
            self.fatal(exc)
            self.stop()
            raise
        self.stop()
        if self.fatal_error is not None:
            raise FatalError(f"stopped after a fatal error, originals restored: {self.fatal_error!r}") \
                from self.fatal_error

    def stop(self) -> list[Outcome]:
        """Put back every recorded original (``on_stop: restore``) and every thread's mask.

        Each step runs even when an earlier one fails (a full disk, no file descriptors left), so
        no fatal path skips the restore; a second call does nothing.
        """
        if self._stopped:
            return []
        self._stopped = True
        outcomes: list[Outcome] = []

        def step(what: str, fn: Any) -> Any:
            try:
                return fn()
            except Exception:  # noqa: BLE001 - go on with the rest of the restore
                log.exception("stop: %s failed", what)
                return None

        step("notify", lambda: notify("STOPPING=1"))
        if self.server:
            step("control socket", self.server.stop)
        if self.metrics_server:
            step("metrics", self.metrics_server.shutdown)
            step("metrics", self.metrics_server.server_close)
        step("shards", self.stop_shards)
        with self.lock:
            if self.ticks and self.policy.records["enabled"]:
                # the last stretch up to now belongs to the live profile (the counters as of the last tick)
                step("energy record", lambda: self.recorder.sample(self.selector.current, self.readings, self.load))
            step("energy records", self.recorder.close)
            if self.policy.top["on_stop"] == "restore" and not self.cfg.dry_run:
                outcomes = step("restore", self._restore) or []
            if not self.cfg.dry_run:
                step("unpin", self.pinner.unpin)
            for b in self.backends:
                step(f"close {b.name}", b.close)
            step("close runtime endpoints", self.signals.close)
        return outcomes

    def _restore(self) -> list[Outcome]:
        order_by = {}
        for b in self.backends:
            for name in b.knobs():
                order_by[name] = b
        knobs = self.knobs()

        def order(changes: list[Any]) -> list[Any]:
            out: list[Any] = []
            for b in self.backends:
                out.extend(b.order([c for c in changes if order_by.get(c.knob.name) is b]))
            return out + [c for c in changes if c.knob.name not in order_by]  # systemd slices

        outcomes = self.applier.restore(knobs, order=order)
        log.info("restored originals", extra={"fields": {
            "restored": sum(o.status == "changed" for o in outcomes),
            "failed": sum(o.status in ("failed", "verify-failed") for o in outcomes)}})
        return outcomes

    # --- reporting ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self.lock:
            governors: dict[str, Any] = {}
            for b in self.backends:
                g = getattr(b, "governors", None)
                if g:
                    governors = g()
            return {
                "profile": self.selector.current, "held": self.selector.held, "reason": self.selector.reason,
                "policy": {"path": self.cfg.policy_path, "hash": self.policy.hash, "error": self.policy_error},
                "load_pct": self.load, "signals": self.sample, "readings": self.readings,
                "backends": [b.describe() for b in self.backends], "absent_backends": dict(self.absent),
                "governors": governors,
                "knobs": dict(self.knob_available),
                "placement": self.placement.as_dict() if self.placement else None,
                "pinning": {"pids": self.last_pin.pids, "threads": self.last_pin.threads,
                            "pinned_total": self.pinner.pinned_total,
                            "containers": list(self.pinner.match.container_ids),
                            "thread_mismatch": {str(k): v for k, v in self.last_pin.thread_mismatch.items()}},
                "switches": self.selector.switches, "reapplied_total": self.reapplied_total,
                "other_power_managers": self.other_managers, "ticks": self.ticks,
                "last_apply": [o.as_dict() for o in self.last_outcomes],
                "skipped": [{"knob": s.name, "reason": s.reason} for s in self.last_skipped],
                "originals": dict(self.state.originals),
                "records": self.recorder.status(),
                "shards": self.shards.snapshot() if self.shards is not None else [],
                "shard_budget": self.shard_budget(),
            }

    def shard_budget(self) -> dict[str, Any] | None:
        """The shards' memory budget and what the loaded ones hold by their estimates (bytes)."""
        cfg = self.policy.shards
        if cfg is None or self.shards is None:
            return None
        snap = self.shards.snapshot()
        held = sum(s["memory_bytes"] or 0 for s in snap if s["state"] in ("loading", "loaded", "unloading"))
        return {"mode": cfg.mode, "budget_bytes": cfg.memory_budget_bytes, "memory_kind": cfg.memory_kind,
                "held_bytes": held, "listen": cfg.listen, "runtime_url": cfg.runtime_url,
                "runtime_up": getattr(self.shards, "runtime_up", None), "waiting": getattr(self.shards, "waiting", 0)}

    def hold(self, profile: str | None) -> None:
        with self.lock:
            if profile is not None and profile not in self.policy.profiles:
                raise ConfigError("hold", "profile",
                                  f"{profile!r} is not a profile; allowed: {', '.join(sorted(self.policy.profiles))}")
            self.selector.hold(profile)
            if profile and profile != self.selector.current:
                t = self._last_now if self._last_now is not None else time.monotonic()
                new = self.selector.step(t, None)
                if new:
                    self.apply_profile(new, "held")
