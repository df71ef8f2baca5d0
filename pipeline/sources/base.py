"""The Source seam: what ``analyze()`` consumes instead of a path.

A Source is opened by its caller (who also closes it, with ``with``), knows its media facts and sampling
policy at open, and yields sampled frames once. Errors found at open raise from the opener, before
anything is analysed; a source that breaks mid-stream raises DecodeError from ``frames()`` after the
good frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, runtime_checkable

from pipeline.live_types import LiveStats, SourceNotice
from pipeline.provenance.records import Provenance
from pipeline.types import Frame, MediaInfo, SamplingPolicy


@runtime_checkable
class Source(Protocol):
    """Sampled frames of one input. Subclass it to inherit the context manager (``__exit__`` closes).

    ``info``: the media facts (a file's size and SHA-256; None where the source has no file).
    ``policy``: the sampling the source applies (the report records it).
    ``planned_frames``: how many frames ``frames()`` will yield when that is known, else None.
    ``provenance``: what the file says about itself (read at open); None where there is no file.
    """

    info: MediaInfo
    policy: SamplingPolicy
    planned_frames: int | None
    provenance: Provenance | None = None

    def frames(self) -> Iterator[Frame]:
        """The sampled frames in increasing ``index`` (H×W×3 uint8 RGB, rotation applied); once only."""
        ...

    def close(self) -> None:
        """Release what the source holds and stop a running ``frames()``; safe to call twice."""
        ...

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@runtime_checkable
class LiveInput(Source, Protocol):
    """A Source that plays while it is analysed (a URL, pushed frames): see pipeline/live_types.py.

    ``events()`` interleaves the sampled frames (newest first: what analysis cannot keep up with is
    dropped and counted) with notices; it blocks for the next item, ends at a clean end or after
    ``close()``, and raises SourceError/SourceTimeout when the source fails. ``ready()`` is True when
    ``next(events())`` will not block, so one thread can step many live jobs without waiting on any.
    ``info`` is known from the first ``SourceConnected`` on.
    """

    name: str

    def events(self) -> Iterator[Frame | SourceNotice]: ...

    def ready(self) -> bool: ...

    def stats(self) -> LiveStats: ...
