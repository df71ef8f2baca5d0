"""``RayBackend``: the ``AnalysisBackend`` whose jobs run on a pool of Ray actors, each holding one engine.

    reserve ──▶ uploading ──submit──▶ waiting ──admit (an alive actor)──▶ running ──final event──▶ (gone)
                                        ▲                                   │ its actor died: once more, from
                                        └──────── front of the queue ───────┘ the start; then Failed worker_lost

Scheduling is LocalBackend's (stream/worker.py): ``max_jobs`` run at once, ``max_queue`` more wait with
``progress(queued)`` positions, ``max_per_client`` and ``max_live`` caps, Busy before any byte is uploaded.
A job is admitted to the alive actor with the fewest jobs; an actor runs several at once, their steps
taking turns on its engine (stream/ray_actor.py), so spreading ``max_jobs`` over the pool changes what a
client sees only in speed. A job binds the model that is current when it is first admitted.

One asyncio task per job (its pump) does the job's work on the event loop and never blocks it: it waits
to be admitted, then runs attempts (stream/ray_job.py: the upload ``ray.put`` in a thread, the actor's
streaming generator iterated with ``await``, each event into the job's bounded stream; while the stream
is full it stops pulling, and Ray's generator backpressure pauses the actor). ``cancel`` ``ray.cancel``s
the generator: the actor stops within one step and the stream ends ``Stopped(reason)`` (after
``CANCEL_GRACE_S`` it ends anyway). Events that come after a cancel are dropped, a late final one too, as
on LocalBackend.

Faults: an actor (or its node) that dies mid-job fails its generator with a RayActorError. A file job is
then retried once, from the start, on another actor, and what its client already got is not sent again
(``accepted``, a ``progress`` stage already sent, frames below the next ``seq``). A live job (its stream
went on meanwhile) and a second loss end ``Failed("worker_lost")``, as does a retry that finds no actor
within ``RETRY_WAIT_S``. The pool (stream/ray_pool.py) pings the actors from a thread and
replaces each dead one; ``depth().workers`` shows each actor's state for /healthz.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ray

from pipeline.config import Settings
from stream import protocol as p
from stream.backend import (
    EVENT_QUEUE_SIZE,
    BackendEvent,
    Depth,
    Failed,
    JobSpec,
    ShuttingDown,
    Stopped,
    check_slot,
)
from stream.ray_actor import LOST_ERRORS, first_line
from stream.ray_job import CANCEL_GRACE_S, JobStream, RayJob, run_attempt
from stream.ray_pool import Pool, WorkerState

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger("dff.ray")

MAX_ATTEMPTS = 2  # a file job whose actor dies is run once more, on another actor
RETRY_WAIT_S = 60.0  # how long a job to retry waits for an actor before it fails worker_lost
# the code of a job whose worker died: stream/protocol.py's ERROR_CODES lists it
WORKER_LOST = "worker_lost"
PUSH_REFUSED = (
    "push sessions (frames sent over this connection) need the local backend (DFF_BACKEND=local): on Ray the "
    "analysis runs in an actor elsewhere, which cannot read this connection; watch a URL instead"
)


@dataclass(frozen=True, slots=True)
class RayDepth(Depth):
    """``Depth`` plus the pool's actors (``workers``, for /healthz)."""

    workers: tuple[WorkerState, ...] = ()


