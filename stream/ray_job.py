"""One job on Ray, seen from the front end's event loop: its bounded event stream (``JobStream``, what
``RayBackend.submit`` returns), its state (``RayJob``) and one attempt to run it on an actor (``run_attempt``):
the upload ``ray.put`` in a thread, the actor's streaming generator iterated with ``await`` (never blocking
the loop), each event put into the stream, waiting while the stream is full (Ray's generator backpressure
then pauses the actor), events a retry repeats dropped (``accepted``, a ``progress`` stage already sent,
frames and live statuses below the next ``seq``). The retry policy and the scheduling are RayBackend's
(stream/ray_backend.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from stream import protocol as p
from stream.backend import FINAL_EVENTS, BackendEvent, Failed, JobSpec, Stopped
from stream.ray_actor import ShippedModel
from stream.ray_pool import Member

log = logging.getLogger("dff.ray")

CANCEL_GRACE_S = 5.0  # a cancelled job's stream ends by then even if its actor never answers


class JobStream:
    """One job's events on the event loop, at most ``size`` undelivered (a final or ``queued`` event may go
    over). The async iterator ``submit`` returns."""

    def __init__(self, size: int, taken: asyncio.Event) -> None:
        self._items: deque[BackendEvent] = deque()
        self._size = size
        self._arrived = asyncio.Event()
        self._taken = taken  # the pump's wake-up: there may be room again
        self._ended = False

    def has_room(self) -> bool:
        return len(self._items) < self._size

    def put(self, event: BackendEvent) -> None:
        self._items.append(event)
        self._arrived.set()

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> BackendEvent:
        if self._ended:
            raise StopAsyncIteration
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        event = self._items.popleft()
        self._taken.set()
        self._ended = isinstance(event, FINAL_EVENTS)
        return event


@dataclass(eq=False)
class RayJob:
    """One job's state on the front end (event loop only)."""

    spec: JobSpec
    stream: JobStream
    changed: asyncio.Event  # admitted, cancelled, or its stream has room again
    live: bool
    position: int = 0
    member: Member | None = None
    handle: Any = None  # the actor handle the current attempt runs on
    gen: Any = None  # its ray.ObjectRefGenerator
    bound: bool = False  # its model is chosen (at its first admission)
    model: ShippedModel | None = None
    upload: Any = None  # ray.ObjectRef of the upload's bytes, kept for a retry
    cancel_reason: str | None = None
    finish_requested: bool = False  # a live job's finish() came: its program is stopped as soon as it runs
    attempts: int = 0
    retry_deadline: float | None = None
    timeout: asyncio.Timeout | None = None  # the current attempt's; a cancel shortens it to CANCEL_GRACE_S
    sent_accepted: bool = False
    sent_stages: set[str] = field(default_factory=set)
    next_seq: int = 0  # frames (and live statuses) below this were delivered
    next_status_seq: int = 0


def _remote_spec(spec: JobSpec) -> JobSpec:
    """What crosses to the actor: the upload's bare name, no in-process feed."""
    return JobSpec(spec.job_id, None if spec.path is None else Path(spec.path.name), spec.request, spec.client)


def _put_file(path: Path) -> Any:
    """The upload's bytes into the object store (blocking: in a thread); its ObjectRef."""
    return ray.put(path.read_bytes())


async def run_attempt(job: RayJob, member: Member) -> BackendEvent:
    """One attempt on ``member``: the job's events into its stream until the final one, which is returned
    (``Stopped`` once cancelled). Raises ``LOST_ERRORS`` (stream/ray_actor.py) when the actor dies."""
    if job.spec.path is not None and job.upload is None:
        job.upload = await asyncio.to_thread(_put_file, job.spec.path)
    if job.cancel_reason is not None:
        return Stopped(job.cancel_reason)
    job.attempts += 1
    job.handle = member.handle
    job.gen = gen = member.handle.run.remote(_remote_spec(job.spec), job.upload, job.model, job.finish_requested)
    ended = False  # the actor's generator yielded its final event, so it returns by itself
    try:
        async with asyncio.timeout(None) as job.timeout:
            async for ref in gen:
                event = await ref
                if job.cancel_reason is not None:
                    continue  # drained until the actor let go (it was cancelled)
                if isinstance(event, FINAL_EVENTS):
                    ended = True
                    return event
                if _fresh(job, event):
                    while not job.stream.has_room() and job.cancel_reason is None:
                        job.changed.clear()
                        await job.changed.wait()
                    if job.cancel_reason is None:
                        job.stream.put(event)
            ended = True
    except TaskCancelledError:
        ended = True
    except TimeoutError:
        log.warning("job %s: its actor did not stop within %.0f s of the cancel", job.spec.job_id, CANCEL_GRACE_S)
    except RayTaskError as err:  # run() itself raised (the actor catches what the program raises)
        ended = True
        log.error("job %s: the actor's run failed: %s", job.spec.job_id, err)
        return Failed("internal", f"internal server error (logged as job {job.spec.job_id})")
    finally:
        job.timeout = job.gen = None
        if not ended:  # left early (lost, timed out, a bug here): never leave it running with nobody reading
            _cancel_quietly(gen)
    if job.cancel_reason is not None:
        return Stopped(job.cancel_reason)
    log.error("job %s: the actor's stream ended without a final event", job.spec.job_id)
    return Failed("internal", f"internal server error (logged as job {job.spec.job_id})")


def _cancel_quietly(gen: Any) -> None:
    try:
        ray.cancel(gen)
    except Exception as err:  # its actor is gone already
        log.debug("cancel: %s", err)


def _fresh(job: RayJob, event: BackendEvent) -> bool:
    """Whether the client has not had ``event`` yet (a retry runs the job again from its start)."""
    if isinstance(event, p.Accepted):
        fresh, job.sent_accepted = not job.sent_accepted, True
    elif isinstance(event, p.Progress):  # a first run may send a stage's progress more than once
        fresh = job.attempts == 1 or event.stage not in job.sent_stages
        job.sent_stages.add(event.stage)
    elif isinstance(event, p.FrameResult):
        fresh = event.seq >= job.next_seq
        job.next_seq = max(job.next_seq, event.seq + 1)
    elif isinstance(event, p.LiveStatus):
        fresh = event.seq >= job.next_status_seq
        job.next_status_seq = max(job.next_status_seq, event.seq + 1)
    else:
        fresh = True
    return fresh
