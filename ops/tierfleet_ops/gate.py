"""The shard gate: a small aiohttp layer in front of llama-server's router that keeps a memory budget.

llama-server's router mode (``--models-preset``) already loads a model on the first request that
names it, runs one child process per model and forwards requests to it. What it lacks is measured
in ``bench/shards.py`` and in its source (``tools/server/server-models.cpp``): its only limit is a
model *count* (``--models-max``, LRU by count), it has no unload TTL (``sleep-idle-seconds`` keeps the
child process, and with it the accelerator context), it can keep no model from eviction, and it
loads a model before anything could refuse one that can never fit. The gate adds exactly that and
nothing else: the router runs with ``--no-models-autoload``; the gate reads the ``model`` a request
names, decides with :func:`tierfleet_ops.shards.plan_admission` (load, evict least recently used
idle shards first, wait, or refuse with the figures), asks the router to load
(``POST /models/load``) or unload (``POST /models/unload``), and forwards the request unchanged,
streaming the answer back. Requests that name no shard (``/health``, ``/models``...) pass straight
through.

A request for a loaded shard goes to the shard's child directly (127.0.0.1, the ``--port`` the router's
``GET /models`` lists for it, on a kept-alive connection) rather than through the router, which closes
the connection after every answer it relays and adds a hop: measured in ``bench/shards.py``, the router
alone adds about 1 ms to a 1-token completion. The router still starts, stops and reports every child;
a child's port is learnt after each load and forgotten as soon as the shard starts to unload or reload,
and a child that does not take the connection sends the request through the router as before.

A shard is busy while the gate relays a request to it, or while its child's ``GET /slots`` shows a slot
processing (a request sent to the runtime's own port, not through the gate): a busy shard is neither
evicted nor unloaded at its TTL. The slots are read only when it matters: before an eviction (and every
``BUSY_POLL_S`` while a request waits for room) and before a TTL unload.

The runtime is watched through the router's ``GET /models/sse`` event stream (every load, unload,
sleep and crash as it happens) and ``GET /models`` every ``sync_s`` (the state after a restart, or
events missed while disconnected). All decisions and state changes run on one asyncio loop, so a
check and the change it leads to never interleave with another request's; other threads read an
immutable snapshot (:meth:`Gate.snapshot`).

HTTP is aiohttp's on both sides (server and client; no hand-written parser). Answers the gate gives
itself use llama-server's error shape, ``{"error": {"code", "message", "type"}}``:

- ``507`` ``insufficient_memory_error``: the shard can never fit the budget (pinned shards counted);
- ``503`` ``unavailable_error``: the shard's last load failed (the message names a damaged file; it is
  tried again once its files change or after ``retry_failed_s``), no room within ``wait_s`` because
  every other shard is busy, or the runtime did not answer within ``wait_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import ControlError
from .shards import HOLDS_MEMORY, Decision, ShardsConfig, ShardState, check_files, child_ports, expired, file_marks, \
    parse_event, parse_models, plan_admission, processing_slots, request_model

log = logging.getLogger(__name__)

#: request headers not forwarded (hop by hop, or set again by the client library)
HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                 "transfer-encoding", "upgrade", "host", "content-length"})
#: the largest request body read (a prompt of a long context, with room)
MAX_BODY = 32 << 20
#: paths the router answers itself (its list of models and their loading), never a child
ROUTER_OWN = ("/models", "/v1/models")
#: answers smaller than this are read whole and sent in one piece; larger ones and streams are relayed
RELAY_ABOVE = 1 << 20
#: how often TTLs are checked, seconds
TTL_TICK_S = 0.25
#: how often a request waiting for room reads the children's slots again, seconds
BUSY_POLL_S = 0.5
#: how long a child may take to answer ``GET /slots`` (longer: it counts as busy), seconds
SLOTS_TIMEOUT_S = 2.0
#: the router waits this long for a child to stop before it kills it (its stop-timeout default), plus margin
UNLOAD_WAIT_S = 15.0


class Refusal(Exception):
    """An answer the gate gives itself (status, llama-server error type, message)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_body(status: int, kind: str, message: str) -> bytes:
    """llama-server's error shape.

    >>> json.loads(error_body(507, "insufficient_memory_error", "x"))["error"]["code"]
    507
    """
    return json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode()


