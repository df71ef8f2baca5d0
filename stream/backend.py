"""The seam between the wire and the compute: ``AnalysisBackend``, what crosses it, and the data path.

    server / JobTable ──reserve(job_id, client)──▶ backend        (before any byte is uploaded: Busy)
                      ──submit(JobSpec)──────────▶ EventStream    (an *async* iterator of BackendEvents)
                      ──cancel(job_id, reason)───▶                (the stream then ends with Stopped)
                      ──depth()──────────────────▶ Depth          (for /healthz)

A backend runs a job's analysis wherever it likes (``LocalBackend``, stream/worker.py: one thread in this
process; a Ray backend: actors elsewhere) and sends back only wire-ready, picklable records: ``p.Accepted``,
``p.Progress``, ``p.FrameResult`` (Grad-CAM overlays already rendered to base64 JPEG on the backend's side;
no numpy array crosses), then exactly one final event: ``Finished`` (the Report: frozen dataclasses of
plain numbers), ``Failed`` (an error-tree code and a message for people) or ``Stopped`` (cancelled, with the
reason). The event loop only ever ``await``s a stream: no call in stream/ waits on one job's ``next()``.
Each stream holds at most ``EVENT_QUEUE_SIZE`` events in flight; a backend stops producing for a job whose
consumer lags (it never blocks the other jobs for it). What a slow *client* loses is stream/watchers.py's rule.

The data path of one upload, browser to ``frame`` message
---------------------------------------------------------
Before (issue 9): the websocket handler (event loop) wrote each binary message to
``uploads/<id>/<name>`` (1 copy: socket buffer -> file). The worker thread ran ``Service.program``:
``analyze(path)`` decoded sampled frames (PyAV -> RGB ndarray), detected, cropped and scored; the program
stored each frame (SQLite, worker thread), rendered overlays, *encoded* the JSON and called
``Job.publish(text)`` -> ``loop.call_soon_threadsafe`` -> ``Job.log.append`` (kept for the job's whole life
and 16 finished jobs) + one *unbounded* ``asyncio.Queue`` per watcher -> ``_pump`` -> ``ws.send_text``.
A client that read nothing made its queue (overlays included) and the log grow with video length.

After: the same upload into the same file. ``LocalBackend``'s thread (stream/worker.py) steps the job's
program (``analysis_events`` in stream/programs.py): ``analyze(path)`` as before; the program turns each
event into a wire record (overlay JPEG -> base64 here, on the compute side) and the thread puts it into the
job's bounded channel (``loop.call_soon_threadsafe``; at most ``EVENT_QUEUE_SIZE`` in flight, so a job whose
consumer lags is skipped, not waited on). On the event loop, ``JobTable``'s task for the job iterates the
stream: it stores the frame (``asyncio.to_thread`` -> SQLite), encodes it once, and hands the shared
(record, text) item to each watcher's bounded queue (stream/watchers.py), whose pump sends it. A slow
watcher loses coalesced progress, then overlays, then the frames themselves, which it later reads back
from the store (scores, no overlays) before ``done``. A late attacher replays the same way: a few head
messages, the frames from the store, the final message. Memory per job: the channel (8 events), a few
head messages and the final message; per watcher: its queue's byte budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.types import Report

if TYPE_CHECKING:
    from pipeline.engine import Engine
from stream import protocol as p

EVENT_QUEUE_SIZE = 8  # events of one job between the backend and the event loop


class Busy(Exception):
    """The backend holds its capacity of jobs (uploading, waiting or running)."""


class ClientBusy(Busy):
    """One client already holds its cap of jobs uploading, waiting or running."""


class ShuttingDown(Exception):
    """The backend takes no new jobs."""


def check_slot(
    *,
    accepting: bool,
    live: bool,
    live_held: int,
    max_live: int,
    held: Sequence[str | None],
    client: str | None,
    max_jobs: int,
    max_queue: int,
    max_per_client: int,
) -> None:
    """The admission rule every backend keeps for a new job (``reserve``): raises ShuttingDown, Busy (the
    queue is full, or ``max_live`` live sessions hold slots) or ClientBusy (``client`` holds its share).
    ``held``: the client of every job uploading, waiting or running; ``live_held``: live jobs among them."""
    if not accepting:
        raise ShuttingDown("the server is shutting down")
    if live and live_held >= max_live:
        raise Busy(f"{live_held} live sessions are running (limit {max_live}, DFF_MAX_LIVE_JOBS)")
    limit = max_jobs + max_queue
    if len(held) >= limit:
        raise Busy(f"{len(held)} jobs are uploading, waiting or running (limit {limit})")
    if max_per_client and client is not None:
        mine = list(held).count(client)
        if mine >= max_per_client:
            raise ClientBusy(
                f"this client ({client}) already has {mine} jobs uploading, waiting or running "
                f"(limit {max_per_client} per client)"
            )


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


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a backend needs to run a job: its id, the uploaded file (None for a live job) and the resolved
    request (``request.live`` says whether it is live and from where)."""

    job_id: str
    path: Path | None
    request: Any  # stream.programs.JobRequest (frozen, picklable)
    client: str | None = None  # the uploader's IP address (per-client cap)
    feed: Any = None  # a push job's PushSource, fed by the connection (in-process backends only)


