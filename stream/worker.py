"""``LocalBackend``: the one worker thread in this process that owns the model(s) and runs every job.

    reserve ──▶ uploading ──submit──▶ waiting ──admit──▶ running ──final event──▶ (gone)
                    │ release            │ cancel           │ cancel: program.close(), then Stopped
                    ▼                    ▼ Stopped          ▼
                 (gone)               (gone)            Failed("internal") if the program raises

These are the backend's scheduling lists, not a job's lifecycle: that is ``Job.state`` (stream/jobs.py),
which follows the events this backend streams. The worker interleaves the running jobs round-robin, one
step each (a step is one ``next()`` of the job's program, which yields one ``BackendEvent``), so every
client streams while one model serves all; a job's own events stay in order. A job whose channel holds
``event_queue_size`` undelivered events is skipped until the event loop takes one: a lagging consumer
never holds up the other jobs, and nothing piles up. At most ``max_jobs`` run at once and ``max_queue``
more may wait; beyond that ``reserve`` raises ``Busy`` before any byte is uploaded, as it does when one
client already has ``max_per_client`` jobs uploading, waiting or running.

A live job's program also has ``ready()`` and ``stop()`` (stream/live_program.py): the worker steps it only
when ``ready()`` says its next step will not wait on the source (a frame waits, the source ended, or it
failed), so a stalled stream never holds up the other jobs; the source's reader thread wakes the worker
(``wake``) when a frame arrives, and while live jobs run the worker also looks every ``LIVE_POLL_S``
(a pushing client's timeout has nobody to wake it). ``finish`` calls ``stop()``: the session ends with
its report. At most ``max_live`` live jobs hold slots at once.

A job binds the engine that is current when it is admitted and finishes on it, even if another engine is
installed meanwhile (``set_engine``); an engine is closed once it is neither current nor used.

Threads: the event loop calls every public method (each takes the lock briefly, never waits on a job);
the worker thread runs programs and puts their events into each job's channel with
``loop.call_soon_threadsafe``. A cancelled job stops within one step (well under a second on CPU).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream import protocol as p
from stream.backend import (
    EVENT_QUEUE_SIZE,
    FINAL_EVENTS,
    BackendEvent,
    Depth,
    Failed,
    JobSpec,
    ShuttingDown,
    Stopped,
    check_slot,
)

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger("dff.worker")

Program = Iterator[BackendEvent]
ProgramFactory = Callable[[JobSpec, "Engine | None", Callable[[], None]], Program]  # (spec, engine, wake)
LIVE_POLL_S = 0.25  # how often a worker with live jobs looks at them without being woken


def _ready(program: Program | None) -> bool:
    """Whether one step of ``program`` returns without waiting (a file job's always does)."""
    ready = getattr(program, "ready", None)
    return True if ready is None else bool(ready())


def _is_live(slot: _Slot) -> bool:
    return getattr(slot.spec.request, "live", None) is not None


class _Channel:
    """One job's events from the worker thread to the event loop, at most ``size`` undelivered (the final
    event may go one over). The async iterator the backend returns from ``submit``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, taken: Callable[[], None]) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[BackendEvent] = asyncio.Queue()
        self._size = size
        self._taken = taken  # wakes the worker: this job may have room again
        self._lock = threading.Lock()
        self._in_flight = 0
        self._ended = False

    def has_room(self) -> bool:
        with self._lock:
            return self._in_flight < self._size

    def put(self, event: BackendEvent) -> None:
        """From any thread."""
        with self._lock:
            self._in_flight += 1
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is gone, nobody can receive it
            log.debug("event dropped, event loop closed: %.80r", event)

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> BackendEvent:
        if self._ended:
            raise StopAsyncIteration
        event = await self._queue.get()
        with self._lock:
            self._in_flight -= 1
        self._taken()
        self._ended = isinstance(event, FINAL_EVENTS)
        return event


@dataclass(eq=False)
class _Slot:
    spec: JobSpec
    channel: _Channel
    program: Program | None = None
    engine: Engine | None = None
    cancel_reason: str | None = None
    position: int = 0
    finish_requested: bool = False  # finish() came while the job waited


class LocalBackend:
    """The in-process ``AnalysisBackend``. A context manager: ``close()`` stops the thread and closes engines."""

    def __init__(
        self,
        engine: Engine | None,
        program: ProgramFactory,
        *,
        max_jobs: int,
        max_queue: int,
        max_per_client: int = 0,
        max_live: int = 2,
        event_queue_size: int = EVENT_QUEUE_SIZE,
    ) -> None:
        """``program(spec, engine, wake)`` makes a job's generator (run on the worker thread): it yields
        events and ends with a final one; if it raises instead, the job ends with ``Failed("internal")``
        (logged). ``wake()`` may be called from any thread when a live program may have become ready.
        ``max_per_client``: jobs one ``spec.client`` may hold at once (0 = no cap); ``max_live``: live jobs."""
        if max_jobs < 1 or max_queue < 0 or max_per_client < 0 or event_queue_size < 1:
            raise ValueError(
                f"need max_jobs >= 1, max_queue >= 0, max_per_client >= 0, event_queue_size >= 1, got "
                f"{max_jobs}, {max_queue}, {max_per_client}, {event_queue_size}"
            )
        self._engine = engine
        self._program = program
        self.max_jobs = max_jobs
        self.max_queue = max_queue
        self.max_per_client = max_per_client
        self.max_live = max_live
        self._live_ids: set[str] = set()  # live jobs holding slots (reserved, waiting or running)
        self._event_queue_size = event_queue_size
        self._cond = threading.Condition()
        self._uploading: dict[str, str | None] = {}  # job id -> client
        self._waiting: list[_Slot] = []
        self._running: list[_Slot] = []
        self._engine_users: dict[int, int] = {}
        self._accepting = True
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="dff-worker", daemon=True)
        self._thread.start()

    # -- the AnalysisBackend protocol (event loop) -------------------------------------------------------------

    def reserve(self, job_id: str, client: str | None, *, live: bool = False) -> None:
        with self._cond:
            check_slot(
                accepting=self._accepting,
                live=live,
                live_held=len(self._live_ids),
                max_live=self.max_live,
                held=[*self._uploading.values(), *(s.spec.client for s in (*self._waiting, *self._running))],
                client=client,
                max_jobs=self.max_jobs,
                max_queue=self.max_queue,
                max_per_client=self.max_per_client,
            )
            self._uploading[job_id] = client
            if live:
                self._live_ids.add(job_id)

    def release(self, job_id: str) -> None:
        with self._cond:
            self._uploading.pop(job_id, None)
            self._live_ids.discard(job_id)

    def submit(self, spec: JobSpec) -> _Channel:
        channel = _Channel(asyncio.get_running_loop(), self._event_queue_size, self._notify)
        with self._cond:
            self._uploading.pop(spec.job_id, None)
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            position = max(0, len(self._waiting) - (self.max_jobs - len(self._running)))
            self._waiting.append(_Slot(spec, channel, position=position))
            channel.put(p.Progress(spec.job_id, "queued", 0, None, position))
            self._cond.notify_all()
        return channel

    def cancel(self, job_id: str, reason: str) -> None:
        with self._cond:
            for slot in (*self._waiting, *self._running):
                if slot.spec.job_id == job_id and slot.cancel_reason is None:
                    slot.cancel_reason = reason
                    self._cond.notify_all()

    def finish(self, job_id: str) -> None:
        with self._cond:
            for slot in (*self._waiting, *self._running):
                stop = getattr(slot.program, "stop", None)
                if slot.spec.job_id == job_id and slot.cancel_reason is None:
                    if stop is not None:
                        stop()
                    else:  # not admitted yet: stopped as soon as it is, so it ends as a running one would
                        slot.finish_requested = True
                    self._cond.notify_all()

    def cancel_all(self, reason: str) -> int:
        with self._cond:
            slots = [*self._waiting, *self._running]
            for slot in slots:
                if slot.cancel_reason is None:
                    slot.cancel_reason = reason
            self._cond.notify_all()
            return len(slots)

    def depth(self) -> Depth:
        with self._cond:
            return Depth(len(self._uploading), len(self._waiting), len(self._running), self.max_jobs + self.max_queue)

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    async def drain(self, timeout_s: float) -> bool:
        return await asyncio.to_thread(self.wait_drained, timeout_s)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- this backend's own -------------------------------------------------------------------------------------

    def set_engine(self, engine: Engine) -> None:
        """Make ``engine`` current for jobs admitted from now on; jobs running keep theirs."""
        with self._cond:
            old, self._engine = self._engine, engine
            close_old = old is not None and old is not engine and not self._engine_users.get(id(old))
        if close_old and old is not None:
            old.close()

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until no job waits or runs, at most ``timeout_s``; True when drained."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._waiting or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (cancelling what is left as "interrupted") and close every engine."""
        self.stop_accepting()
        self.cancel_all("interrupted")
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("the worker did not stop within %.0f s; engines are left open", timeout_s)
            return
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker thread -----------------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        turn = 0
        while True:
            with self._cond:
                while True:
                    dropped = [s for s in self._waiting if s.cancel_reason is not None]
                    self._waiting = [s for s in self._waiting if s.cancel_reason is None]
                    for gone in dropped:
                        self._live_ids.discard(gone.spec.job_id)
                    while self._waiting and len(self._running) < self.max_jobs:
                        self._admit(self._waiting.pop(0))
                    moved = [s for position, s in enumerate(self._waiting) if s.position != position]
                    for position, slot in enumerate(self._waiting):
                        slot.position = position
                    ready = [
                        s
                        for s in self._running
                        if s.cancel_reason is not None or (s.channel.has_room() and _ready(s.program))
                    ]
                    if ready or dropped or moved:
                        break
                    self._cond.notify_all()  # wakes wait_drained() when nothing waits or runs
                    if self._closing and not self._running:
                        return
                    self._cond.wait(LIVE_POLL_S if any(_is_live(s) for s in self._running) else None)
                slot = ready[turn % len(ready)] if ready else None
            for gone in dropped:
                gone.channel.put(Stopped(gone.cancel_reason or "cancelled"))
            for waiting in moved:
                waiting.channel.put(p.Progress(waiting.spec.job_id, "queued", 0, None, waiting.position))
            if slot is None:
                continue
            if self._step(slot):
                turn += 1
            else:
                self._finish(slot)

    def _admit(self, slot: _Slot) -> None:
        """Under the lock: bind the current engine and make the job's program."""
        engine = self._engine
        if engine is not None:
            self._engine_users[id(engine)] = self._engine_users.get(id(engine), 0) + 1
        slot.engine = engine
        slot.program = self._program(slot.spec, engine, self._notify)
        stop = getattr(slot.program, "stop", None)
        if slot.finish_requested and stop is not None:
            stop()
        self._running.append(slot)

    def _step(self, slot: _Slot) -> bool:
        """Advance one job by one event; False once its final event is sent (the program is closed first,
        so its file is released before the event loop hears of the end)."""
        assert slot.program is not None
        job_id = slot.spec.job_id
        if slot.cancel_reason is not None:
            self._close(slot)
            slot.channel.put(Stopped(slot.cancel_reason))
            return False
        try:
            event = next(slot.program)
        except StopIteration:
            log.error("job %s: the program ended without a final event", job_id)
            event = Failed("internal", f"internal server error (logged as job {job_id})")
        except Exception:  # a bug in the program: its watchers hear of it, the job is stored as failed
            log.exception("job %s: the program raised", job_id)
            event = Failed("internal", f"internal server error (logged as job {job_id})")
        if not isinstance(event, FINAL_EVENTS):
            slot.channel.put(event)
            return True
        self._close(slot)
        slot.channel.put(event)
        return False

    @staticmethod
    def _close(slot: _Slot) -> None:
        assert slot.program is not None
        try:
            slot.program.close()
        except Exception:
            log.exception("job %s: error while closing its program", slot.spec.job_id)

    def _finish(self, slot: _Slot) -> None:
        with self._cond:
            self._running.remove(slot)
            self._live_ids.discard(slot.spec.job_id)
            close_engine = None
            if slot.engine is not None:
                key = id(slot.engine)
                self._engine_users[key] -= 1
                if not self._engine_users[key]:
                    del self._engine_users[key]
                    if slot.engine is not self._engine:
                        close_engine = slot.engine
            self._cond.notify_all()
        if close_engine is not None:
            close_engine.close()