class RayBackend:
    """Jobs on Ray actors (see the module docstring). Built in a thread (it connects to Ray and waits for
    the pool's first actor); every protocol method but ``set_engine`` then runs on the event loop."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None,
        *,
        max_jobs: int,
        max_queue: int,
        max_per_client: int = 0,
        max_live: int = 2,
        event_queue_size: int = EVENT_QUEUE_SIZE,
    ) -> None:
        """Connects to ``settings.ray_address`` (None: starts a local Ray, shut down by ``aclose``; a driver
        already connected is used as it is) and starts ``settings.ray_actors`` actors with ``engine``'s
        model. Raises ConfigError when no actor comes up within ``pool.START_TIMEOUT_S``."""
        if max_jobs < 1 or max_queue < 0 or max_per_client < 0 or event_queue_size < 1:
            raise ValueError(
                f"need max_jobs >= 1, max_queue >= 0, max_per_client >= 0, event_queue_size >= 1, got "
                f"{max_jobs}, {max_queue}, {max_per_client}, {event_queue_size}"
            )
        self.max_jobs = max_jobs
        self.max_queue = max_queue
        self.max_per_client = max_per_client
        self.max_live = max_live
        self._event_queue_size = event_queue_size
        self._started_ray = False
        if not ray.is_initialized():  # None: a Ray of our own on this machine (no dashboard: nobody to see it)
            extra = {"include_dashboard": False} if settings.ray_address is None else {}
            # "local", not None: None would join whatever cluster /tmp/ray/ray_current_cluster names, even a
            # stale one another program (or a test's cluster) left there
            ray.init(address=settings.ray_address or "local", **extra)
            self._started_ray = True
        self._engine = engine
        self._uploading: dict[str, str | None] = {}  # job id -> client
        self._live_ids: set[str] = set()
        self._waiting: list[RayJob] = []
        self._running: list[RayJob] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = Pool(settings, max_jobs, on_change=self._pool_changed)
        try:
            self._pool.start(engine)
        except BaseException:
            self._pool.close()
            if self._started_ray:
                ray.shutdown()
            raise

    # -- the AnalysisBackend protocol (event loop) -------------------------------------------------------------

    def reserve(self, job_id: str, client: str | None, *, live: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        check_slot(
            accepting=self._accepting,
            live=live,
            live_held=len(self._live_ids),
            max_live=self.max_live,
            held=[*self._uploading.values(), *(j.spec.client for j in (*self._waiting, *self._running))],
            client=client,
            max_jobs=self.max_jobs,
            max_queue=self.max_queue,
            max_per_client=self.max_per_client,
        )
        self._uploading[job_id] = client
        if live:
            self._live_ids.add(job_id)

    def release(self, job_id: str) -> None:
        self._uploading.pop(job_id, None)
        self._live_ids.discard(job_id)

    def submit(self, spec: JobSpec) -> JobStream:
        self._loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        stream = JobStream(self._event_queue_size, changed)
        self._uploading.pop(spec.job_id, None)
        if not self._accepting:
            self._live_ids.discard(spec.job_id)
            raise ShuttingDown("the server is shutting down")
        job = RayJob(spec, stream, changed, live=getattr(spec.request, "live", None) is not None)
        if spec.feed is not None:  # a push session's frames come over this process's connection
            self._live_ids.discard(spec.job_id)
            stream.put(Failed("bad_config", PUSH_REFUSED))
            return stream
        job.position = max(0, len(self._waiting) - (self.max_jobs - len(self._running)))
        self._waiting.append(job)
        stream.put(p.Progress(spec.job_id, "queued", 0, None, job.position))
        task = asyncio.create_task(self._pump(job), name=f"ray-job-{spec.job_id}")
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        self._schedule()
        return stream

    def cancel(self, job_id: str, reason: str) -> None:
        for job in (*self._waiting, *self._running):
            if job.spec.job_id == job_id:
                self._cancel(job, reason)
        self._schedule()

    def finish(self, job_id: str) -> None:
        for job in (*self._waiting, *self._running):
            if job.spec.job_id != job_id or job.cancel_reason is not None or not job.live:
                continue
            job.finish_requested = True  # not running yet: stopped as soon as it is (as on LocalBackend)
            if job.gen is not None and job.handle is not None:
                job.handle.finish.remote(job_id)  # the actor calls the program's stop(): its report comes

    def cancel_all(self, reason: str) -> int:
        jobs = [*self._waiting, *self._running]
        for job in jobs:
            self._cancel(job, reason)
        self._schedule()
        return len(jobs)

    def depth(self) -> RayDepth:
        return RayDepth(
            len(self._uploading),
            len(self._waiting),
            len(self._running),
            self.max_jobs + self.max_queue,
            workers=self._pool.states(),
        )

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._pumps:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(set(self._pumps), timeout=left)
        return not (self._waiting or self._running)

    async def aclose(self) -> None:
        """Cancel what is left as "interrupted", let the pumps end, kill the actors, and shut Ray down if
        this backend started it."""
        self.stop_accepting()
        self.cancel_all("interrupted")
        await self.drain(CANCEL_GRACE_S + 1.0)
        await asyncio.to_thread(self.close)

    def set_engine(self, engine: Engine) -> None:
        """Ship ``engine``'s model to every actor and wait until they opened it (blocking: from a thread);
        jobs admitted from now on use it, jobs running keep theirs."""
        old, self._engine = self._engine, engine
        self._pool.set_model(engine)
        if old is not None and old is not engine:
            old.close()  # the front end's copy only answers ``info``: the actors hold their own

    # -- this backend's own ------------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def actor_jobs(self, timeout_s: float = 10.0) -> list[list[str]]:
        """The job ids each alive actor says it runs (asks them; blocking, for operators and tests)."""
        return self._pool.actor_jobs(timeout_s)

    def close(self) -> None:
        """Kill the actors, stop the pool's thread and shut Ray down if this backend started it (blocking)."""
        self._pool.close()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- scheduling (event loop) -------------------------------------------------------------------------------

    def _pool_changed(self) -> None:
        """From the pool's thread: an actor came up (or went); admit what waits."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        """Admit waiting jobs while there is room and an alive actor; tell those that moved up."""
        while self._waiting and len(self._running) < self.max_jobs:
            member = self._pool.pick()
            if member is None:
                break
            job = self._waiting.pop(0)
            self._pool.add_job(member, job.spec.job_id)
            job.member = member
            if not job.bound:
                job.bound, job.model = True, self._pool.model
            self._running.append(job)
            job.changed.set()
        for position, job in enumerate(self._waiting):
            if job.position != position:
                job.position = position
                if job.attempts == 0:  # a job to retry already told its client it runs
                    job.stream.put(p.Progress(job.spec.job_id, "queued", 0, None, position))

    def _cancel(self, job: RayJob, reason: str) -> None:
        if job.cancel_reason is not None:
            return
        job.cancel_reason = reason
        if job in self._waiting:
            self._waiting.remove(job)
        if job.gen is not None:
            ray.cancel(job.gen)
        if job.timeout is not None:
            job.timeout.reschedule(asyncio.get_running_loop().time() + CANCEL_GRACE_S)
        job.changed.set()

    def _leave(self, job: RayJob) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
        if job in self._running:
            self._running.remove(job)
        if job.member is not None:
            self._pool.remove_job(job.member, job.spec.job_id)
            job.member = None
        self._live_ids.discard(job.spec.job_id)
        self._schedule()

    # -- one job (event loop) -----------------------------------------------------------------------------------

    async def _pump(self, job: RayJob) -> None:
        try:
            final = await self._attempts(job)
        except Exception:  # a bug on this side: the job fails like a program that raised
            log.exception("job %s: following it on Ray failed", job.spec.job_id)
            final = Failed("internal", f"internal server error (logged as job {job.spec.job_id})")
        finally:
            job.upload = job.gen = None
            self._leave(job)
        job.stream.put(final)

    async def _attempts(self, job: RayJob) -> BackendEvent:
        """Run the job to its final event: wait to be admitted, follow it, retry once if its actor dies."""
        while True:
            refused = await self._admitted(job)
            if refused is not None:
                return refused
            assert job.member is not None
            member = job.member
            try:
                return await run_attempt(job, member)
            except LOST_ERRORS as err:
                self._pool.lost(member, job.handle, err)
                if job.cancel_reason is not None:
                    return Stopped(job.cancel_reason)
                where = f"the worker running it ({member.name}) was lost: {first_line(err)}"
                if job.live or job.attempts >= MAX_ATTEMPTS:
                    log.error("job %s: %s; not retried", job.spec.job_id, where)
                    again = "start the session again" if job.live else "it was already retried once"
                    return Failed(WORKER_LOST, f"{where} ({again})")
                log.warning("job %s: %s; retrying it on another worker", job.spec.job_id, where)
                self._running.remove(job)
                self._pool.remove_job(member, job.spec.job_id)
                job.member = job.handle = None
                job.retry_deadline = time.monotonic() + RETRY_WAIT_S
                self._waiting.insert(0, job)
                self._schedule()

    async def _admitted(self, job: RayJob) -> BackendEvent | None:
        """Wait until ``job`` runs on an actor (None), or its end when it never will."""
        while job.member is None:
            if job.cancel_reason is not None:
                return Stopped(job.cancel_reason)
            job.changed.clear()
            if job.retry_deadline is None:
                await job.changed.wait()
                continue
            left = job.retry_deadline - time.monotonic()
            if left <= 0:
                return Failed(WORKER_LOST, f"its worker was lost and no other came up within {RETRY_WAIT_S:.0f} s")
            try:
                await asyncio.wait_for(job.changed.wait(), left)
            except TimeoutError:
                pass
        return None
