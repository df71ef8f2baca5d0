"""The ASGI app: one port for the websocket API (``/v1/analyze``), the HTTP API (stream/routes.py) and,
mounted by the CLI, the web UI. Served by uvicorn with its websocket transport on the ``websockets``
package's Sans-I/O core (``ws="websockets-sansio"``; uvicorn deprecated the legacy ``ws="websockets"``).

One websocket connection carries one job (a live session's conversation: stream/live_server.py):

    server: hello
    client: start {name, size_bytes, options}       or   attach {job_id}
    server: progress(uploading)                           (replay of the job's messages so far)
    client: size_bytes of binary messages
    server: progress(queued), accepted, progress(analyzing), frame..., done   (or error at any point)
    server: closes the connection

Every request first passes stream/guard.py (Host and Origin). An upload must keep a minimum rate: byte N
must have arrived ``upload_grace_s + N / min_upload_kib_s`` after the upload began (else ``timeout``),
and one client IP holds at most ``max_jobs_per_client`` slots (else ``busy``): slow or greedy clients
cannot lock everyone else out.

Closing the connection cancels the job unless another client is attached to it. Shutdown (SIGTERM/SIGINT)
stops accepting, lets running jobs finish for ``shutdown_grace_s`` while their clients still receive
frames, then stores the rest as ``interrupted`` and tells their clients so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeline import __version__
from pipeline.config import Settings
from pipeline.errors import ConfigError
from stream import protocol as p
from stream.auth import WS_SUBPROTOCOL, offered_subprotocols, origin_ok, ws_token_ok
from stream.backend import Busy, ShuttingDown
from stream.guard import RequestGuard
from stream.jobs import Job
from stream.live_server import LiveConversation
from stream.routes import error, http_routes
from stream.service import NO_MODEL_MESSAGE, Service, resolve_options
from stream.state import JobState
from stream.store import StoreError
from stream.watchers import Watcher

log = logging.getLogger("dff.server")

IDLE_S = 60.0  # a client that sends nothing for this long while it should (first message, upload) is dropped
MAX_WATCHERS = 8  # clients attached to one job


class _Gone(Exception):
    """The client disconnected (or the connection broke)."""


class _Connection(LiveConversation):
    """One websocket conversation; every send goes through one lock so two tasks never interleave frames,
    and the first final message (``done`` or ``error``) ends it: nothing is sent after it."""

    def __init__(self, ws: WebSocket, service: Service) -> None:
        self.ws = ws
        self.service = service
        self._send_lock = asyncio.Lock()
        self.ended = False  # a final message was sent (checked and set under the send lock)

    async def send_text(self, text: str, *, final: bool) -> None:
        """Send one encoded message; ``final`` if it is ``done``/``error``. Dropped once the conversation
        ended: two tasks may race to end it (the job's end in ``_pump``, a refusal in ``_watch``), and the
        one that waited on the lock must not send a second final message."""
        async with self._send_lock:
            if self.ended:
                log.debug("connection %s: ended, not sent: %.80s", self.ws.client, text)
                return
            self.ended = final
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, OSError, RuntimeError) as err:
                raise _Gone(str(err)) from None

    async def send(self, message: p.Message) -> None:
        await self.send_text(p.encode(message), final=isinstance(message, p.FINAL_MESSAGES))

    async def fail(self, code: str, message: str, job_id: str | None = None) -> None:
        await self.send(p.Error(code=code, message=message, job_id=job_id))

    async def receive(self, timeout_s: float | None) -> str | bytes:
        """The next text or binary message. Raises _Gone on disconnect, asyncio.TimeoutError after ``timeout_s``."""
        message = await asyncio.wait_for(self.ws.receive(), timeout_s)
        if message["type"] == "websocket.disconnect":
            raise _Gone(f"closed with code {message.get('code')}")
        text = message.get("text")
        return text if text is not None else (message.get("bytes") or b"")

    async def run(self) -> None:
        service = self.service
        await self.send(
            p.Hello(
                server_version=__version__,
                status=service.status,
                model=service.model,
                max_upload_bytes=service.max_upload_bytes,
                max_message_bytes=p.MAX_MESSAGE_BYTES,
            )
        )
        try:
            raw = await self.receive(IDLE_S)
        except asyncio.TimeoutError:
            return await self.fail("timeout", f"no message within {IDLE_S:.0f} s")
        if isinstance(raw, bytes):
            return await self.fail("unexpected_binary", "binary data before a start message")
        try:
            message = p.decode(raw, p.CLIENT_MESSAGES)
        except p.ProtocolError as err:
            return await self.fail(err.code, str(err))
        if isinstance(message, (p.Watch, p.Push)):
            job = await self.start_live(message)
            if job is not None:
                await self.follow(job, self.live_input(job))
            return
        if isinstance(message, p.Stop):
            return await self.fail("unexpected_message", "stop ends a live session; none was started here")
        job = await (self.upload(message) if isinstance(message, p.Start) else self.attach(message))
        if job is not None:
            await self.follow(job)

    async def upload(self, start: p.Start) -> Job | None:
        """Check the request, take a queue slot, receive the file, queue the job. None when refused."""
        service = self.service
        if service.status == "shutting_down":
            return await self.fail("shutting_down", "the server is shutting down; try again later")
        if service.model is None:
            return await self.fail("no_model", NO_MODEL_MESSAGE)
        if start.size_bytes > service.max_upload_bytes:
            return await self.fail(
                "too_large",
                f"the file is {start.size_bytes} bytes; this server takes at most {service.max_upload_bytes}",
            )
        try:
            request = resolve_options(start.options, service.settings)
        except ConfigError as err:
            return await self.fail(err.code, str(err))
        client = self.ws.client.host if self.ws.client else None
        job = service.new_job(start.name, request, client)
        try:
            service.backend.reserve(job.id, client)
        except Busy as err:
            return await self.fail("busy", f"the server is busy ({err}); try again later")
        except ShuttingDown:
            return await self.fail("shutting_down", "the server is shutting down; try again later")
        queued = False
        try:
            await self.send(p.Progress(job.id, "uploading", 0, None))
            if not await self._receive_file(job, start.size_bytes):
                return None
            try:
                await asyncio.to_thread(service.store.add_job, job.id, job.name, start.size_bytes, job.created_s)
            except StoreError as err:
                log.error("job %s: could not be stored: %s", job.id, err)
                return await self.fail(err.code, str(err), job.id)
            try:
                service.jobs.start(job)  # its first message is progress(queued)
            except ShuttingDown:
                await asyncio.to_thread(
                    service.store.end_job, job.id, JobState.INTERRUPTED.value, "shutting_down", "shutdown"
                )
                return await self.fail("shutting_down", "the server is shutting down; try again later", job.id)
            queued = True
            return job
        finally:
            if not queued:
                try:  # the file goes first: a freed slot (what /healthz shows) means its upload is gone
                    await asyncio.to_thread(job.cleanup)
                finally:
                    service.backend.release(job.id)

    def _too_slow(self, received: int, size_bytes: int, began: float) -> str:
        settings = self.service.settings
        total_s = settings.upload_grace_s + size_bytes / (settings.min_upload_kib_s * 1024)
        return (
            f"the upload is too slow: {received} of {size_bytes} bytes after {time.monotonic() - began:.1f} s; "
            f"this server needs {settings.min_upload_kib_s:g} KiB/s after the first {settings.upload_grace_s:g} s "
            f"(this file within {total_s:.0f} s)"
        )

    async def _receive_file(self, job: Job, size_bytes: int) -> bool:
        """Binary messages into ``job.path`` until ``size_bytes`` arrived; False (client told) if not:
        nothing for IDLE_S, or behind the minimum rate (byte N due ``grace + N / rate`` after the start)."""
        settings = self.service.settings
        rate_bytes_s = settings.min_upload_kib_s * 1024
        job.upload_dir.mkdir(parents=True, exist_ok=True)
        received = 0
        began = time.monotonic()
        with job.path.open("wb") as fh:
            while received < size_bytes:
                due_s = began + settings.upload_grace_s + received / rate_bytes_s - time.monotonic()
                try:
                    if due_s <= 0:
                        raise asyncio.TimeoutError
                    raw = await self.receive(min(IDLE_S, due_s))
                except asyncio.TimeoutError:
                    if due_s < IDLE_S:
                        await self.fail("timeout", self._too_slow(received, size_bytes, began), job.id)
                    else:
                        await self.fail("timeout", f"the upload stalled for {IDLE_S:.0f} s at {received} bytes", job.id)
                    return False
                if isinstance(raw, str):
                    left = size_bytes - received
                    await self.fail("unexpected_message", f"text during the upload; {left} bytes are missing", job.id)
                    return False
                received += len(raw)
                if received > size_bytes:
                    await self.fail("size_mismatch", f"more than the declared {size_bytes} bytes arrived", job.id)
                    return False
                fh.write(raw)
        return True

    async def attach(self, message: p.Attach) -> Job | None:
        """A live (or recently finished) job to follow; else its stored outcome, or ``unknown_job``."""
        service = self.service
        job = service.jobs.get(message.job_id)
        if job is not None:
            return job
        row = await asyncio.to_thread(service.store.job, message.job_id)
        if row is None or row.status in (JobState.QUEUED.value, JobState.RUNNING.value):
            return await self.fail("unknown_job", f"no job with id {message.job_id!r}", message.job_id)
        if row.status == JobState.DONE.value:
            report = await asyncio.to_thread(service.store.report, row.id)
            if report is not None:
                return await self.send(p.Done(row.id, report))
        return await self.fail(row.error_code or row.status, row.error_message or row.status, row.id)

    async def follow(self, job: Job, receiver: Coroutine[Any, Any, None] | None = None) -> None:
        """Stream the job's messages until its final one, or until this client leaves. ``receiver`` reads
        what the client sends meanwhile (a live session's frames and ``stop``); by default it must send
        nothing."""
        if job.watchers >= MAX_WATCHERS:
            if receiver is not None:
                receiver.close()
            return await self.fail("too_many_watchers", f"{MAX_WATCHERS} clients already follow this job", job.id)
        watcher = job.attach()
        pump = asyncio.create_task(self._pump(watcher))
        watch = asyncio.create_task(receiver if receiver is not None else self._watch(job))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            job.detach(watcher)

    async def _pump(self, watcher: Watcher) -> None:
        """Send the job's messages as the watcher's rule gives them (stream/watchers.py), the final one last."""
        async for text, final in watcher.texts():
            await self.send_text(text, final=final)

    async def _watch(self, job: Job) -> None:
        await self.receive(None)  # returns only if the client sends something: it should not
        await self.fail(
            "unexpected_message", "the client sends nothing while a job runs (close the connection to cancel)", job.id
        )


def _deny(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def analyze_endpoint(ws: WebSocket) -> None:
    """``/v1/analyze``: token and origin are checked at the handshake (HTTP 401/403, no upgrade)."""
    service: Service = ws.app.state.service
    if not ws_token_ok(ws.headers, service.settings.token):
        return await ws.send_denial_response(_deny(401, "unauthorized", "a valid bearer token is required"))
    if not origin_ok(ws.headers, service.settings.allowed_origins):
        return await ws.send_denial_response(_deny(403, "forbidden_origin", "this origin may not connect"))
    # a browser that offered subprotocols (the token one) fails the handshake unless one is chosen
    await ws.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered_subprotocols(ws.headers) else None)
    connection = _Connection(ws, service)
    try:
        await connection.run()
    except _Gone as err:
        log.info("client %s left: %s", ws.client, err)
        return
    except StoreError as err:  # a read (attach) the database refused
        log.error("websocket handler: %s", err)
        with contextlib.suppress(Exception):
            await connection.fail(err.code, str(err))
    except Exception:
        log.exception("websocket handler failed")
        with contextlib.suppress(Exception):
            await connection.fail("internal", "internal server error (see the server log)")
    with contextlib.suppress(Exception):
        await ws.close(1000)


def create_app(settings: Settings, *, allow_untrained: bool = False) -> Starlette:
    """The stream app: websocket + HTTP routes, with the service started and stopped by its lifespan.

    ``app.state.service`` is the Service. More apps (the web UI) can be mounted on it before serving.
    """
    service = Service(settings, allow_untrained=allow_untrained)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(
        routes=[*http_routes(), WebSocketRoute("/v1/analyze", analyze_endpoint)],
        middleware=[Middleware(RequestGuard, settings=settings)],  # outermost but for what mounts add later
        exception_handlers={HTTPException: _http_error, StoreError: _store_failed, Exception: _internal},
        lifespan=lifespan,
    )
    # No redirect to the path without its trailing slash: no route here ends with one, and an id ending in an
    # escaped slash (/v1/reports/%2e%2e%2f) would get a body-less 307 to /v1/reports/.. instead of a JSON 404
    app.router.redirect_slashes = False
    app.state.service = service
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route matched: 404, a route without this method: 405) in the JSON error
    body every route uses, never Starlette's plain-text page. Only the stream app's: a mounted app (the
    web UI) answers for its own paths."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        code, message = "not_found", f"no route for {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        code = "method_not_allowed"
        message = f"{request.method} is not allowed on {request.url.path[:200]} (allowed: {headers.get('Allow', '-')})"
    else:  # another status Starlette raises: its phrase as the code (400 "Bad Request" -> bad_request)
        code, message = re.sub(r"[^a-z]+", "_", _phrase(exc.status_code).lower()).strip("_"), exc.detail
    return error(exc.status_code, code, message, **headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status outside the standard ones
        return "http error"


async def _store_failed(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return error(503, getattr(exc, "code", "store_error"), str(exc))


async def _internal(request: Request, exc: Exception) -> Response:
    """Any other exception in an HTTP route: the JSON error body, never a plain-text traceback page."""
    return error(500, "internal", "internal server error (see the server log)")


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that drains jobs before uvicorn closes the connections.

    uvicorn's own shutdown closes every websocket at once (code 1012), which would cancel running jobs;
    here listening stops first, running jobs get ``shutdown_grace_s`` to finish and stream to their
    clients, and only then does uvicorn's shutdown run. A second Ctrl-C (``force_exit``) cuts the wait.
    """

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()
        await self.service.drain(self.service.settings.shutdown_grace_s, abort=lambda: self.force_exit)
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self.servers[0].sockets[0].getsockname()[1]


def make_server(app: Starlette, settings: Settings, *, log_level: str = "info") -> GracefulServer:
    """A GracefulServer for ``app`` on ``settings.host:settings.port`` (SIGTERM/SIGINT handled by uvicorn
    when run in the main thread)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=p.MAX_MESSAGE_BYTES,
        lifespan="on",
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
    return GracefulServer(config, app.state.service)
