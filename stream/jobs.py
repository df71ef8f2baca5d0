"""A job on the event-loop side: its upload, its request, its message log and the clients watching it.

The worker thread (stream/worker.py) runs the job's program and ``publish``es encoded messages through
``loop.call_soon_threadsafe``; the loop owns the log and the watchers. ``attach`` replays the log, then
streams the live messages; when the last watcher of an unfinished job detaches, the job is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("dff.jobs")

JobState = Literal["uploading", "waiting", "running", "finished"]
RETAIN_FINISHED = 16  # finished jobs kept in memory so late attachers get the full replay


class Job:
    """One analysis request: where its upload lives, what it asked for, its messages and its watchers.

    ``request`` is opaque here (the server's resolved options). ``log`` holds every encoded message
    published so far; ``attach`` replays it, then streams the live ones.
    """

    def __init__(
        self,
        job_id: str,
        name: str,
        upload_dir: Path,
        request: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        keep_upload: bool = False,
        client: str | None = None,
    ) -> None:
        self.id = job_id
        self.client = client  # the uploader's IP address: the key of the per-client cap
        self.name = name
        self.upload_dir = upload_dir
        self.path = upload_dir / name
        self.request = request
        self.keep_upload = keep_upload
        self.created_s = time.time()
        self.state: JobState = "uploading"
        self.position: int | None = None  # place in the waiting line, worker-side
        self._loop = loop
        self._cancel = threading.Event()
        self.cancel_reason: str | None = None
        self._wake: Callable[[], None] = lambda: None
        self.log: list[str] = []
        self.finished = False
        self._watchers: set[asyncio.Queue[str | None]] = set()
        self._on_finished: Callable[[Job], None] = lambda job: None

    # -- any thread ----------------------------------------------------------------------------------------

    def publish(self, text: str, *, final: bool = False) -> None:
        """Send an encoded message to the log and every watcher; ``final`` ends the stream."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop in this thread: the worker
            on_loop = False
        if on_loop:
            self._deliver(text, final)
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, text, final)
        except RuntimeError:  # the loop is closed: the server is gone, nobody can receive it
            log.debug("job %s: message dropped, event loop closed", self.id)

    def cancel(self, reason: str) -> None:
        """Ask the worker to stop this job (``reason``: "disconnected", "interrupted", ...). Idempotent."""
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()
            self._wake()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cleanup(self) -> None:
        """Delete the uploaded file (unless kept). Safe to call twice."""
        if not self.keep_upload:
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    # -- event loop thread ---------------------------------------------------------------------------------

    def _deliver(self, text: str, final: bool) -> None:
        if self.finished:
            return
        self.log.append(text)
        for queue in self._watchers:
            queue.put_nowait(text)
        if final:
            self.finished = True
            for queue in self._watchers:
                queue.put_nowait(None)
            self._on_finished(self)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def attach(self) -> asyncio.Queue[str | None]:
        """A queue with every message so far, then the live ones; ``None`` after the final one."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for text in self.log:
            queue.put_nowait(text)
        if self.finished:
            queue.put_nowait(None)
        self._watchers.add(queue)
        return queue

    def detach(self, queue: asyncio.Queue[str | None]) -> None:
        """Stop feeding ``queue``; when nobody is left watching an unfinished job, cancel it."""
        self._watchers.discard(queue)
        if not self._watchers and not self.finished:
            self.cancel("disconnected")


class JobTable:
    """Jobs by id on the event loop side: live ones plus the ``RETAIN_FINISHED`` most recent finished."""

    def __init__(self, retain_finished: int = RETAIN_FINISHED) -> None:
        self._jobs: dict[str, Job] = {}
        self._finished: list[str] = []
        self._retain = retain_finished

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        job._on_finished = self._finished_one

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def _finished_one(self, job: Job) -> None:
        self._finished.append(job.id)
        while len(self._finished) > self._retain:
            self._jobs.pop(self._finished.pop(0), None)
