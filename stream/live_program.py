"""A live job's program: ``watch()`` on a URL or on pushed frames, as wire-ready events, one per step.

It is the live twin of ``analysis_events`` (stream/programs.py) and runs on the backend's worker thread,
with two more methods the worker uses (stream/worker.py): ``ready()`` — the next step will not wait on the
source (one analysed frame can produce two events, so what is pending counts too) — and ``stop()`` —
end the session now with its report (the client's ``stop``, or its last watcher leaving). Per analysed
frame the client gets ``frame`` (scores, overlays if asked) then ``live`` (lag, every person now,
counters); reconnects and connects come as ``notice``; the session's report (``Report.session``) as
``Finished``. A source that fails before it ever connects ends the job with ``Failed`` and its code.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.errors import DffError
from pipeline.live_types import (
    LiveOptions,
    LiveStats,
    LiveUpdate,
    PersonGone,
    PersonNow,
    SourceConnected,
    SourceReconnecting,
)
from pipeline.run import watch
from pipeline.sources.base import LiveInput
from pipeline.sources.live import open_live
from pipeline.types import AnalysisStart, Report
from stream import protocol as p
from stream.backend import BackendEvent, Failed, Finished, JobSpec

if TYPE_CHECKING:
    from pipeline.engine import Engine


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """Where a live job reads from: ``url`` (checked, for FFmpeg) or pushed frames (``url`` None)."""

    url: str | None
    name: str  # for people: the URL without credentials, or the pushing client's name
    options: LiveOptions


def counters(stats: LiveStats) -> p.LiveCounters:
    return p.LiveCounters(stats.decoded, stats.sampled, stats.dropped, stats.delivered, stats.reconnects)


def person(now: PersonNow) -> p.Person:
    return p.Person(
        now.track_id, now.first_s, now.last_s, now.n_faces, now.window_faces, now.score, now.label.value,
        now.confident_fake,
    )  # fmt: skip


class LiveProgram:
    """The iterator of one live job's events (see the module docstring). Thread rules: ``__next__``,
    ``ready`` and ``close`` run on the worker thread; ``stop`` on any thread, and it never blocks."""

    def __init__(
        self,
        spec: JobSpec,
        engine: Engine,
        settings: Settings,
        wake: Callable[[], None],
        *,
        accepted: Callable[[AnalysisStart], p.Accepted],
        frame: Callable[[int, LiveUpdate], p.FrameResult],
    ) -> None:
        request = spec.request
        live: LiveRequest = request.live
        self.job_id = spec.job_id
        self._source: LiveInput = spec.feed if live.url is None else open_live(live.url, live.options, wake=wake)
        self._stopping = threading.Event()
        self._pending: deque[BackendEvent] = deque()
        self._accepted = accepted
        self._frame = frame
        self._seq = 0
        self._wake = wake
        self._events = watch(
            self._source,
            engine,
            settings,
            live.options,
            strategy=request.strategy,
            threshold=request.threshold,
            stopping=self._stopping.is_set,
        )
        self._done = False

    def __iter__(self) -> LiveProgram:
        return self

    def ready(self) -> bool:
        return bool(self._pending) or self._done or self._stopping.is_set() or self._source.ready()

    def stop(self) -> None:
        """End the session: the source is closed (in a thread of its own: a URL's reader may take up to its
        read timeout to let go), so the next step yields the report."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        threading.Thread(target=self._source.close, name=f"live-stop {self.job_id}", daemon=True).start()
        self._wake()

    def __next__(self) -> BackendEvent:
        while not self._pending:
            if self._done:
                raise StopIteration
            try:
                event = next(self._events)
            except StopIteration:
                self._done = True
                raise
            except DffError as err:  # the source failed before it connected, or the model failed
                self._done = True
                return Failed(err.code, str(err))
            self._pending.extend(self._wire(event))
        return self._pending.popleft()

    def _wire(self, event: object) -> list[BackendEvent]:
        job_id = self.job_id
        if isinstance(event, AnalysisStart):
            return [self._accepted(event), p.Progress(job_id, "analyzing", 0, None)]
        if isinstance(event, LiveUpdate):
            seq, self._seq = self._seq, self._seq + 1
            people = tuple(person(x) for x in event.people)
            status = p.LiveStatus(job_id, seq, event.lag_s, people, counters(event.stats))
            return [self._frame(seq, event), status]
        if isinstance(event, SourceConnected):
            info = event.info
            message = f"{info.name}: {info.codec} {info.width}×{info.height}"
            return [p.Notice(job_id, "connected", message, attempt=event.attempt)]
        if isinstance(event, SourceReconnecting):
            return [p.Notice(job_id, "reconnecting", event.reason, event.attempt, event.limit, event.delay_s)]
        if isinstance(event, PersonGone):
            return []  # the next ``live`` no longer lists them; the report keeps their whole life
        if isinstance(event, Report):
            self._done = True
            return [Finished(event)]
        raise TypeError(f"watch() yielded {type(event).__name__}")

    def close(self) -> None:
        """Cancelled (or finished): stop the analysis and let go of the source (without waiting on it)."""
        self._done = True
        self._events.close()
        if not self._stopping.is_set():
            self._stopping.set()
            threading.Thread(target=self._source.close, name=f"live-close {self.job_id}", daemon=True).start()


def live_program(
    spec: JobSpec, engine: Engine, settings: Settings, wake: Callable[[], None], **wire: Any
) -> Iterator[BackendEvent]:
    """The live job's program (``wire``: LiveProgram's ``accepted`` and ``frame``), or a one-event
    ``Failed`` when its URL cannot even be opened."""
    try:
        return LiveProgram(spec, engine, settings, wake, **wire)
    except DffError as err:
        return iter([Failed(err.code, str(err))])
