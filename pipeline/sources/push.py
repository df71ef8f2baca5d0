"""The pushed-frames source: frames a client sends one by one (a browser's webcam, a websocket client).

The producer (a socket handler, a Gradio stream callback) calls ``push_jpeg``/``push_image`` with each
frame and ``finish()`` at the end; the analysis reads ``events()`` like any live source: a
``SourceConnected`` at the first frame (its size fixes the session's frame size), then the frames, newest
first (``newest.py``: when analysis is behind, the oldest waiting frame is dropped and counted). A client
that sends nothing for ``read_timeout_s`` ends the session with ``SourceTimeout``; a frame of another size,
or one that is not a JPEG/PNG, is refused to the producer with a typed error and does not end the session.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DecodeError, SourceTimeout, UnsupportedMedia
from pipeline.live_types import LiveOptions, LiveStats, SourceConnected, SourceNotice
from pipeline.sources.base import Source
from pipeline.sources.newest import NewestFirst
from pipeline.sources.probe import check_pixels
from pipeline.types import Frame, MediaInfo, MediaKind, SampleMode, SamplingPolicy

PUSH_FORMATS = frozenset({"JPEG", "PNG"})


def decode_pushed(data: bytes, max_pixels: int) -> np.ndarray:
    """One pushed picture (JPEG or PNG bytes) -> H×W×3 uint8 RGB. The pixel cap is checked on the header.

    Raises UnsupportedMedia (not a JPEG/PNG), MediaTooLarge, DecodeError (damaged)."""
    try:
        im = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise UnsupportedMedia(f"a pushed frame must be a JPEG or PNG picture ({e})") from None
    if im.format not in PUSH_FORMATS:
        raise UnsupportedMedia(f"a pushed frame must be a JPEG or PNG picture, got {im.format}")
    check_pixels("the pushed frame", im.width, im.height, max_pixels)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DecodeError(f"a pushed frame is damaged or truncated: {e}") from None


class PushSource(Source):
    """Frames pushed by a client, sampled at ``options.rate_hz`` by their own timestamps (stream seconds)."""

    def __init__(self, name: str, options: LiveOptions, *, wake: Callable[[], None] | None = None) -> None:
        self.name = name
        self.options = options
        self.policy = SamplingPolicy(SampleMode.EVERY_S, options.every_s, 1, None)
        self.planned_frames: int | None = None
        self._buffer: NewestFirst[SourceNotice] = NewestFirst(options.queue_frames, wake)
        self._lock = threading.Lock()
        self._info: MediaInfo | None = None
        self._index = 0
        self._last_time_s: float | None = None
        self._next_s = 0.0
        self._received = 0
        self._sampled = 0
        self._opened = time.monotonic()
        self._last_push: float | None = None

    @property
    def info(self) -> MediaInfo:
        if self._info is None:
            raise RuntimeError(f"{self.name}: no frame was pushed yet")
        return self._info

    # -- the producer's side ---------------------------------------------------------------------------------

    def push_jpeg(self, data: bytes, time_s: float) -> bool:
        """Decode and push one JPEG/PNG frame; see ``push_image``. Raises what ``decode_pushed`` raises.
        A frame that would not be sampled (too soon after the last sampled one) is counted, not decoded."""
        with self._lock:
            between = self._info is not None and self._last_time_s is not None and self._last_time_s <= time_s
            if between and time_s < self._next_s - 1e-6:
                self._received += 1
                self._last_push = time.monotonic()
                self._last_time_s = time_s
                return False
        return self.push_image(decode_pushed(data, self.options.max_pixels), time_s)

    def push_image(self, image: np.ndarray, time_s: float) -> bool:
        """Push one H×W×3 uint8 RGB frame taken at ``time_s`` (the client's stream seconds, non-decreasing).
        Returns whether it was sampled (frames closer than 1/rate_hz to the last sampled one are skipped).

        Raises DecodeError (a ValueError) for a malformed array, a frame of another size than the first, or
        a time that goes backwards; MediaTooLarge over the pixel cap. The session goes on after either."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise DecodeError(f"a pushed frame must be H×W×3 uint8 RGB, got {got}")
        if not np.isfinite(time_s) or time_s < 0:
            raise DecodeError(f"a pushed frame's time must be seconds >= 0, got {time_s!r}")
        height, width = image.shape[:2]
        check_pixels("the pushed frame", width, height, self.options.max_pixels)
        with self._lock:
            if self._last_time_s is not None and time_s < self._last_time_s:
                raise DecodeError(
                    f"pushed frames must not go back in time: {time_s:.3f} s after {self._last_time_s:.3f} s"
                )
            if self._info is not None and (width, height) != (self._info.width, self._info.height):
                raise DecodeError(
                    f"pushed frames must keep the first frame's size {self._info.width}×{self._info.height}, "
                    f"got {width}×{height}"
                )
            self._received += 1
            self._last_push = time.monotonic()
            self._last_time_s = time_s
            first = self._info is None
            if first:
                self._info = MediaInfo(
                    name=self.name, size_bytes=None, sha256=None, container="push", codec="jpeg",
                    width=width, height=height, fps=None, duration_s=None, rotation_deg=0, is_image=False,
                    frame_count=None, kind=MediaKind.LIVE,
                )  # fmt: skip
            if not first and time_s < self._next_s - 1e-6:
                return False
            self._next_s = (np.floor(time_s / self.options.every_s + 1e-6) + 1) * self.options.every_s
            self._sampled += 1
            index = self._index
            self._index += 1
            info = self._info
        if first:
            self._buffer.put(SourceConnected(info, time.time()))
        self._buffer.put(Frame(index, float(time_s), np.ascontiguousarray(image), captured_s=time.time()))
        return True

    def finish(self) -> None:
        """The client ended the stream cleanly: the session ends after the frames that wait."""
        self._buffer.end()

    # -- the analysis' side ----------------------------------------------------------------------------------

    def events(self) -> Iterator[Frame | SourceNotice]:
        """``SourceConnected``, then the sampled frames, newest first; ends at ``finish()``/``close()``;
        raises SourceTimeout when no frame arrives for ``read_timeout_s`` (``open_timeout_s`` for the first)."""
        while True:
            left_s, limit_s = self._time_left()
            try:
                item = self._buffer.get(max(left_s, 0.0))
            except TimeoutError:
                if self._time_left()[0] > 0:  # frames came meanwhile, all between two samples
                    continue
                what = "no frame was pushed" if self._last_push is None else "no frame came"
                error = SourceTimeout(f"{self.name}: {what} for {limit_s:g} s")
                self._buffer.end(error)
                raise error from None
            if item is None:
                return
            yield item

    def _time_left(self) -> tuple[float, float]:
        """Seconds until the current timeout, and that timeout (open before the first frame, then read)."""
        with self._lock:
            last, limit = self._last_push, self.options.read_timeout_s
            if last is None:
                last, limit = self._opened, self.options.open_timeout_s
        return limit - (time.monotonic() - last), limit

    def frames(self) -> Iterator[Frame]:
        return (item for item in self.events() if isinstance(item, Frame))

    def ready(self) -> bool:
        """True when ``next(events())`` returns at once: a frame waits, the stream ended, or its timeout
        has passed (then it raises). Nothing calls a wake-up at a timeout: a scheduler polls ``ready()``."""
        return self._buffer.ready() or self._time_left()[0] <= 0

    def stats(self) -> LiveStats:
        with self._lock:
            received, sampled = self._received, self._sampled
        return LiveStats(
            decoded=received, sampled=sampled, dropped=self._buffer.dropped, delivered=self._buffer.delivered
        )

    def close(self) -> None:
        self._buffer.abandon()
