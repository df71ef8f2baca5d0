"""The ``Job`` that owns a job's one lifecycle (``JobState``, stream/state.py), and the ``JobTable`` that runs
each job's event stream from the backend into the store and out to the job's watchers.

``Job.state`` is the only copy of a job's state in memory, and the store's ``jobs.status`` column holds
the same enum's values (written just before the state moves). The backend's queues are its scheduling, not
a state. Everything here runs on the event loop; the store is called through ``asyncio.to_thread``.

A job keeps no message log: only its head messages (the newest ``progress`` of each stage, ``accepted``),
how many frames it published, and its final message. A watcher that attaches late gets those, with the frames read back
from the store (scores, no overlays); see stream/watchers.py for what a slow watcher loses.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.types import FaceRow, FrameRow
from stream import protocol as p
from stream.backend import AnalysisBackend, EventStream, Failed, Finished, JobSpec, Stopped
from stream.state import JobState
from stream.store import StoreError
from stream.watchers import WATCH_QUEUE_BYTES, Item, Watcher

if TYPE_CHECKING:
    from stream.store import Store

log = logging.getLogger("dff.jobs")

RETAIN_FINISHED = 16  # finished jobs kept in memory (head + final message) for late attachers
STOP_TIMEOUT_S = 10.0  # how long a job stopped for a store error may take to leave its backend


_STOPPED = {  # a cancel's reason -> how the job ends
    "interrupted": (JobState.INTERRUPTED, "interrupted", "the server is shutting down; frames so far are stored"),
}
_CANCELLED = (JobState.CANCELLED, "cancelled", "every client disconnected, so the job was stopped")


class Job:
    """One analysis request: its upload, what it asked for, its state, its head and final messages and the
    clients watching it. ``request`` is opaque here (the server's resolved options)."""

    def __init__(
        self,
        job_id: str,
        name: str,
        upload_dir: Path,
        request: Any,
        *,
        fetch_frames: Callable[[str, int, int], Any],
        on_cancel: Callable[[str, str], None] = lambda job_id, reason: None,
        on_finish: Callable[[str], None] = lambda job_id: None,
        keep_upload: bool = False,
        client: str | None = None,
        watch_queue_bytes: int = WATCH_QUEUE_BYTES,
        live: bool = False,
        feed: Any = None,
    ) -> None:
        """``fetch_frames(job_id, first_seq, limit)``: awaitable stored frames (watchers read back from it);
        ``on_cancel(job_id, reason)``: stop the job in its backend; ``on_finish(job_id)``: end a live job with
        its report; ``watch_queue_bytes``: each watcher's budget. A ``live`` job has no upload (``path``
        None); ``feed`` is a push job's PushSource, which its connection feeds."""
        self.id = job_id
        self.client = client  # the uploader's IP address: the key of the per-client cap
        self.name = name
        self.upload_dir = upload_dir
        self.live = live
        self.feed = feed
        self._on_finish = on_finish
        self.path: Path | None = None if live else upload_dir / name
        self.request = request
        self.keep_upload = keep_upload
        self.created_s = time.time()
        self._state = JobState.UPLOADING
        self._fetch = fetch_frames
        self._on_cancel = on_cancel
        self._head: list[Item] = []
        self._final: Item | None = None
        self.frames_published = 0
        self._watchers: set[Watcher] = set()
        self._watch_queue_bytes = watch_queue_bytes

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def finished(self) -> bool:
        return self._state.final

    def advance(self, state: JobState) -> None:
        """Move to ``state``; a move the lifecycle does not have is a bug (ValueError)."""
        if not self._state.can_move_to(state):
            raise ValueError(f"job {self.id}: no move from {self._state.value} to {state.value}")
        self._state = state

    def publish(self, message: p.Message) -> None:
        """A non-final message to every watcher; ``progress``/``accepted`` are kept for late attachers."""
        item = Item.of(message)
        if isinstance(message, p.FrameResult):
            self.frames_published = message.seq + 1
        elif isinstance(message, p.Notice):
            pass  # a late attacher gets the newest ``live``, not every reconnect of a session hours long
        elif (same := self._same_kind(message)) is not None:
            self._head[same] = item  # coalesced: the newest progress of a stage (or live status) counts
        else:
            self._head.append(item)
        for watcher in self._watchers:
            watcher.push(item)

    def _same_kind(self, message: p.Message) -> int | None:
        """Where the head holds the message ``message`` replaces: a progress of its stage, a live status."""
        for i, item in enumerate(self._head):
            old = item.message
            if isinstance(message, p.Progress) and isinstance(old, p.Progress) and old.stage == message.stage:
                return i
            if isinstance(message, p.LiveStatus) and isinstance(old, p.LiveStatus):
                return i
        return None

    def end(self, state: JobState, message: p.Done | p.Error) -> None:
        """The final state and message (every watcher gets it); nothing is published after it."""
        self.advance(state)
        self._final = Item.of(message)
        for watcher in self._watchers:
            watcher.push(self._final)

    def cancel(self, reason: str) -> None:
        """Ask the backend to stop this job ("disconnected", ...); its end comes back as an event."""
        if not self._state.final:
            self._on_cancel(self.id, reason)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def attach(self) -> Watcher:
        """A watcher that gets the head, the frames so far (from the store), then the live messages."""
        watcher = Watcher(self.id, self._fetch, self._watch_queue_bytes)
        for item in self._head:
            watcher.push(item)
        if self.frames_published:
            watcher.behind(self.frames_published)
        if self._final is not None:
            watcher.push(self._final)
        self._watchers.add(watcher)
        return watcher

    def finish(self) -> None:
        """End a live job now; its report comes back as the backend's ``Finished``."""
        if not self._state.final and self.live:
            self._on_finish(self.id)

    def detach(self, watcher: Watcher) -> None:
        """Stop feeding ``watcher``; when nobody is left watching an unfinished job, cancel it (a live job
        is finished instead: what it analysed is a session worth its report)."""
        self._watchers.discard(watcher)
        if not self._watchers:
            if self.live:
                self.finish()
            else:
                self.cancel("disconnected")

    def cleanup(self) -> None:
        """Delete the uploaded file (unless kept). Safe to call twice."""
        if not self.keep_upload:
            shutil.rmtree(self.upload_dir, ignore_errors=True)


def frame_row(frame: p.FrameResult) -> FrameRow:
    """A frame message as the store keeps it (no overlays)."""
    faces = tuple(
        FaceRow(f.face_index, f.xyxy, f.detector_prob, f.fake_prob, f.track_id, f.detector_probs) for f in frame.faces
    )
    return FrameRow(frame.index, frame.time_s, frame.score, faces)


def stored_frame(job_id: str, seq: int, row: FrameRow) -> p.FrameResult:
    """A stored frame as the ``frame`` message it was (without its overlays)."""
    faces = tuple(
        p.Face(f.face_index, f.xyxy, f.detector_prob, f.fake_prob, f.track_id, None, f.detector_probs)
        for f in row.faces
    )
    return p.FrameResult(job_id, seq, row.index, row.time_s, row.score, faces)


async def _exhaust(events: EventStream) -> None:
    async for _ in events:
        pass


class JobTable:
    """Jobs by id on the event loop: live ones plus the ``retain_finished`` most recent finished. Talks to
    the backend only through ``AnalysisBackend``; one task per job follows its event stream."""

    def __init__(
        self,
        backend: AnalysisBackend,
        store: Store,
        retain_finished: int = RETAIN_FINISHED,
        watch_queue_bytes: int = WATCH_QUEUE_BYTES,
    ) -> None:
        self._backend = backend
        self._watch_queue_bytes = watch_queue_bytes
        self._store = store
        self._jobs: dict[str, Job] = {}
        self._finished: list[str] = []
        self._retain = retain_finished
        self._tasks: set[asyncio.Task[None]] = set()

    def new(
        self,
        job_id: str,
        name: str,
        upload_dir: Path,
        request: Any,
        *,
        keep_upload: bool,
        client: str | None,
        feed: Any = None,
    ) -> Job:
        """A job about to upload or start (not in the table until ``start``); live when ``request.live``."""
        return Job(
            job_id,
            name,
            upload_dir,
            request,
            fetch_frames=self._fetch_frames,
            on_cancel=self._backend.cancel,
            on_finish=self._backend.finish,
            keep_upload=keep_upload,
            client=client,
            watch_queue_bytes=self._watch_queue_bytes,
            live=getattr(request, "live", None) is not None,
            feed=feed,
        )

    def start(self, job: Job) -> None:
        """Submit an uploaded (and stored) job and follow its events. Raises ShuttingDown."""
        events = self._backend.submit(JobSpec(job.id, job.path, job.request, job.client, job.feed))
        job.advance(JobState.QUEUED)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job, events), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    async def idle(self, timeout_s: float) -> bool:
        """Wait until every job's stream has ended, at most ``timeout_s``; True when none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not self._tasks

    async def _fetch_frames(self, job_id: str, first_seq: int, limit: int) -> list[p.FrameResult]:
        rows = await asyncio.to_thread(self._store.frame_page, job_id, first_seq, limit)
        return [stored_frame(job_id, first_seq + i, row) for i, row in enumerate(rows)]

    async def _run(self, job: Job, events: EventStream) -> None:
        try:
            await self._follow(job, events)
        except StoreError as err:  # the job cannot be stored: stop it, tell its watchers why
            log.error("job %s: %s", job.id, err)
            await self._stop(job, events, "store_error")
            if not job.finished:
                await self._end(job, JobState.FAILED, err.code, str(err))
        except Exception:  # a bug on this side of the seam: the same end as a program that raises
            log.exception("job %s: following its events failed", job.id)
            await self._stop(job, events, "internal")
            if not job.finished:
                await self._end(job, JobState.FAILED, "internal", f"internal server error (logged as job {job.id})")
        finally:
            if job.finished:
                self._retire(job)
            else:  # the task itself was cancelled (the loop is closing): nobody is left to tell
                self._jobs.pop(job.id, None)
            await asyncio.to_thread(job.cleanup)

    async def _stop(self, job: Job, events: EventStream, reason: str) -> None:
        """Cancel the job in the backend and wait (one analysis step) until its stream ends, so that the
        job's end goes out once the backend has let go of it."""
        self._backend.cancel(job.id, reason)
        try:
            await asyncio.wait_for(_exhaust(events), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("job %s: the backend did not stop it within %.0f s", job.id, STOP_TIMEOUT_S)

    async def _follow(self, job: Job, events: EventStream) -> None:
        """Store each event, then publish it (a frame is committed before any client can see it)."""
        store = self._store
        async for event in events:
            if isinstance(event, p.Accepted):
                model = event.model
                await asyncio.to_thread(store.start_job, job.id, event.media.sha256, model.name, model.sha256)
                job.advance(JobState.RUNNING)
                job.publish(event)
            elif isinstance(event, p.FrameResult):
                await asyncio.to_thread(store.add_frame, job.id, frame_row(event))
                job.publish(event)
            elif isinstance(event, (p.Progress, p.Notice, p.LiveStatus)):
                job.publish(event)
            elif isinstance(event, Finished):
                body = await asyncio.to_thread(store.finish_job, job.id, event.report)  # committed before `done`
                job.end(JobState.DONE, p.Done(job.id, body))
                return
            elif isinstance(event, Failed):
                return await self._end(job, JobState.FAILED, event.code, event.message)
            elif isinstance(event, Stopped):
                return await self._end(job, *_STOPPED.get(event.reason, _CANCELLED))
        raise RuntimeError(f"job {job.id}: the backend's stream ended without a final event")

    async def _end(self, job: Job, state: JobState, code: str, message: str) -> None:
        try:
            await asyncio.to_thread(self._store.end_job, job.id, state.value, code, message)
        except StoreError as err:  # the watchers still hear how the job ended
            log.error("job %s: could not store its end (%s): %s", job.id, state.value, err)
        job.end(state, p.Error(code=code, message=message, job_id=job.id))

    def _retire(self, job: Job) -> None:
        self._finished.append(job.id)
        while len(self._finished) > self._retain:
            self._jobs.pop(self._finished.pop(0), None)
