"""The live half of the websocket client: have the server watch a stream by URL, or push it frames (a
webcam), and stop either. Used by the page's Live tab; imports only ``stream.protocol``, ``websockets``
and Pillow, like ``ui/client.py`` (whose connection helpers it shares).

    stop = asyncio.Event()
    async for message in watch("rtsp://10.0.0.5/cam1", ws_url, stop=stop):
        ...  # Hello, Progress, Notice, Accepted, then FrameResult + LiveStatus per analysed frame; Done or Error

    feed = FrameFeed()                           # feed.put(time_s, jpeg) as frames come; feed.close() = stop
    async for message in push(feed, ws_url, name="webcam"):
        ...

Setting ``stop`` (or closing the feed) sends ``stop``: the server ends the session and its report follows
as ``Done``. Leaving the loop early closes the connection; the server then ends the session unwatched
(the report is still stored). Errors: ``ui.client.ClientError`` when the conversation cannot happen or
breaks off; a refusal by the server (busy, unsupported_source, ...) is an ``Error`` message, the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from stream import protocol as p

# ui/client.py's connection core: the same proxy, size and error rules for a live session as for an upload
from ui.client import ClientError, follow_messages, open_connection, receive_message

_TIME = struct.Struct(">d")  # a pushed frame's header: its time in seconds, big-endian float64
assert _TIME.size == p.PUSH_HEADER_BYTES
FEED_FRAMES = 2  # frames a FrameFeed holds before it drops the oldest (the socket is the real buffer)
JPEG_QUALITY = 85


@dataclass(frozen=True, slots=True)
class PushedFrame:
    """One frame for a push session: ``time_s`` in seconds of the client's stream (non-decreasing),
    ``data`` the picture as JPEG or PNG bytes."""

    time_s: float
    data: bytes

    def encode(self) -> bytes:
        """The binary websocket message: 8-byte big-endian float64 time, then the picture's bytes."""
        return _TIME.pack(self.time_s) + self.data


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An H×W×3 uint8 RGB frame (a webcam's) as JPEG bytes. A grey or RGBA frame is converted first."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} of shape {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class FrameFeed:
    """The frames waiting to go to the server, newest first: holds at most ``max_frames``; putting one
    more drops the oldest (counted in ``dropped``), so a slow connection never builds up latency or
    memory. ``close()`` ends the feed: the push session then sends ``stop``. One event loop only."""

    def __init__(self, max_frames: int = FEED_FRAMES) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self._frames: deque[PushedFrame] = deque(maxlen=max_frames)
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, time_s: float, data: bytes) -> bool:
        """Queue one frame; False (and nothing queued) once the feed is closed."""
        if self.closed:
            return False
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(PushedFrame(time_s, data))
        self.put_count += 1
        self._ready.set()
        return True

    def close(self) -> None:
        """No more frames: what is queued is still sent, then ``stop``."""
        self.closed = True
        self._ready.set()

    async def get(self) -> PushedFrame | None:
        """The oldest queued frame, waiting for one; None once the feed is closed and empty."""
        while not self._frames:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()


async def _send(ws: ClientConnection, data: str | bytes) -> bool:
    """Send one message; False when the server has closed (its error, if any, is still to be read)."""
    try:
        await ws.send(data)
    except ConnectionClosed:
        return False
    return True


async def _start(ws: ClientConnection, request: p.Watch | p.Push) -> p.Hello:
    """Read ``hello`` and send the session's first message; returns the hello."""
    hello = await receive_message(ws)
    if not isinstance(hello, p.Hello):
        raise ClientError("bad_reply", f"expected hello, got {hello.TYPE}")
    if not await _send(ws, p.encode(request)):
        raise ClientError("connection_lost", "the server closed the connection before the session began")
    return hello


async def _live(ws: ClientConnection, sender: asyncio.Task[None] | None) -> AsyncIterator[p.Message]:
    """Every message until Done or Error; ``sender`` (the client's half of the session) ends on the way out."""
    try:
        async for message in follow_messages(ws):
            yield message
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender


async def watch(
    source_url: str,
    url: str,
    *,
    stop: asyncio.Event | None = None,
    token: str | None = None,
    options: p.Options | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[p.Message]:
    """Have the server at ``url`` (``ws://host:port/v1/analyze``) analyse the live ``source_url`` and yield
    every message as it arrives; the last is ``Done`` (the session report) or ``Error``. Setting ``stop``
    sends ``stop``, once: the server ends the session and sends its report."""
    request = p.Watch(url=source_url, options=options or p.Options())
    ws = await open_connection(url, token, open_timeout_s)
    async with ws:
        yield await _start(ws, request)

        async def stop_when_set() -> None:
            assert stop is not None
            await stop.wait()
            await _send(ws, p.encode(p.Stop()))

        sender = asyncio.create_task(stop_when_set()) if stop is not None else None
        async for message in _live(ws, sender):
            yield message


async def push(
    feed: FrameFeed,
    url: str,
    *,
    name: str = "webcam",
    token: str | None = None,
    options: p.Options | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[p.Message]:
    """Have the server at ``url`` analyse the frames put into ``feed`` (a ``push`` session named ``name``)
    and yield every message as it arrives; the last is ``Done`` or ``Error``. Frames go out as they are
    put; ``feed.close()`` sends ``stop`` after the queued ones."""
    request = p.Push(name=name, options=options or p.Options())
    ws = await open_connection(url, token, open_timeout_s)
    async with ws:
        hello = await _start(ws, request)
        yield hello
        limit = hello.max_message_bytes

        async def send_frames() -> None:
            while (frame := await feed.get()) is not None:
                message = frame.encode()
                if len(message) > limit:  # the server would refuse it; the next, smaller one may pass
                    feed.dropped += 1
                    continue
                if not await _send(ws, message):
                    return  # the server closed: its error message is read by follow_messages
            await _send(ws, p.encode(p.Stop()))

        async for message in _live(ws, asyncio.create_task(send_frames())):
            yield message