@dataclass(frozen=True, slots=True)
class Finished:
    """The job's report: the last event of a job that succeeded."""

    report: Report


@dataclass(frozen=True, slots=True)
class Failed:
    """The job failed: ``code`` from the error tree (or ``internal``), ``message`` for people (no traceback)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The job was cancelled before its end; ``reason`` as given to ``cancel`` ("disconnected", "interrupted")."""

    reason: str


BackendEvent = p.Accepted | p.Progress | p.FrameResult | p.Notice | p.LiveStatus | Finished | Failed | Stopped
FINAL_EVENTS = (Finished, Failed, Stopped)


class EventStream(Protocol):
    """One job's events in order, ending after its final event (``FINAL_EVENTS``)."""

    def __aiter__(self) -> AsyncIterator[BackendEvent]: ...

    async def __anext__(self) -> BackendEvent: ...


class AnalysisBackend(Protocol):
    """Runs jobs somewhere and streams their events back. Every method is called on the event loop and
    returns at once (no compute, no waiting on a job); ``drain`` and ``aclose`` are awaited."""

    def reserve(self, job_id: str, client: str | None, *, live: bool = False) -> None:
        """Hold a slot for a job about to upload (or a live job about to start). Raises Busy (ClientBusy;
        also when ``max_live_jobs`` live jobs hold slots) or ShuttingDown."""
        ...

    def release(self, job_id: str) -> None:
        """Give back the slot of a job whose upload failed."""
        ...

    def submit(self, spec: JobSpec) -> EventStream:
        """Queue a reserved, uploaded job; its first event is ``progress(queued)``. Raises ShuttingDown."""
        ...

    def cancel(self, job_id: str, reason: str) -> None:
        """Stop a job soon (within one analysis step); its stream then ends with ``Stopped(reason)``,
        unless it already sent its final event. Idempotent; unknown ids are ignored."""
        ...

    def finish(self, job_id: str) -> None:
        """End a live job now (its source is closed): its stream then ends with ``Finished`` and the
        session's report. Ignored for a file job, an unknown id or a job that already ended."""
        ...

    def cancel_all(self, reason: str) -> int:
        """Cancel every waiting and running job; how many."""
        ...

    def set_engine(self, engine: Engine) -> None:
        """Analyse jobs admitted from now on with ``engine``'s model (jobs running keep theirs). Blocking
        (a remote backend reloads its workers): called from a thread."""
        ...

    def depth(self) -> Depth: ...

    def stop_accepting(self) -> None: ...

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no job waits or runs, at most ``timeout_s``; True when drained."""
        ...

    async def aclose(self) -> None:
        """Cancel what is left as "interrupted" and release the backend's resources (engines, threads)."""
        ...
