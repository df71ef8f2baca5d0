"""One client's view of a job: a queue bounded in bytes, with a written rule for what a slow client loses.

Backpressure, end to end: the backend holds at most ``EVENT_QUEUE_SIZE`` events per job (stream/backend.py);
the job keeps no log, only a few head messages (``progress``/``accepted``) and its final message; each
watcher's queue holds at most ``WATCH_QUEUE_BYTES`` of encoded messages; the socket's send pacing (uvicorn
waits while the transport's buffer is full) drains it. When a message would take a watcher over its budget:

1. ``progress`` and ``live`` are coalesced: a new ``progress`` replaces an unsent one of the same stage, a
   new ``live`` (a snapshot of the whole session) an unsent ``live`` (always, full or not), so a client's
   queue holds at most one per stage (``queued``, ``analyzing``) and one ``live``, and a slow client gets
   only the newest;
2. then ``notice`` messages go, oldest first (a new one that still does not fit is not queued); they are
   counted in ``dropped_notices``;
3. then overlays go: queued ``frame`` messages are re-encoded without ``overlay_jpeg_b64``, oldest first;
4. then the frames themselves: the new frame is not queued, a gap marker is; when the pump reaches the gap
   it reads those frames back from the store (every frame is committed before it is published), so the
   client still gets every frame's scores, in order, only without overlays;
5. ``done`` and ``error`` are never dropped (a final message may take the queue one message over).

Sizes are UTF-8 bytes of the encoded text (messages are encoded with ``ensure_ascii=False``).

A late attacher is a watcher that starts behind: the job's head messages, a gap covering the frames
published so far (read from the store), then live messages; the final message when the job has ended.
Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from stream import protocol as p

log = logging.getLogger("dff.watchers")

WATCH_QUEUE_BYTES = 1 << 20  # encoded bytes one watcher may have queued (1 MiB: ~80 frames with 1 overlay)
PAGE_FRAMES = 256  # frames read back from the store per query while catching up

FetchFrames = Callable[[str, int, int], Awaitable[list[p.FrameResult]]]  # (job_id, first seq, limit)


@dataclass(eq=False, slots=True)
class Item:
    """A message published once and shared by every watcher: the record and its text, encoded once."""

    message: p.Message
    text: str
    size: int  # UTF-8 bytes of ``text``

    @classmethod
    def of(cls, message: p.Message) -> Item:
        text = p.encode(message)
        return cls(message, text, len(text.encode("utf-8")))

    @property
    def final(self) -> bool:
        return isinstance(self.message, p.FINAL_MESSAGES)

    def without_overlays(self) -> Item:
        """This frame with ``overlay_jpeg_b64`` null on every face (itself when it has none)."""
        frame = self.message
        if not isinstance(frame, p.FrameResult) or all(f.overlay_jpeg_b64 is None for f in frame.faces):
            return self
        faces = tuple(dataclasses.replace(f, overlay_jpeg_b64=None) for f in frame.faces)
        return Item.of(dataclasses.replace(frame, faces=faces))


@dataclass(eq=False, slots=True)
class _Gap:
    """Frames up to (not including) seq ``until`` that are not queued: read them from the store."""

    until: int


class Watcher:
    """A bounded queue of one job's messages for one client; ``texts()`` is what its connection sends."""

    def __init__(self, job_id: str, fetch: FetchFrames, budget_bytes: int = WATCH_QUEUE_BYTES) -> None:
        """``fetch(job_id, first_seq, limit)``: stored frames from ``first_seq`` on, at most ``limit``."""
        self.job_id = job_id
        self._fetch = fetch
        self._budget = budget_bytes
        self._items: deque[Item | _Gap] = deque()
        self._bytes = 0
        self._next_seq = 0  # the next frame this client must get
        self._ready = asyncio.Event()
        self.dropped_overlays = 0  # frames this client got without their overlays
        self.read_back = 0  # frames this client got from the store
        self.dropped_notices = 0  # notices this client never got (rule 2)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def push(self, item: Item) -> None:
        """Queue one published message by the rule above."""
        message = item.message
        if isinstance(message, p.Progress):
            self._remove(lambda m: isinstance(m, p.Progress) and m.stage == message.stage)
        elif isinstance(message, p.LiveStatus):
            self._remove(lambda m: isinstance(m, p.LiveStatus))
        if not item.final and self._bytes + item.size > self._budget:
            self._drop_notices(self._bytes + item.size - self._budget)
            if isinstance(message, p.Notice) and self._bytes + item.size > self._budget:
                self.dropped_notices += 1
                return
            self._strip_overlays(self._bytes + item.size - self._budget)
            if isinstance(message, p.FrameResult) and self._bytes + item.size > self._budget:
                self.behind(message.seq + 1)
                return
            # anything else that is not final (accepted, one coalesced progress or live) is small: it is queued
        self._items.append(item)
        self._bytes += item.size
        self._ready.set()

    def behind(self, until_seq: int) -> None:
        """Frames before ``until_seq`` not queued so far come from the store, at this point in the stream."""
        tail = self._items[-1] if self._items else None
        if isinstance(tail, _Gap):
            tail.until = max(tail.until, until_seq)
        else:
            self._items.append(_Gap(until_seq))
        self._ready.set()

    async def texts(self) -> AsyncIterator[tuple[str, bool]]:
        """(encoded message, is it the final one) in stream order, until the final one."""
        while True:
            while not self._items:
                self._ready.clear()
                await self._ready.wait()
            entry = self._items.popleft()
            if isinstance(entry, _Gap):
                async for text in self._read_back(entry.until):
                    yield text, False
                continue
            self._bytes -= entry.size
            message = entry.message
            if isinstance(message, p.FrameResult):
                if message.seq < self._next_seq:  # already sent from the store
                    continue
                if message.seq > self._next_seq:  # an earlier frame was dropped after this one was queued
                    async for text in self._read_back(message.seq):
                        yield text, False
                self._next_seq = message.seq + 1
            yield entry.text, entry.final
            if entry.final:
                return

    async def _read_back(self, until_seq: int) -> AsyncIterator[str]:
        while self._next_seq < until_seq:
            frames = await self._fetch(self.job_id, self._next_seq, min(PAGE_FRAMES, until_seq - self._next_seq))
            if not frames:  # deleted meanwhile (DELETE /v1/reports/{id} of a finished job): nothing to send
                log.warning("job %s: frames %d..%d are not stored", self.job_id, self._next_seq, until_seq - 1)
                self._next_seq = until_seq
                return
            for frame in frames:
                self._next_seq = frame.seq + 1
                self.read_back += 1
                yield p.encode(frame)

    def _remove(self, superseded: Callable[[p.Message], bool]) -> None:
        """Unqueue the messages a new one supersedes (rule 1)."""
        kept: deque[Item | _Gap] = deque()
        for entry in self._items:
            if isinstance(entry, Item) and superseded(entry.message):
                self._bytes -= entry.size
            else:
                kept.append(entry)
        self._items = kept

    def _drop_notices(self, need_bytes: int) -> None:
        """Unqueue notices, oldest first, until ``need_bytes`` are freed (rule 2)."""
        freed = 0
        kept: deque[Item | _Gap] = deque()
        for entry in self._items:
            if freed < need_bytes and isinstance(entry, Item) and isinstance(entry.message, p.Notice):
                freed += entry.size
                self._bytes -= entry.size
                self.dropped_notices += 1
            else:
                kept.append(entry)
        self._items = kept

    def _strip_overlays(self, need_bytes: int) -> None:
        """Re-encode queued frames without overlays, oldest first, until ``need_bytes`` are freed."""
        freed = 0
        for i, entry in enumerate(self._items):
            if freed >= need_bytes:
                return
            if isinstance(entry, Item):
                lite = entry.without_overlays()
                if lite is not entry:
                    self._items[i] = lite
                    freed += entry.size - lite.size
                    self._bytes -= entry.size - lite.size
                    self.dropped_overlays += 1