class Gate:
    """Serve the gate on ``cfg.listen`` from one asyncio loop in a background thread."""

    def __init__(self, cfg: ShardsConfig, on_loaded: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.specs = cfg.models
        self.budget = int(cfg.memory_budget_bytes or 0)
        self.runtime = cfg.runtime_url.rstrip("/")
        self.states = {n: ShardState(n) for n in self.specs}
        self.on_loaded = on_loaded
        #: requests waiting for room, a load or the runtime
        self.waiting = 0
        self.runtime_up: bool | None = None
        self.passed_total = 0
        self._pending: dict[str, str] = {}  # shard -> "load" | "unload" while the gate drives a change
        #: when the runtime acknowledged the pending change (monotonic): a /models read sent later sees it
        self._posted: dict[str, float] = {}
        #: shards whose pending load the router has reported as started (a "loading" event)
        self._started: set[str] = set()
        #: when the last event (or change the gate drove) for each shard was taken (monotonic): a /models list
        #: sent before it is older news and does not overwrite it
        self._news: dict[str, float] = {}
        self._change: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._session: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pids: dict[int, tuple[Any, str | None]] = {}
        #: the port of each loaded shard's child (from the router's list): requests go to it directly
        self._ports: dict[str, int] = {}
        #: bumped whenever a shard starts loading or unloading: a port read before that belongs to a child gone
        self._generation: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind ``listen`` and start watching the runtime; raises :class:`ControlError` when the port is taken."""
        self._thread = threading.Thread(target=self._serve, name="shard-gate", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            self.stop()
            raise ControlError(f"shard gate on {self.cfg.listen}: {self._failed}")

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            self._failed = exc
            if self._ready.is_set():
                log.critical("shard gate stopped: %r", exc, exc_info=exc)
            self._ready.set()

    async def _main(self) -> None:
        import aiohttp
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._change = asyncio.Event()
        host, port = self.cfg.listen_host_port
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=None),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))
        try:
            site = web.TCPSite(runner, host, port, backlog=256, reuse_address=True)
            await site.start()
            self._publish()
            self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._sync_loop()),
                           asyncio.create_task(self._ttl_loop())]
            self._ready.set()
            log.info("shard gate listening", extra={"fields": {"listen": self.cfg.listen, "runtime": self.runtime,
                                                               "shards": ",".join(self.specs),
                                                               "budget_bytes": self.budget}})
            await self._stopping.wait()
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await runner.cleanup()
            await self._session.close()

    def stop(self) -> None:
        """Stop serving (loaded shards stay as they are: the runtime keeps them)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(15)

    # --- what other threads read -------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every shard's state, counters and wake-up latencies, as plain data (any thread)."""
        return [self.states[n].as_dict(self.specs[n]) for n in self.specs]

    def any_loaded(self) -> bool | None:
        """True while any shard holds memory; ``None`` while the runtime's state is unknown."""
        states = [st.state for st in self.states.values()]
        if self.runtime_up is None or (not self.runtime_up and all(s == "unknown" for s in states)):
            return None
        return any(s in HOLDS_MEMORY for s in states)

    def queue(self) -> int:
        """Requests in flight or waiting for a shard (the policy's queue signal)."""
        return sum(st.in_flight for st in self.states.values()) + self.waiting

    def measure(self, pids: list[int]) -> None:
        """Each loaded shard's resident memory, from the runtime's processes (``--alias NAME`` in a router
        child's command line); called with the pinner's pids, from the daemon's thread."""
        import psutil

        rss: dict[str, int] = {}
        for pid in pids:
            known = self._pids.get(pid)
            try:
                if known is None or not known[0].is_running():
                    proc = psutil.Process(pid)
                    argv = proc.cmdline()
                    alias = argv[argv.index("--alias") + 1] if "--alias" in argv[:-1] else None
                    known = self._pids[pid] = (proc, alias)
                if known[1] in self.states:
                    rss[known[1]] = rss.get(known[1], 0) + known[0].memory_info().rss
            except (psutil.Error, ValueError):
                continue
        for pid in [p for p in self._pids if p not in pids]:
            del self._pids[pid]
        for n, st in self.states.items():
            st.rss_bytes = rss.get(n)

    def _publish(self) -> None:
        """Wake everything that waits for a state change (waiters check again what they wait for)."""
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    async def _changed(self, deadline: float) -> bool:
        """Wait for any state change until ``deadline`` (loop time); False at the deadline."""
        assert self._change is not None and self._loop is not None
        left = deadline - self._loop.time()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(self._change.wait(), left)
            return True
        except asyncio.TimeoutError:
            return False

    # --- the runtime -------------------------------------------------------------------------

    def _set(self, name: str, state: str, exit_code: int | None = None, source: str = "event",
             issued: float | None = None) -> None:
        """Apply a state the runtime reported (``source="sync"``: a ``GET /models`` sent at ``issued``)."""
        st = self.states.get(name)
        if st is None:
            return
        old = st.state
        pending = self._pending.get(name)
        if source == "sync" and issued is not None and self._news.get(name, -1.0) > issued:
            return  # the list was sent before the last event for this shard: that event is newer
        if source != "sync":
            self._news[name] = time.monotonic()
        if source == "sync" and pending:
            # a change the gate drives: a list read before the runtime acknowledged it says nothing about it;
            # one read after it does (the event may have been missed while the event stream reconnected)
            posted = self._posted.get(name)
            if posted is None or issued is None or issued < posted:
                return
            if state not in (("loaded", "sleeping", "unloaded") if pending == "load" else ("unloaded",)):
                return
            st.state = state
            log.info("shard %s: %s -> %s (from the runtime's list)", name, old, state)
            self._publish()
            return
        if state == "unloaded" and pending == "load":
            return  # the failure is handled by _load, which sees the exit code
        if state == "unloaded" and exit_code not in (None, 0) and old == "loaded":
            log.warning("shard %s: runtime child exited with %s while loaded", name, exit_code)
        if old == "failed" and state == "unloaded":
            return  # stays failed until retried
        if state != "loaded":
            self._forget_port(name)
        st.state = state
        if state != old:
            log.info("shard %s: %s -> %s", name, old, state)
        self._publish()

    async def _watch(self) -> None:
        """Follow ``GET /models/sse``; reconnect (and re-read ``/models``) whenever it ends."""
        import aiohttp

        backoff = 0.2
        while True:
            try:
                async with self._session.get(self.runtime + "/models/sse") as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    backoff = 0.2
                    await self._sync()
                    async for raw in resp.content:
                        ev = parse_event(raw.decode("utf-8", "replace").rstrip("\r\n"))
                        if ev is not None:
                            self._on_event(*ev)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as exc:
                log.debug("runtime event stream: %r", exc)
            await self._sync()
            if self.runtime_up:
                continue  # it answers (again): follow its events at once, so that none is missed
            await asyncio.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    def _on_event(self, name: str, state: str, exit_code: int | None) -> None:
        st = self.states.get(name)
        if st is None:
            return
        self._news[name] = time.monotonic()
        if self._pending.get(name) == "load":
            if state == "loading":
                self._started.add(name)  # the router took up this load: its end is this load's end
            elif state == "unloaded":
                if name not in self._started:
                    return  # an earlier child's exit (one killed under a loaded shard), not this load's
                self._forget_port(name)
                st.exit_code = exit_code
                st.state = "unloaded"
                self._publish()
                return
        self._set(name, state, exit_code)

    async def _sync(self) -> None:
        """Read ``GET /models`` once: every shard's state, and whether the runtime answers."""
        import aiohttp

        was = self.runtime_up
        issued, generation = time.monotonic(), dict(self._generation)
        try:
            async with self._session.get(self.runtime + "/models", timeout=aiohttp.ClientTimeout(total=5)) as r:
                text = await r.text() if r.status == 200 else ""
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            text = None
        if text is None:
            self.runtime_up = False
            for n, st in self.states.items():
                self._forget_port(n)
                if n not in self._pending and st.state != "failed":
                    st.state = "unknown"
            if was:
                log.warning("runtime %s is not answering", self.runtime)
            self._publish()
            return
        models = parse_models(text)
        self.runtime_up = True
        for n in self.specs:
            state, failed = models.get(n, ("unknown", False))
            if n not in models and was is not False:
                log.warning("shard %s: the runtime does not list it", n)
            self._set(n, state, source="sync", issued=issued)
        self._learn_ports(text, generation, issued)
        self._publish()
        if was is not True:
            log.info("runtime %s answers", self.runtime)
            await self._preload()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sync_s)
            await self._sync()

    async def _ttl_loop(self) -> None:
        while True:
            await asyncio.sleep(TTL_TICK_S)
            for n, spec in self.specs.items():
                if n not in self._pending and expired(spec, self.states[n], time.monotonic()):
                    await self._unload_if_idle(n)

    async def _unload_if_idle(self, name: str) -> None:
        """Unload ``name`` once its TTL has passed and its child shows no slot processing (a request sent to the
        runtime's own port keeps it in use)."""
        spec = self.specs[name]
        await self._read_slots([name])
        if name not in self._pending and expired(spec, self.states[name], time.monotonic()) and \
                not self.states[name].processing:
            log.info("shard %s: idle for its ttl (%g s): unloading", name, spec.ttl_s)
            self._unload_soon(name)

    async def _read_slots(self, names: list[str]) -> None:
        """Read the slots of these shards' children (those whose port is known): a shard with a slot processing is
        busy (:attr:`ShardState.processing`) and counts as used now."""
        import aiohttp

        async def one(n: str, port: int) -> None:
            st = self.states[n]
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/slots",
                                             timeout=aiohttp.ClientTimeout(total=SLOTS_TIMEOUT_S)) as r:
                    busy = processing_slots(await r.text()) if r.status == 200 else 0
            except asyncio.TimeoutError:
                busy = max(1, st.processing)  # llama-server answers /slots between two decode steps: it is at work
            except (aiohttp.ClientError, OSError, ValueError):
                busy = 0  # the child is gone
            if self._ports.get(n) != port:
                return  # reloaded meanwhile: that child's slots say nothing about this one
            st.processing = busy or 0
            if busy:
                st.last_used, st.last_used_wall = time.monotonic(), time.time()

        reads = []
        for n in names:
            port = self._ports.get(n)
            if port is None or self.states[n].state != "loaded":
                self.states[n].processing = 0
            else:
                reads.append(one(n, port))
        await asyncio.gather(*reads)

    async def _preload(self) -> None:
        """Load the preloaded (and pinned) shards, pinned first, in the background."""
        order = sorted((not s.pinned, n) for n, s in self.specs.items() if s.preload)
        for _, n in order:
            st = self.states[n]
            if st.state in ("unloaded", "sleeping") and n not in self._pending:
                asyncio.create_task(self._preload_one(n))

    async def _preload_one(self, name: str) -> None:
        try:
            await self._acquire(name, time.monotonic(), count=False)
        except Refusal as r:
            log.warning("shard %s: preload: %s", name, r.message)

    async def _post(self, path: str, model: str) -> tuple[int, str]:
        import aiohttp

        try:
            async with self._session.post(self.runtime + path, json={"model": model},
                                          timeout=aiohttp.ClientTimeout(total=10)) as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return 0, str(exc) or type(exc).__name__

    # Every change the gate drives starts with a synchronous step (_begin_*) taken in the same
    # breath as the decision that asked for it, so no other coroutine can decide in between.

    def _begin_load(self, name: str) -> bool:
        """Mark ``name`` loading; False when it was sleeping (a forwarded request wakes it)."""
        st = self.states[name]
        sleeping = st.state == "sleeping"
        self._pending[name] = "load"
        self._started.discard(name)
        st.state = "loading"
        st.exit_code = None
        self._forget_port(name)
        self._publish()
        return not sleeping

    def _forget_port(self, name: str) -> None:
        self._ports.pop(name, None)
        self.states[name].processing = 0
        self._generation[name] = self._generation.get(name, 0) + 1

    def _learn_ports(self, text: str, generation: dict[str, int], issued: float) -> None:
        """Take each loaded shard's child port from a ``GET /models`` answer sent at ``issued`` when the shards'
        generations were ``generation``: a shard that has started loading or unloading since, or that the runtime
        has reported on since, keeps no port from it (that child may be gone, and its port another's)."""
        ports = child_ports(text)
        for n in self.specs:
            if n in ports and self.states[n].state == "loaded" and n not in self._pending \
                    and self._generation.get(n, 0) == generation.get(n, 0) and self._news.get(n, -1.0) <= issued:
                self._ports[n] = ports[n]
            elif n in self._ports:
                self._forget_port(n)

    async def _read_ports(self) -> None:
        """Read the router's list once for the ports of the loaded shards' children (after a load)."""
        import aiohttp

        issued, generation = time.monotonic(), dict(self._generation)
        try:
            async with self._session.get(self.runtime + "/models", timeout=aiohttp.ClientTimeout(total=5)) as r:
                text = await r.text() if r.status == 200 else ""
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return
        self._learn_ports(text, generation, issued)

    async def _load(self, name: str, t0: float, post: bool = True) -> None:
        """Ask the router to load ``name`` (marked by :meth:`_begin_load`) and wait for it; raises
        :class:`Refusal` when it fails."""
        assert self._loop is not None
        st = self.states[name]
        try:
            if not post:  # a sleeping child: the request wakes it
                st.state = "loaded"
                st.loads += 1
                return
            status, text = await self._post("/models/load", name)
            self._posted[name] = time.monotonic()
            if status == 0:
                st.state = "unknown"
                raise Refusal(503, "unavailable_error", f"shard {name}: the runtime is not answering: {text}")
            if status != 200 and "already running" not in text:
                raise self._failed_load(name, f"the runtime refused to load it: {status} {text[:200]}")
            deadline = self._loop.time() + self.cfg.load_timeout_s
            while st.state == "loading":
                if not await self._changed(deadline):
                    break
            if st.state == "loaded":
                wake = time.monotonic() - t0
                st.loads += 1
                st.wake.observe(wake)
                st.last_wake_s = wake
                st.error = st.failed_at = st.failed_files = None
                log.info("shard %s loaded", name, extra={"fields": {"wake_s": round(wake, 3)}})
                if self.on_loaded:
                    self.on_loaded(name)
                self._tasks.append(asyncio.create_task(self._read_ports()))
                self._tasks = [t for t in self._tasks if not t.done()]
                return
            if st.state == "loading":  # still loading at the deadline: stop it
                await self._post("/models/unload", name)
                raise self._failed_load(name, f"not loaded within {self.cfg.load_timeout_s:g} s")
            code = st.exit_code
            raise self._failed_load(name, "the runtime's child exited"
                                          f"{f' with status {code}' if code else ''} while loading it")
        finally:
            self._pending.pop(name, None)
            self._posted.pop(name, None)
            self._news[name] = time.monotonic()
            if st.state == "loading":
                st.state = "unknown"
            self._publish()

    def _failed_load(self, name: str, why: str) -> Refusal:
        st, spec = self.states[name], self.specs[name]
        damaged = check_files(spec.files)
        st.state = "failed"
        st.failures += 1
        st.failed_at = time.monotonic()
        st.failed_files = file_marks(spec.files)
        st.error = f"shard {name} failed to load: {damaged or why}"
        log.error("%s", st.error)
        return Refusal(503, "unavailable_error", st.error)

    def _begin_unload(self, name: str, evicted: bool = False) -> bool:
        """Mark ``name`` unloading (its memory still counts until the runtime says it is gone)."""
        st = self.states[name]
        if name in self._pending or st.state not in ("loaded", "sleeping") or st.in_flight:
            return False
        self._pending[name] = "unload"
        st.state = "unloading"
        self._forget_port(name)
        st.evictions += evicted
        self._publish()
        return True

    async def _unload(self, name: str) -> None:
        """Ask the router to unload ``name`` (marked by :meth:`_begin_unload`) and wait until it is gone."""
        assert self._loop is not None
        st = self.states[name]
        try:
            status, text = await self._post("/models/unload", name)
            self._posted[name] = time.monotonic()
            if status == 200:
                deadline = self._loop.time() + UNLOAD_WAIT_S
                while st.state == "unloading":
                    if not await self._changed(deadline):
                        break
            if status == 200 or "not running" in text:
                if st.state == "unloading":
                    st.state = "unloaded" if status != 200 else "unknown"
                st.unloads += 1
                log.info("shard %s unloaded", name)
            else:
                st.state = "unknown"
                log.warning("shard %s: unload: %s %s", name, status, text[:200])
        finally:
            self._pending.pop(name, None)
            self._posted.pop(name, None)
            self._news[name] = time.monotonic()
            self._publish()

    def _unload_soon(self, name: str, evicted: bool = False) -> asyncio.Task[None] | None:
        if not self._begin_unload(name, evicted):
            return None
        return asyncio.create_task(self._unload(name))

    # --- admission ---------------------------------------------------------------------------

    def _still_failed(self, name: str) -> bool:
        st, spec = self.states[name], self.specs[name]
        if st.state != "failed":
            return False
        if st.failed_files is not None and file_marks(spec.files) != st.failed_files:
            return False  # a file changed: try again
        return st.failed_at is not None and time.monotonic() - st.failed_at < self.cfg.retry_failed_s

    async def _acquire(self, name: str, t0: float, count: bool = True) -> None:
        """Make ``name`` loaded and (``count``) count one request in it; raises :class:`Refusal`."""
        assert self._loop is not None
        st = self.states[name]
        if st.state == "loaded" and name not in self._pending:
            st.in_flight += count
            return
        deadline = self._loop.time() + self.cfg.wait_s
        self.waiting += count
        fresh = False  # the children's slots were read since the last change
        try:
            while True:
                if self._still_failed(name):
                    st.refusals += count
                    raise Refusal(503, "unavailable_error", st.error or f"shard {name} failed to load")
                if st.state == "loaded" and name not in self._pending:
                    st.in_flight += count
                    return
                if st.state == "loading" or name in self._pending or not self.runtime_up:
                    fresh = False
                    if not await self._changed(deadline):
                        raise self._timeout(name, count)
                    continue
                d: Decision = plan_admission(name, self.specs, self.states, self.budget)
                if d.action in ("evict", "wait") and not fresh:
                    # room is short: which loaded shards are busy with requests that did not come through here?
                    await self._read_slots([n for n in self.specs if n != name])
                    fresh = True
                    continue
                fresh = False
                if d.action == "refuse":
                    st.refusals += count
                    log.warning("refused a request: %s", d.reason)
                    raise Refusal(507, "insufficient_memory_error", d.reason)
                if d.action == "admit":
                    st.in_flight += count  # counted before the load: never picked as a victim
                    post = self._begin_load(name)
                    try:
                        await self._load(name, t0, post)
                    except BaseException:
                        st.in_flight -= count
                        raise
                    st.last_used, st.last_used_wall = time.monotonic(), time.time()
                    return
                if d.action == "evict":
                    log.info("%s", d.reason)
                    tasks = [t for t in (self._unload_soon(v, evicted=True) for v in d.victims) if t]
                    if tasks:
                        await asyncio.gather(*tasks)
                    elif not await self._changed(min(deadline, self._loop.time() + BUSY_POLL_S)) and \
                            self._loop.time() >= deadline:  # none could start (one is still being loaded)
                        raise self._timeout(name, count, d.reason)
                    continue
                # d.action == "wait": until a change, or (a shard may be busy outside the gate) the next look at the slots
                if not await self._changed(min(deadline, self._loop.time() + BUSY_POLL_S)) and \
                        self._loop.time() >= deadline:
                    raise self._timeout(name, count, d.reason)
        finally:
            self.waiting -= count
            self._publish()

    def _timeout(self, name: str, count: bool, why: str | None = None) -> Refusal:
        self.states[name].refusals += count
        if not self.runtime_up:
            why = f"the runtime {self.runtime} is not answering"
        return Refusal(503, "unavailable_error",
                       f"shard {name}: not served within {self.cfg.wait_s:g} s: {why or 'still loading'}")

    def _release(self, name: str) -> None:
        st, spec = self.states[name], self.specs[name]
        st.in_flight -= 1
        st.last_used, st.last_used_wall = time.monotonic(), time.time()
        if st.in_flight == 0 and spec.ttl_s == 0 and not spec.pinned:
            self._tasks.append(asyncio.create_task(self._unload_if_idle(name)))
            self._tasks = [t for t in self._tasks if not t.done()]
        self._publish()

    # --- requests ----------------------------------------------------------------------------

    async def _handle(self, request: Any) -> Any:
        body = await request.read()
        name = request_model(request.method, request.query, body)
        if name not in self.specs:
            self.passed_total += 1
            return await self._forward(request, body)
        t0 = time.monotonic()
        for attempt in (0, 1):
            try:
                await self._acquire(name, t0)
            except Refusal as r:
                return self._answer(r.status, r.kind, r.message)
            try:
                resp = await self._forward(request, body, shard=name if attempt == 0 else None)
            finally:
                self._release(name)
            if resp is not NOT_LOADED:
                return resp
            # the runtime lost the shard underneath (its child died): wait (bounded) until it says so, then
            # load it again, once; the request never reached a child, so sending it again is safe
            st = self.states[name]
            deadline = self._loop.time() + min(self.cfg.wait_s, 10.0)  # type: ignore[union-attr]
            while st.state == "loaded" and name not in self._pending and st.in_flight == 0:
                if not await self._changed(deadline):
                    break
            if st.state == "loaded" and name not in self._pending and st.in_flight == 0:
                st.state = "unloaded"
                self._forget_port(name)
        return self._answer(502, "unavailable_error", f"shard {name}: the runtime does not keep it loaded")

    async def _forward(self, request: Any, body: bytes, shard: str | None = None) -> Any:
        """Send the request unchanged to the shard's child when its port is known, else to the runtime, and
        relay the answer (streamed when large or an event stream). With ``shard``, a ``model is not loaded``
        answer returns :data:`NOT_LOADED`."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        port = self._ports.get(shard) if shard else None
        if port is not None and self.states[shard].state == "loaded" and \
                not request.path.startswith(ROUTER_OWN):  # type: ignore[index]
            resp = await self._relay(request, body, headers, f"http://127.0.0.1:{port}", shard, direct=True)
            if resp is not NOT_TAKEN:
                return resp
            if self._ports.get(shard) == port:  # type: ignore[arg-type]
                self._forget_port(shard)  # type: ignore[arg-type]
        return await self._relay(request, body, headers, self.runtime, shard)

    async def _relay(self, request: Any, body: bytes, headers: dict[str, str], base: str, shard: str | None,
                     direct: bool = False) -> Any:
        """One try at ``base`` (``direct``: a child, which gives :data:`NOT_TAKEN` when it does not take the
        request, before any of the answer was relayed)."""
        import aiohttp
        from aiohttp import web

        url = base + str(request.rel_url)
        started = False
        for attempt in (0, 1):
            try:
                async with self._session.request(request.method, url, headers=headers, data=body or None,
                                                 allow_redirects=False) as up:
                    out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
                    length = up.content_length
                    head, whole = b"", False
                    if not up.headers.get("Content-Type", "").startswith("text/event-stream") and \
                            (up.status >= 400 or (length is None and shard is not None) or
                             (length is not None and length <= RELAY_ABOVE)):
                        # errors, small answers and a shard's answers that are not event streams are read whole
                        # up to RELAY_ABOVE, whatever their framing (llama-server sends a completion chunked, in
                        # one piece at its end): one write, and an error that says the shard's child is gone can
                        # be acted on
                        head, whole = await read_bounded(up.content, RELAY_ABOVE)
                    if whole:
                        if shard and lost_child(up.status, head):
                            return NOT_LOADED
                        return web.Response(status=up.status, body=head, headers=out_headers)
                    resp = web.StreamResponse(status=up.status, headers=out_headers)
                    started = True
                    await resp.prepare(request)
                    if head:
                        await resp.write(head)
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                    await resp.write_eof()
                    return resp
            except aiohttp.ServerDisconnectedError:
                if started:
                    raise
                if direct and attempt == 1:
                    return NOT_TAKEN
                if attempt == 0:
                    continue  # a kept-alive connection the runtime had just closed: once more, on a new one
                return self._answer(502, "unavailable_error", "the runtime closed the connection")
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                if started:
                    raise
                if direct:
                    return NOT_TAKEN
                return self._answer(502, "unavailable_error", f"the runtime is not answering: {exc}")
        return self._answer(502, "unavailable_error", "the runtime closed the connection")

    @staticmethod
    def _answer(status: int, kind: str, message: str) -> Any:
        from aiohttp import web

        return web.Response(status=status, body=error_body(status, kind, message), content_type="application/json")


#: what :meth:`Gate._forward` returns when the runtime says the shard is not loaded
NOT_LOADED = object()
#: what :meth:`Gate._relay` returns when a shard's child did not take the request (it is sent via the router)
NOT_TAKEN = object()


async def read_bounded(stream: Any, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of an aiohttp stream: ``(data, True)`` when that is all of it, else what was
    read so far and False (the caller relays the rest)."""
    parts, n = [], 0
    while n <= limit:
        chunk = await stream.read(limit + 1 - n)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        n += len(chunk)
    return b"".join(parts), False


def lost_child(status: int, body: bytes) -> bool:
    """True when the router answered that the shard's child is gone: it is not loaded (400), or the child
    did not take the connection (500 ``proxy error``: killed, and the router has not reaped it yet).

    >>> lost_child(400, b'{"error":{"code":400,"message":"model is not loaded"}}'), lost_child(500, b"proxy error: x")
    (True, True)
    >>> lost_child(400, b'{"error":{"message":"model name is missing from the request"}}')
    False
    """
    return (status == 400 and b"model is not loaded" in body) or (status == 500 and body.startswith(b"proxy error"))
