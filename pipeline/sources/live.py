"""The live URL source: one reader thread per URL, sampling the newest frames into a bounded queue.

    open_live(url) ─▶ reader thread: open ─▶ demux+decode every packet ─▶ sample at rate_hz by pts
                                        ─▶ RGB (sampled frames only) ─▶ queue of queue_frames (oldest dropped)
    LiveSource.events() ◀─ SourceConnected, Frame, ..., SourceReconnecting, SourceConnected, Frame, ...

Why a thread that always reads: a live source does not wait for its reader. Buffering flags do not help
a slow consumer; only dropping does. The reader keeps up with the stream (it decodes everything, but
converts to RGB only what it samples) and the queue holds at most ``queue_frames`` frames, so the lag
from capture to delivery stays under about ``(queue_frames + 1) / rate_hz`` however slow the consumer.

Why the reader owns its container: closing a PyAV container from another thread while it is blocked in
demux crashes the process (SIGSEGV). ``close()`` only sets a flag; the reader sees it after the current
packet, or after ``read_timeout_s`` when the source is silent, and closes the container itself.

Times: ``Frame.time_s`` is seconds of stream received, from 0 at the first frame; a reconnect (or a jump
in the stream's own clock) continues from the last time, so time never goes back. ``Frame.index``
counts decoded frames over the whole session. ``captured_s`` is the wall time the frame was decoded.

Ends: a finite source that ends (an HTTP body of stated length complete, HLS ``#EXT-X-ENDLIST`` reached,
an RTSP stream of stated length played out) ends the iteration; a live source that stops, breaks or falls
silent is reconnected with capped exponential backoff, up to ``reconnects`` times in a row (a connection
that delivered frames for HEALTHY_S starts a new count), and then raises SourceError (SourceTimeout when
it was silent). A source that never connected is not retried: a wrong URL fails at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import av

from pipeline.live_types import LiveOptions, LiveStats, SourceConnected, SourceReconnecting
from pipeline.sources.base import Source
from pipeline.sources.live_open import Failure, LiveUrl, check_size, check_url, explain, hls_ended, open_url
from pipeline.sources.rotation import clockwise, rotate
from pipeline.sources.video import Schedule
from pipeline.types import Frame, MediaInfo, MediaKind, SampleMode, SamplingPolicy

__all__ = ["LiveSource", "open_live"]

log = logging.getLogger(__name__)

LiveEvent = Frame | SourceConnected | SourceReconnecting
_FALLBACK_FPS = 25.0  # FFmpeg's own guess when a stream states no rate
_JUMP_BACK_S = 1.0  # the stream clock going back more than this is a new clock (HLS discontinuity, TS wrap)
_JUMP_AHEAD_S = 60.0  # ... and so is a jump ahead by more than this
_END_SLACK_S = 1.0  # a stream of stated length that stops this close to its end has ended, not broken
HEALTHY_S = 30.0  # a connection that delivered frames for this long (wall time) starts a new reconnect count
_MAX_NOTICES = 32  # notices kept for a consumer that does not read (frames are bounded by queue_frames)
_JOIN_SLACK_S = 2.0
_MAX_REJECTED = 250  # packets in a row the decoder rejects before the connection counts as broken


def open_live(url: str, options: LiveOptions, *, wake: Callable[[], None] | None = None) -> LiveSource:
    """Validate ``url`` and start its reader thread; never touches the network on the caller's thread.

    Raises UnsupportedSource for a scheme not in LIVE_SCHEMES (``file:``, ``concat:``, ``subfile:``,
    ``pipe:``, ``data:``, ...), a URL with no host (except ``udp://@:port`` listen URLs), or any other
    malformed URL. ``wake`` is called from the reader thread whenever ``ready()`` may have become True.
    """
    return LiveSource(check_url(url), options, wake=wake)


class _Clock:
    """Stream seconds over the whole session: from 0 at the first frame, non-decreasing, and continued
    across reconnects and clock jumps (each new clock starts one frame after the last time)."""

    def __init__(self) -> None:
        self.last_s: float | None = None
        self._offset_s = 0.0
        self._anchor_s: float | None = None  # the current clock's reading at _offset_s
        self._prev_s: float | None = None
        self.step_s = 1.0 / _FALLBACK_FPS

    def restart(self, fps: float | None) -> None:
        """A new connection: its clock starts anew."""
        self.step_s = 1.0 / fps if fps else 1.0 / _FALLBACK_FPS
        self._anchor_s = None

    def time_s(self, stream_s: float) -> float:
        prev = self._prev_s
        self._prev_s = stream_s
        jumped = prev is not None and not (-_JUMP_BACK_S <= stream_s - prev <= _JUMP_AHEAD_S)
        if self._anchor_s is None or jumped:
            self._anchor_s = stream_s
            self._offset_s = self.last_s + self.step_s if self.last_s is not None else 0.0
        t = max(self._offset_s + stream_s - self._anchor_s, self.last_s or 0.0)
        self.last_s = t
        return t


class LiveSource(Source):
    """A live URL being read. Made by :func:`open_live`; ``close()`` (or ``with``) stops it.

    ``name``: the URL for people (no credentials, no query); ``policy``: EVERY_S at ``1 / rate_hz``, no
    frame cap; ``planned_frames``: None; ``info``: as the latest connection found the stream.
    """

    planned_frames = None

    def __init__(self, live: LiveUrl, options: LiveOptions, *, wake: Callable[[], None] | None = None) -> None:
        self.name = live.name
        self.policy = SamplingPolicy(mode=SampleMode.EVERY_S, every_s=options.every_s, max_frames=None)
        self._live = live
        self._options = options
        self._wake = wake
        self._cond = threading.Condition()
        self._items: deque[LiveEvent] = deque()  # guarded by _cond, like every field below
        self._queued_frames = 0
        self._end: BaseException | None = None  # what the consumer meets after the queue: an error ...
        self._ended = False  # ... or a clean end
        self._closed = False
        self._info: MediaInfo | None = None
        self._format_name = ""  # the demuxer of the current connection (reader thread only) ...
        self._body_bytes = -1  # ... and the length of its HTTP body (-1: not known)
        self._counts = {"decoded": 0, "sampled": 0, "dropped": 0, "delivered": 0, "reconnects": 0}
        self._stop = threading.Event()  # close() asked the reader to stop (also cuts a backoff wait short)
        self._thread = threading.Thread(target=self._run, name=f"live-reader {self.name}", daemon=True)
        self._thread.start()

    # --- the consumer's side -------------------------------------------------------------------------

    @property
    def info(self) -> MediaInfo:  # type: ignore[override]
        """The media facts of the latest connection; RuntimeError before the first."""
        with self._cond:
            if self._info is None:
                raise RuntimeError(f"{self.name} has not connected yet")
            return self._info

    def events(self) -> Iterator[LiveEvent]:
        """Frames and notices in order, blocking for each. The first is SourceConnected (or an error).

        Frames: strictly increasing ``index``, non-decreasing ``time_s`` (across reconnects too),
        ``captured_s`` set, images H×W×3 uint8 RGB with rotation applied. Ends on a clean end of stream
        or after ``close()``; raises SourceTimeout (silent, no reconnect left), SourceError (cannot be
        opened, or broke past the reconnect limit), MediaTooLarge (frames over ``max_pixels``) or
        UnsupportedSource (this FFmpeg cannot open the scheme).
        """
        while True:
            item = self._take()
            if item is None:
                return
            yield item

    def frames(self) -> Iterator[Frame]:
        """The Source protocol: :meth:`events` without the notices."""
        return (item for item in self.events() if isinstance(item, Frame))

    def ready(self) -> bool:
        """True when ``next(events())`` will not block: an item is queued, or the source ended or failed."""
        with self._cond:
            return bool(self._items) or self._ended or self._end is not None or self._closed

    def stats(self) -> LiveStats:
        """A snapshot of the counters (thread-safe)."""
        with self._cond:
            return LiveStats(**self._counts)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop the reader and join it for at most ``timeout_s`` (default: the longer of the open and
        read timeouts, plus a little: a reader blocked in FFmpeg sees the flag only when its timeout
        fires); idempotent. ``timeout_s=0`` returns at once: the reader still stops and closes its own
        container. Queued frames are discarded."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._queued_frames = 0
            self._cond.notify_all()
        self._stop.set()
        if threading.current_thread() is not self._thread:
            if timeout_s is None:
                timeout_s = max(self._options.open_timeout_s, self._options.read_timeout_s) + _JOIN_SLACK_S
            self._thread.join(timeout_s)
            if timeout_s > 0 and self._thread.is_alive():  # it closes its own container when FFmpeg returns
                log.warning("%s: the reader did not stop within %.1f s", self.name, timeout_s)

    def _take(self) -> LiveEvent | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._items:
                    item = self._items.popleft()
                    if isinstance(item, Frame):
                        self._queued_frames -= 1
                        self._counts["delivered"] += 1
                    return item
                if self._end is not None:
                    raise self._end
                if self._ended:
                    return None
                self._cond.wait(0.5)

    # --- the reader thread -----------------------------------------------------------------------------

    def _put(self, item: LiveEvent) -> None:
        with self._cond:
            if self._closed:
                return
            if isinstance(item, Frame):
                self._counts["sampled"] += 1
                if self._queued_frames >= self._options.queue_frames:  # newest first: drop the oldest frame
                    oldest = next(i for i, it in enumerate(self._items) if isinstance(it, Frame))
                    del self._items[oldest]
                    self._queued_frames -= 1
                    self._counts["dropped"] += 1
                self._queued_frames += 1
            elif len(self._items) - self._queued_frames >= _MAX_NOTICES:
                oldest = next(i for i, it in enumerate(self._items) if not isinstance(it, Frame))
                del self._items[oldest]
            self._items.append(item)
            self._cond.notify_all()
        self._call_wake()

    def _call_wake(self) -> None:
        if self._wake is not None:
            try:
                self._wake()
            except Exception:  # a scheduler's bug must not kill the reader
                log.exception("%s: wake() raised", self.name)

    def _run(self) -> None:
        end: BaseException | None = None
        try:
            self._read_all()
        except BaseException as e:  # every error reaches the consumer; the thread never dies silently
            end = e
        with self._cond:
            self._end, self._ended = end, end is None
            self._cond.notify_all()
        self._call_wake()

    def _read_all(self) -> None:
        """Connect, read, and reconnect per the options until a clean end, close(), or a final error."""
        opts = self._options
        clock, schedule = _Clock(), Schedule(step_s=opts.every_s)
        tries = 0  # reconnect attempts since the last connection that delivered frames
        while not self._stop.is_set():
            try:
                self._connection(tries, clock, schedule)
                return  # a clean end, or close()
            except Failure as f:
                failure = f
            except (av.FFmpegError, OSError) as e:  # from a call not expected to fail: still no URL shown
                failure = explain(e, self._live, opening=False, options=opts)
            if self._stop.is_set():
                return
            if failure.healthy:
                tries = 0
            # a source that never connected fails at once: a wrong URL should not take a minute of backoff
            never_connected = self._info is None
            if failure.permanent or never_connected or tries >= opts.reconnects:
                raise failure.final(self.name, tries) from None
            tries += 1
            delay_s = min(opts.backoff_s * 2 ** (tries - 1), opts.backoff_max_s)
            with self._cond:
                self._counts["reconnects"] += 1
            self._put(SourceReconnecting(tries, opts.reconnects, delay_s, failure.reason, time.time()))
            if self._stop.wait(delay_s):
                return

    def _connection(self, attempt: int, clock: _Clock, schedule: Schedule) -> None:
        """One connection: open, decode until the stream ends cleanly or close() is asked. Raises Failure
        (``healthy`` set when frames came). The container is opened and closed on this thread only."""
        opts, live = self._options, self._live
        frames, first_wall_s = 0, 0.0
        container = open_url(live, opts)
        try:
            stream = container.streams.video[0]
            cc = stream.codec_context
            check_size(self.name, cc.width, cc.height, opts.max_pixels)  # the header, before any decode
            fps = float(stream.average_rate) if stream.average_rate else None
            time_base = stream.time_base
            duration_s = container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE
            self._body_bytes = container.size if live.scheme in ("http", "https") else -1  # Content-Length
            clock.restart(fps or (float(stream.guessed_rate) if stream.guessed_rate else None))
            rotation, first_s = 0, 0.0
            for av_frame in self._decoded(container, stream):
                if self._stop.is_set():
                    return
                if av_frame.is_corrupt:
                    continue  # concealed decode errors (a cut packet): artefacts a forensic model must not see
                check_size(self.name, av_frame.width, av_frame.height, opts.max_pixels)
                if frames == 0:
                    first_wall_s = time.monotonic()
                    rotation = clockwise(av_frame.rotation)
                    self._connected(container, stream, av_frame, rotation, fps, duration_s, attempt)
                time_s = clock.time_s(_stream_time(av_frame, time_base, frames, clock.step_s))
                first_s = time_s if frames == 0 else first_s
                frames += 1
                with self._cond:
                    index = self._counts["decoded"]
                    self._counts["decoded"] += 1
                if schedule.take(time_s):
                    image = rotate(av_frame.to_ndarray(format="rgb24"), rotation)  # only sampled frames
                    self._put(Frame(index=index, time_s=time_s, image=image, captured_s=time.time()))
        except Failure as f:
            # not merely "delivered a frame": a stalled HLS playlist replays its last segments on every
            # reconnect, and must still run out of reconnects
            f.healthy = frames > 0 and time.monotonic() - first_wall_s >= HEALTHY_S
            raise
        finally:
            container.close()
        if frames == 0:
            raise Failure("the stream ended before its first frame")
        if not self._finite(duration_s, (clock.last_s or 0.0) - first_s):
            healthy = time.monotonic() - first_wall_s >= HEALTHY_S
            raise Failure("the stream stopped", healthy=healthy)  # a live stream has no end: it broke

    def _finite(self, duration_s: float | None, played_s: float) -> bool:
        """Whether an end of stream is the stream's own end. A source that stated its length at open (HLS
        with ENDLIST, RTSP with a range) must have been played to about its end; a live HLS playlist must
        say ENDLIST now (asked again: FFmpeg ends the same way when the server died); a plain HTTP body of
        known length has ended (FFmpeg raises for a short one), while a chunked body that ends may have
        been cut (FFmpeg cannot tell), so that is a break, as RTSP, UDP, ... ending is."""
        if duration_s is not None:
            return played_s >= duration_s - max(_END_SLACK_S, 2 * self._options.every_s)
        if self._format_name == "hls":
            return hls_ended(self._live.url, self._options.read_timeout_s)
        return self._body_bytes > 0

    def _decoded(self, container: Any, stream: Any) -> Iterator[Any]:
        """Decoded av.VideoFrames; a packet the decoder rejects is skipped (a live stream goes on)."""
        opts, live = self._options, self._live
        demuxed = container.demux(stream)
        rejected = 0  # packets the decoder rejected in a row
        while True:
            t0 = time.monotonic()
            try:
                packet = next(demuxed)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as e:
                if self._stop.is_set():
                    return
                raise explain(e, live, opening=False, options=opts, waited_s=time.monotonic() - t0) from None
            try:
                decoded = stream.decode(packet)
            except av.FFmpegError as e:
                rejected += 1
                if rejected >= _MAX_REJECTED:
                    raise Failure(f"the decoder rejects the stream ({e.strerror or e.__class__.__name__})") from None
                continue
            rejected = 0
            yield from decoded

    def _connected(
        self,
        container: Any,
        stream: Any,
        first: Any,
        rotation: int,
        fps: float | None,
        duration_s: float | None,
        attempt: int,
    ) -> None:
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        self._format_name = container.format.name
        info = MediaInfo(
            name=self.name,
            size_bytes=None,
            sha256=None,
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=fps,
            duration_s=duration_s,
            rotation_deg=rotation,
            is_image=False,
            frame_count=None,
            kind=MediaKind.LIVE,
        )
        with self._cond:
            self._info = info
        self._put(SourceConnected(info=info, wall_s=time.time(), attempt=attempt))


def _stream_time(av_frame: Any, time_base: Any, ordinal: int, step_s: float) -> float:
    """A frame's time on the stream's own clock: pts where there is one, else its ordinal × frame step."""
    t = av_frame.time  # None without pts; NaN for frames flushed with decode(None) (no time_base)
    if (t is None or math.isnan(t)) and av_frame.pts is not None and time_base is not None:
        t = float(av_frame.pts * time_base)
    return float(t) if t is not None and not math.isnan(t) else ordinal * step_s
