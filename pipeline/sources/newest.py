"""The newest-first hand-over between a producer thread (a live reader, a socket) and the analysis.

Rule: at most ``size`` frames wait. A frame put into a full buffer pushes the *oldest* waiting frame out,
and that frame is counted as dropped: when analysis falls behind, it skips ahead to the newest frames, so
the lag from capture to verdict stays bounded (about ``size`` frames) instead of growing. Notices (a
reconnect, a connect) are never dropped and keep their place among the frames. The end (clean, or an
error) is delivered after everything that waits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from pipeline.types import Frame

T = TypeVar("T")


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class NewestFirst(Generic[T]):
    """Frames and notices from one producer to one consumer. Thread-safe.

    ``wake`` (optional) is called, outside the lock, whenever ``ready()`` may have turned True: a scheduler
    that steps many jobs on one thread uses it to step this one only when ``get()`` will not block.
    """

    def __init__(self, size: int, wake: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1 frames, got {size}")
        self._size = size
        self._wake = wake
        self._cond = threading.Condition()
        self._items: deque[Frame | T] = deque()
        self._frames = 0
        self._end: _End | None = None
        self.dropped = 0
        self.delivered = 0

    def put(self, item: Frame | T) -> None:
        """Queue a frame (dropping the oldest waiting frame when ``size`` wait) or a notice. Ignored after end."""
        with self._cond:
            if self._end is not None:
                return
            if isinstance(item, Frame):
                if self._frames >= self._size:
                    oldest = next(i for i, x in enumerate(self._items) if isinstance(x, Frame))
                    del self._items[oldest]
                    self._frames -= 1
                    self.dropped += 1
                self._frames += 1
            self._items.append(item)
            self._cond.notify_all()
        if self._wake is not None:
            self._wake()

    def end(self, error: BaseException | None = None) -> None:
        """No more items: ``get`` raises ``error`` (or returns None for a clean end) once the rest are taken.
        The first end wins."""
        with self._cond:
            if self._end is not None:
                return
            self._end = _End(error)
            self._cond.notify_all()
        if self._wake is not None:
            self._wake()

    def abandon(self) -> None:
        """The consumer stops: drop what waits and end cleanly at once (``close()`` of a source)."""
        with self._cond:
            self._items.clear()
            self._frames = 0
            if self._end is None or self._end.error is not None:
                self._end = _End(None)
            self._cond.notify_all()
        if self._wake is not None:
            self._wake()

    def ready(self) -> bool:
        """Whether ``get()`` returns at once (an item waits, or the end has come)."""
        with self._cond:
            return bool(self._items) or self._end is not None

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._end is not None and not self._items

    def get(self, timeout_s: float | None = None) -> Frame | T | None:
        """The next item; None at a clean end; raises the end's error. ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items and self._end is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"nothing arrived within {timeout_s:g} s")
                self._cond.wait(left)
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Frame):
                    self._frames -= 1
                    self.delivered += 1
                return item
            assert self._end is not None
            if self._end.error is not None:
                raise self._end.error
            return None
