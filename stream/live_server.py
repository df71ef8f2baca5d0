"""The live half of a websocket conversation (``watch`` and ``push``), mixed into the server's connection.

    client: watch {url, options}   or   push {name, options}
    server: progress(queued), notice(connected), accepted, progress(analyzing), then per frame: frame, live
    client: (push) one binary message per frame: 8-byte big-endian float64 time_s + JPEG/PNG bytes
    client: stop                                           (or close the connection: the same, unwatched)
    server: done {report with session}                     (or error: the source never connected)

A live job holds a slot like an upload, and at most ``max_live_jobs`` run at once. Every live job is
stored (``kind: live``) as soon as it is accepted, and its frames as they are scored; when its last client
leaves it is finished, not cancelled: the session's report is kept. A pushed frame that cannot be used
(not a JPEG/PNG, another size, back in time) is refused with a ``notice``; the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import ConfigError, MediaError
from pipeline.sources.push import PushSource
from stream import protocol as p
from stream.backend import Busy, ShuttingDown
from stream.jobs import Job
from stream.service import NO_MODEL_MESSAGE, resolve_live
from stream.state import JobState
from stream.store import StoreError

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from stream.service import Service

log = logging.getLogger("dff.live")

_TIME = struct.Struct(">d")
assert _TIME.size == p.PUSH_HEADER_BYTES


class _Conversation(Protocol):
    service: Service
    ws: WebSocket

    async def send(self, message: p.Message) -> None: ...

    async def fail(self, code: str, message: str, job_id: str | None = None) -> None: ...

    async def receive(self, timeout_s: float | None) -> str | bytes: ...


class LiveConversation:
    """``start_live`` takes a ``watch``/``push`` to a running job; ``live_input`` reads what the client sends
    while it follows the job (pushed frames, ``stop``)."""

    async def start_live(self: _Conversation, message: p.Watch | p.Push) -> Job | None:
        service = self.service
        if service.status == "shutting_down":
            return await self.fail("shutting_down", "the server is shutting down; try again later")
        if service.model is None:
            return await self.fail("no_model", NO_MODEL_MESSAGE)
        url = message.url if isinstance(message, p.Watch) else None
        try:
            request = resolve_live(message.options, service.settings, url, getattr(message, "name", ""))
        except (ConfigError, MediaError) as err:  # a bad option; a URL that will never be opened
            return await self.fail(err.code, str(err))
        live = request.live
        assert live is not None
        feed = PushSource(live.name, live.options) if url is None else None
        client = self.ws.client.host if self.ws.client else None
        job = service.new_job(live.name, request, client, feed=feed)
        try:
            service.backend.reserve(job.id, client, live=True)
        except Busy as err:
            return await self.fail("busy", f"the server is busy ({err}); try again later")
        except ShuttingDown:
            return await self.fail("shutting_down", "the server is shutting down; try again later")
        try:
            await asyncio.to_thread(service.store.add_job, job.id, job.name, 0, job.created_s, "live")
        except StoreError as err:
            service.backend.release(job.id)
            log.error("live job %s: could not be stored: %s", job.id, err)
            return await self.fail(err.code, str(err), job.id)
        try:
            service.jobs.start(job)
        except ShuttingDown:
            service.backend.release(job.id)
            await asyncio.to_thread(
                service.store.end_job, job.id, JobState.INTERRUPTED.value, "shutting_down", "shutdown"
            )
            return await self.fail("shutting_down", "the server is shutting down; try again later", job.id)
        return job

    async def live_input(self: _Conversation, job: Job) -> None:
        """Until the client leaves: pushed frames into the job's feed, ``stop`` ends the session."""
        while True:
            raw = await self.receive(None)
            if isinstance(raw, bytes):
                if job.feed is None:
                    return await self.fail(
                        "unexpected_binary", "binary data in a watch session (only push takes frames)", job.id
                    )
                await _push(job, raw)
                continue
            try:
                message = p.decode(raw, p.CLIENT_MESSAGES)
            except p.ProtocolError as err:
                return await self.fail(err.code, str(err), job.id)
            if not isinstance(message, p.Stop):
                return await self.fail(
                    "unexpected_message", f"a live session takes only stop, got {message.TYPE}", job.id
                )
            job.finish()


async def _push(job: Job, raw: bytes) -> None:
    """One pushed frame into the feed; a bad one becomes a ``notice`` (refused) and the session goes on."""
    feed: PushSource = job.feed
    if job.finished:
        return
    if len(raw) <= _TIME.size:
        job.publish(
            p.Notice(job.id, "refused", f"a pushed frame is its {_TIME.size}-byte time, then JPEG or PNG bytes")
        )
        return
    (time_s,) = _TIME.unpack_from(raw)
    try:
        await asyncio.to_thread(feed.push_jpeg, raw[_TIME.size :], time_s)
    except MediaError as err:
        if not job.finished:
            job.publish(p.Notice(job.id, "refused", str(err)))
