"""The async websocket client of the stream API, used by ``dff client`` and by the web UI.

    async for message in analyze_file("clip.mp4", "ws://127.0.0.1:7860/v1/analyze"):
        ...  # Hello, Progress, Accepted, FrameResult..., then Done or Error (the last one)

    api = HttpApi("http://127.0.0.1:7860")        # the HTTP routes on the same port
    report = await api.report(job_id)

Imports only ``stream.protocol`` and ``websockets``: no torch, no pipeline, so a UI process stays light.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from stream import protocol as p

MAX_INCOMING_BYTES = 256 * 1024 * 1024  # a `done` carries the whole report; a long video's can be large
# websockets >= 15 reads proxy settings from the environment by default; a local server is never proxied.
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}


class ClientError(Exception):
    """The conversation could not happen or broke off. ``code``: "connect", "unauthorized", "forbidden",
    "handshake", "bad_reply" (the server sent something that is not protocol), "connection_lost", "file"
    (the file to upload is missing, a directory or unreadable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _headers(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


async def receive_message(ws: ClientConnection) -> p.Message:
    try:
        raw = await ws.recv()
    except ConnectionClosed as err:
        raise ClientError("connection_lost", f"the server closed the connection ({err})") from None
    try:
        return p.decode(raw, p.SERVER_MESSAGES)
    except p.ProtocolError as err:
        raise ClientError("bad_reply", f"the server sent an invalid message: {err}") from None


async def open_connection(url: str, token: str | None, open_timeout_s: float) -> ClientConnection:
    try:
        return await connect(
            url,
            additional_headers=_headers(token),
            max_size=MAX_INCOMING_BYTES,
            open_timeout=open_timeout_s,
            **_NO_PROXY,
        )
    except InvalidStatus as err:
        status = err.response.status_code
        code = {401: "unauthorized", 403: "forbidden"}.get(status, "handshake")
        raise ClientError(code, f"{url} refused the connection: HTTP {status}") from None
    except (InvalidURI, InvalidHandshake) as err:
        raise ClientError("handshake", f"{url}: {err}") from None
    except (OSError, asyncio.TimeoutError) as err:
        raise ClientError("connect", f"cannot connect to {url}: {err or type(err).__name__}") from None


async def follow_messages(ws: ClientConnection) -> AsyncIterator[p.Message]:
    while True:
        message = await receive_message(ws)
        yield message
        if isinstance(message, (p.Done, p.Error)):
            return


async def analyze_file(
    path: str | Path,
    url: str,
    *,
    token: str | None = None,
    options: p.Options | None = None,
    name: str | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[p.Message]:
    """Upload ``path`` and yield every server message as it arrives; the last is ``Done`` or ``Error``.

    Waits for ``progress(uploading)`` before sending any byte, so a refusal (busy, too large, no model)
    costs no upload. Raises ClientError when the connection fails or breaks off, and with code ``file``
    (before connecting) when ``path`` is missing, a directory, not a regular file or cannot be read.
    """
    path = Path(path)
    fh, size = _open_upload(path)
    with fh:
        async for message in _upload(fh, size, name or path.name, url, token, options, open_timeout_s):
            yield message


def _open_upload(path: Path) -> tuple[BinaryIO, int]:
    """``path`` opened for reading and its size in bytes; ClientError("file") with the reason otherwise.

    Checked (stat, open, one byte read) before any connection, so a bad path costs no server slot; stat
    comes first because opening a FIFO would block until something writes to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ClientError("file", f"{path}: no such file") from None
    except OSError as err:
        raise ClientError("file", f"{path}: cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise ClientError("file", f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ClientError("file", f"{path}: not a regular file")
    try:
        fh = path.open("rb")
    except OSError as err:
        raise ClientError("file", f"{path}: cannot open: {err.strerror or err}") from None
    try:
        size = os.fstat(fh.fileno()).st_size
        fh.read(1)  # a file that opens but cannot be read (EIO, a revoked mount) fails here, not mid-upload
        fh.seek(0)
    except OSError as err:
        fh.close()
        raise ClientError("file", f"{path}: cannot read: {err.strerror or err}") from None
    return fh, size


async def _upload(
    fh: BinaryIO,
    size: int,
    name: str,
    url: str,
    token: str | None,
    options: p.Options | None,
    open_timeout_s: float,
) -> AsyncIterator[p.Message]:
    ws = await open_connection(url, token, open_timeout_s)
    async with ws:
        hello = await receive_message(ws)
        yield hello
        if not isinstance(hello, p.Hello):
            raise ClientError("bad_reply", f"expected hello, got {hello.TYPE}")
        start = p.Start(name=name, size_bytes=size, options=options or p.Options())
        try:
            await ws.send(p.encode(start))
        except ConnectionClosed as err:
            raise ClientError("connection_lost", f"the server closed the connection ({err})") from None
        reply = await receive_message(ws)
        yield reply
        if isinstance(reply, p.Error):
            return
        chunk_bytes = min(p.CHUNK_BYTES, hello.max_message_bytes)
        try:
            while chunk := await asyncio.to_thread(fh.read, chunk_bytes):
                await ws.send(chunk)
        except ConnectionClosed:
            pass  # the server refused mid-upload: its error message is still queued for follow_messages
        except OSError as err:  # the file broke off while we read it; closing the socket cancels the job
            raise ClientError("file", f"cannot read the file mid-upload: {err.strerror or err}") from None
        async for message in follow_messages(ws):
            yield message


async def attach(
    job_id: str, url: str, *, token: str | None = None, open_timeout_s: float = 10.0
) -> AsyncIterator[p.Message]:
    """Follow a job started elsewhere: its messages so far, then the live ones, until Done or Error."""
    ws = await open_connection(url, token, open_timeout_s)
    async with ws:
        yield await receive_message(ws)  # hello
        try:
            await ws.send(p.encode(p.Attach(job_id=job_id)))
        except ConnectionClosed as err:
            raise ClientError("connection_lost", f"the server closed the connection ({err})") from None
        async for message in follow_messages(ws):
            yield message


def frame_line(frame: p.FrameResult) -> str:
    """``frame  12 @   0.40 s  2 faces  max P(fake) 0.53  [track 0: 0.53, track 1: 0.21]``"""
    head = f"frame {frame.index:5d} @ {frame.time_s:7.2f} s"
    if not frame.faces:
        return f"{head}  no face"
    tracks = ", ".join(f"track {f.track_id}: {f.fake_prob:.2f}" for f in frame.faces)
    n = len(frame.faces)
    return f"{head}  {n} face{'' if n == 1 else 's'}  max P(fake) {frame.score:.2f}  [{tracks}]"


def accepted_line(accepted: p.Accepted) -> str:
    """``job Ab3...: clip.mp4 (1280×720, 10.0 s, h264), 20 frames planned, model seed.pth``"""
    media = accepted.media
    facts = [f"{media.width}×{media.height}"]
    if media.duration_s is not None and not media.is_image:
        facts.append(f"{media.duration_s:.1f} s")
    facts.append(media.codec)
    planned = "? frames" if accepted.planned_frames is None else f"{accepted.planned_frames} frames"
    model = accepted.model.name + (" (UNTRAINED: random weights)" if accepted.model.untrained else "")
    return f"job {accepted.job_id}: {media.name} ({', '.join(facts)}), {planned} planned, model {model}"


# ------------------------------------------------------------------------------------- HTTP report API


class HttpError(ClientError):
    """The HTTP API answered with an error status. ``status``: the HTTP status; ``code``/message: the
    server's ``{"error": {"code", "message"}}`` (or a generic one when the body is not that)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


# a local server is never proxied (urllib reads proxy variables from the environment otherwise)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpApi:
    """The HTTP routes of a ``dff serve`` (``/healthz``, ``/v1/reports…``, ``/v1/models…``), async.

    ``base_url``: ``http://host:port``. Blocking stdlib I/O runs in a worker thread, so this imports no
    HTTP library beyond the standard one. Errors raise :class:`HttpError` (an answer with an error status)
    or :class:`ClientError` with code ``connect`` (no answer).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or None
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Any = None, size: int | None = None) -> tuple[int, bytes]:
        headers = dict(_headers(self.token) or {})
        if size is not None:
            headers["Content-Length"] = str(size)
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw)["error"]
                code, message = str(detail["code"]), str(detail["message"])
            except (ValueError, KeyError, TypeError):
                code, message = (
                    {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(err.code, "http_error"),
                    f"HTTP {err.code} from {path}",
                )
            raise HttpError(err.code, code, message) from None
        except (urllib.error.URLError, OSError) as err:
            raise ClientError("connect", f"cannot reach {self.base_url}: {err}") from None

    async def _json(self, method: str, path: str) -> Any:
        _, raw = await asyncio.to_thread(self._request, method, path)
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError("bad_reply", f"{path} did not answer JSON") from None

    async def healthz(self) -> dict[str, Any]:
        """``status`` (ok/no_model/shutting_down), ``model``, ``device``, ``queue``, ``version``."""
        return await self._json("GET", "/healthz")

    async def _record(self, cls: type[p.Record], path: str) -> Any:
        """A JSON body decoded once into its record; ClientError ``bad_reply`` when it is not one."""
        body = await self._json("GET", path)
        try:
            return cls.from_json(body, path)
        except p.ProtocolError as err:
            raise ClientError("bad_reply", f"{path} answered something that is not protocol: {err}") from None

    async def reports(self, limit: int = 20, before: str | None = None) -> p.ReportPage:
        """One page of past jobs, newest first, with the cursor of the next (older) page or None."""
        query = {"limit": str(limit), **({"before": before} if before else {})}
        return await self._record(p.ReportPage, "/v1/reports?" + urllib.parse.urlencode(query))

    async def report(self, job_id: str) -> p.Report:
        """The stored report (schema ``dff.report/1``); HttpError 404/409 when unknown or not done."""
        return await self._record(p.Report, f"/v1/reports/{urllib.parse.quote(job_id, safe='')}")

    async def report_csv(self, job_id: str) -> str:
        """The report as CSV text, one row per face."""
        _, raw = await asyncio.to_thread(self._request, "GET", f"/v1/reports/{urllib.parse.quote(job_id, safe='')}.csv")
        return raw.decode("utf-8")

    async def frames(self, job_id: str) -> p.StoredFrames:
        """A job's stored frames and status, also for unfinished jobs."""
        return await self._record(p.StoredFrames, f"/v1/reports/{urllib.parse.quote(job_id, safe='')}/frames")

    async def models(self) -> dict[str, Any]:
        """``{active: model or None, models: [{name, size_bytes, active, ...}]}``."""
        return await self._json("GET", "/v1/models")

    async def put_model(self, name: str, path: str | Path) -> dict[str, Any]:
        """Upload a checkpoint file under ``name``; the server validates it before accepting it."""
        path = Path(path)
        size = path.stat().st_size

        def send() -> tuple[int, bytes]:
            with path.open("rb") as fh:
                return self._request("PUT", f"/v1/models/{urllib.parse.quote(name, safe='')}", fh, size)

        _, raw = await asyncio.to_thread(send)
        return json.loads(raw)

    async def activate(self, name: str) -> dict[str, Any]:
        """Make ``name`` the model for new jobs: ``{active: model}``."""
        return await self._json("POST", f"/v1/models/{urllib.parse.quote(name, safe='')}/activate")
