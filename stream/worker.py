"""The one worker thread that owns the model(s) and runs every job.

    websocket handler ──reserve──▶ uploading ──submit──▶ waiting ──admit──▶ running ──▶ finished
                                        │ release            │ cancel          │ cancel (program.close())
                                        ▼                    ▼ on_dropped      ▼
                                     (gone)               finished          finished

The worker interleaves the running jobs round-robin, one step each (a step is one ``next()`` of the job's
program, which yields after each analysis event), so every client streams while one model serves all;
a job's own frames stay in order. At most ``max_jobs`` run at once and ``max_queue`` more may wait;
beyond that ``reserve`` raises ``Busy`` before any byte is uploaded, as it does when one client (``job.client``,
its IP address) already has ``max_per_client`` jobs uploading, waiting or running: one client cannot take
every slot.

A job binds the engine that is current when it is admitted and finishes on it, even if another engine is
installed meanwhile (``set_engine``); an engine is closed once it is neither current nor used.

Threads: the asyncio loop owns a Job's message log and watchers; the worker thread runs programs and
``publish``es through ``loop.call_soon_threadsafe``. ``cancel`` may come from either side; the worker
checks it before every step, so a cancelled job stops within one step (well under a second on CPU).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stream.jobs import Job

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger("dff.worker")

Program = Iterator[None]
ProgramFactory = Callable[[Job, "Engine | None"], Program]


class Busy(Exception):
    """The worker has ``max_jobs + max_queue`` jobs (uploading, waiting or running)."""


class ClientBusy(Busy):
    """One client already has ``max_per_client`` jobs uploading, waiting or running."""


class ShuttingDown(Exception):
    """The worker takes no new jobs."""


@dataclass(frozen=True, slots=True)
class Depth:
    """How many jobs are where, for ``/healthz``."""

    uploading: int
    waiting: int
    running: int
    capacity: int  # max_jobs + max_queue

    def to_json(self) -> dict[str, int]:
        return {
            "uploading": self.uploading,
            "waiting": self.waiting,
            "running": self.running,
            "capacity": self.capacity,
        }


@dataclass
class _Slot:
    job: Job
    program: Program
    engine: Engine | None
    started: bool = False


class Worker:
    """The one thread that runs analysis. A context manager: ``close()`` stops it and closes engines."""

    def __init__(
        self,
        engine: Engine | None,
        program: ProgramFactory,
        *,
        max_jobs: int,
        max_queue: int,
        on_dropped: Callable[[Job, str], None],
        on_queued: Callable[[Job, int], None] = lambda job, position: None,
        max_per_client: int = 0,
    ) -> None:
        """``program(job, engine)`` makes a job's generator; it yields after each event it publishes and
        handles its own errors (GeneratorExit included: that is how a running job is cancelled).
        ``on_dropped(job, reason)`` is called for a job cancelled before its program ran a step;
        ``on_queued(job, position)`` when a waiting job's place in line changes. Both on the worker thread.
        ``max_per_client``: jobs one ``job.client`` may hold at once (0 = no cap).
        """
        if max_jobs < 1 or max_queue < 0 or max_per_client < 0:
            raise ValueError(f"need max_jobs >= 1, max_queue >= 0, max_per_client >= 0, got {max_jobs}, {max_queue}")
        self._engine = engine
        self._program = program
        self.max_jobs = max_jobs
        self.max_queue = max_queue
        self.max_per_client = max_per_client
        self._on_dropped = on_dropped
        self._on_queued = on_queued
        self._cond = threading.Condition()
        self._uploading: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._running: list[_Slot] = []
        self._engine_users: dict[int, int] = {}
        self._accepting = True
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="dff-worker", daemon=True)
        self._thread.start()

    # -- called from the event loop ------------------------------------------------------------------------

    def reserve(self, job: Job) -> None:
        """Take a slot for a job about to upload. Raises Busy (ClientBusy for the per-client cap) or ShuttingDown."""
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            held = [*self._uploading.values(), *self._waiting, *(s.job for s in self._running)]
            if len(held) >= self.max_jobs + self.max_queue:
                limit = self.max_jobs + self.max_queue
                raise Busy(f"{len(held)} jobs are uploading, waiting or running (limit {limit})")
            if self.max_per_client and job.client is not None:
                mine = sum(1 for j in held if j.client == job.client)
                if mine >= self.max_per_client:
                    raise ClientBusy(
                        f"this client ({job.client}) already has {mine} jobs uploading, waiting or running "
                        f"(limit {self.max_per_client} per client)"
                    )
            self._uploading[job.id] = job
            job._wake = self._notify

    def release(self, job: Job) -> None:
        """Give back the slot of a job whose upload failed, and delete what it uploaded."""
        with self._cond:
            self._uploading.pop(job.id, None)
            job.state = "finished"
        job.cleanup()

    def submit(self, job: Job) -> int:
        """Queue an uploaded job; returns its place in line (0 = next). Raises ShuttingDown."""
        with self._cond:
            self._uploading.pop(job.id, None)
            if not self._accepting:
                job.state = "finished"
                raise ShuttingDown("the server is shutting down")
            job.state = "waiting"
            job.position = max(0, len(self._waiting) - (self.max_jobs - len(self._running)))
            self._waiting.append(job)
            self._cond.notify_all()
            return job.position

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

    def depth(self) -> Depth:
        with self._cond:
            return Depth(len(self._uploading), len(self._waiting), len(self._running), self.max_jobs + self.max_queue)

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def drain(self, timeout_s: float) -> bool:
        """Block until no job waits or runs, at most ``timeout_s``; True when drained."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._waiting or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def cancel_all(self, reason: str) -> list[Job]:
        """Cancel every waiting and running job; returns them."""
        with self._cond:
            jobs = self._waiting + [s.job for s in self._running]
        for job in jobs:
            job.cancel(reason)
        return jobs

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

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker thread ---------------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        turn = 0
        while True:
            dropped: list[Job] = []
            moved: list[tuple[Job, int]] = []
            with self._cond:
                while True:
                    dropped += [j for j in self._waiting if j.cancelled]
                    self._waiting = [j for j in self._waiting if not j.cancelled]
                    while self._waiting and len(self._running) < self.max_jobs:
                        self._admit(self._waiting.pop(0))
                    for position, job in enumerate(self._waiting):
                        if job.position != position:
                            job.position = position
                            moved.append((job, position))
                    if self._running or dropped or moved:
                        break
                    self._cond.notify_all()  # wakes drain(): nothing waits or runs
                    if self._closing:
                        return
                    self._cond.wait()
                slot = self._running[turn % len(self._running)] if self._running else None
            for job in dropped:
                self._drop(job, job.cancel_reason or "cancelled")
            for job, position in moved:
                self._call(self._on_queued, job, position)
            if slot is None:
                continue
            if self._step(slot):
                turn += 1
            else:
                self._finish(slot)

    def _admit(self, job: Job) -> None:
        """Under the lock: bind the current engine and make the job's program."""
        engine = self._engine
        if engine is not None:
            self._engine_users[id(engine)] = self._engine_users.get(id(engine), 0) + 1
        job.state = "running"
        job.position = None
        self._running.append(_Slot(job, self._program(job, engine), engine))

    def _step(self, slot: _Slot) -> bool:
        """Advance one job by one event; False when it is over (finished, failed or cancelled)."""
        if slot.job.cancelled:
            if slot.started:
                try:
                    slot.program.close()
                except Exception:
                    log.exception("job %s: error while cancelling", slot.job.id)
            else:
                self._drop(slot.job, slot.job.cancel_reason or "cancelled")
            return False
        slot.started = True
        try:
            next(slot.program)
        except StopIteration:
            return False
        except Exception:  # programs handle their own errors; this is the last line of defence
            log.exception("job %s: the program raised", slot.job.id)
            return False
        return True

    def _finish(self, slot: _Slot) -> None:
        with self._cond:
            self._running.remove(slot)
            slot.job.state = "finished"
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
        slot.job.cleanup()

    def _drop(self, job: Job, reason: str) -> None:
        job.state = "finished"
        self._call(self._on_dropped, job, reason)
        job.cleanup()

    @staticmethod
    def _call(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("worker callback %s failed", getattr(fn, "__name__", fn))
