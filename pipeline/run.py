"""``analyze()`` (a file) and ``watch()`` (a live source): the one place the stages are wired together.

Source ─frames─▶ Frame ─chunk+detect─▶ FaceBox* ─crop─▶ CroppedFrame ─batch+classify+CAM─▶ ScoredFrame
       ─track─▶ FrameVerdict (yielded at once) ─ ... at end ─▶ aggregate.build_report ─▶ Report (yielded last)

LiveInput ─events─▶ Frame (newest first) ─detect─▶ FaceBox* ─crop─▶ classify+CAM ─LivePeople─▶ LiveUpdate
       (one frame at a time: no batching across frames, each verdict as soon as its frame is scored)
       ─ ... source ends / stops / fails ─▶ LivePeople.report ─▶ Report with .session (yielded last)
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline import __version__
from pipeline.aggregate import build_report
from pipeline.batching import prefetch, score_with_fast_start
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DecodeError, MediaError, SourceError
from pipeline.face_gates import RejectedLog, face_gates
from pipeline.faces import detect_faces, detect_params
from pipeline.live_people import LivePeople
from pipeline.live_types import (
    EndReason,
    LiveOptions,
    LiveSession,
    LiveUpdate,
    PersonGone,
    SourceConnected,
    SourceNotice,
)
from pipeline.sources import Source
from pipeline.sources.base import LiveInput
from pipeline.track import Tracker
from pipeline.types import (
    AnalysisStart,
    CroppedFrame,
    FaceBox,
    FaceScore,
    Frame,
    FrameRow,
    FrameVerdict,
    Report,
    ScoredFrame,
    StageTimings,
    Strategy,
)

Event = AnalysisStart | FrameVerdict | Report
PREFETCH_FRAMES = 8  # cropped frames decode+detect may run ahead of classification (crops only: ~80 KB/face)


def _overlap_stages(engine: Engine) -> bool:
    """Whether decode+detect run in a second thread (``prefetch``), overlapped with classification.

    Yes on an accelerator: the CPU decodes and detects while the device classifies. Not on CPU, where both
    stages already use every core through torch's intra-op threads: on the 2-core machine the overlap gave
    +5% frames/s but delayed the first verdict from 0.46 to 0.80 s (median of 3, 720p, 3 faces), and the
    verdicts were identical.
    """
    return engine.classifier.device.type != "cpu"


@dataclass
class _Clock:
    """Wall seconds per stage, accumulated while the generators run (private to this module)."""

    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "classify": 0.0})
    stop_reason: str | None = None

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def timed(self, stage: str, items: Iterable[Frame]) -> Iterator[Frame]:
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.add(stage, time.perf_counter() - t0)
                return
            except DecodeError as err:
                # The input broke mid-stream: end the stream here so everything decoded so far is
                # still detected, scored and reported.
                self.add(stage, time.perf_counter() - t0)
                self.stop_reason = str(err)
                return
            self.add(stage, time.perf_counter() - t0)
            yield item

    def timings(self, started: float) -> StageTimings:
        s = self.seconds
        return StageTimings(s["decode"], s["detect"], s["classify"], time.perf_counter() - started)


def _detect_and_crop(
    source: Source, engine: Engine, settings: Settings, clock: _Clock, rejected: RejectedLog
) -> Generator[CroppedFrame, None, None]:
    """Detect (parameters per kind of media), gate (``rejected`` gets the refused detections), crop, and
    drop the full frames; crops count as detection."""
    frames = clock.timed("decode", source.frames())
    params = detect_params(source.info, settings)
    gates = face_gates(source.info, settings)
    detected = detect_faces(
        frames, engine.detector, params, lambda s: clock.add("detect", s), gates=gates, on_reject=rejected.add
    )
    for frame, boxes in detected:
        t0 = time.perf_counter()
        crops = tuple(engine.crop(frame.image, boxes))
        clock.add("detect", time.perf_counter() - t0)
        yield CroppedFrame(frame.index, frame.time_s, tuple(boxes), crops)


def analyze(
    source: Source,
    engine: Engine,
    settings: Settings,
    *,
    strategy: Strategy | None = None,
    threshold: float | None = None,
) -> Iterator[Event]:
    """Yield ``AnalysisStart``, then each ``FrameVerdict`` as soon as its faces are scored, then the ``Report``.

    ``source`` is the caller's (opened with ``pipeline.sources.open_media_for``, closed by the caller's
    ``with``), so media errors at open (missing, empty, unsupported, too large) raise before this is
    called. A decode error mid-stream ends the analysis early: the report keeps every frame decoded so
    far and says why in ``Report.incomplete``.
    """
    strategy = strategy or settings.strategy
    threshold, threshold_source = settings.operating_threshold(engine.info, threshold)
    clock = _Clock()
    started = time.perf_counter()
    start = AnalysisStart(
        source.info,
        source.planned_frames,
        source.policy,
        engine.info,
        threshold,
        threshold_source,
        inconclusive_band=settings.inconclusive_band,
        detectors=engine.detector_infos,
        provenance=source.provenance,
    )
    yield start

    def score(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        t0 = time.perf_counter()
        try:
            return engine.score(crops, boxes)
        finally:
            clock.add("classify", time.perf_counter() - t0)

    rejected = RejectedLog()
    cropped: Generator[CroppedFrame, None, None] = _detect_and_crop(source, engine, settings, clock, rejected)
    if _overlap_stages(engine):
        cropped = prefetch(cropped, PREFETCH_FRAMES)
    scored = score_with_fast_start(
        cropped, score, classify_batch=settings.classify_batch, max_pending_frames=settings.max_pending_frames
    )
    tracker = Tracker()
    rows: list[FrameRow] = []
    try:
        for scored_frame in scored:
            verdict = tracker.assign(scored_frame)
            rows.append(FrameRow.of(verdict))
            yield verdict
    finally:
        # stop decode+detect (and the prefetch thread, if any) before the caller closes the source
        scored.close()
        cropped.close()
    report = build_report(
        start,
        strategy,
        rows,
        tracker.tracks(),
        band=settings.inconclusive_band,
        min_faces=settings.min_faces,
        timings=clock.timings(started),
        version=__version__,
        incomplete=clock.stop_reason,
        min_track_frames=settings.min_track_frames if settings.face_gates else 1,
        rejected=rejected.kept,
        n_rejected=rejected.count,
    )
    yield engine.describe(report)


LiveEvent = AnalysisStart | LiveUpdate | SourceNotice | PersonGone | Report
LAG_SAMPLES = 4096  # the session's lag percentiles are over its last this many frames (bounded memory)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def watch(
    source: LiveInput,
    engine: Engine,
    settings: Settings,
    options: LiveOptions,
    *,
    strategy: Strategy | None = None,
    threshold: float | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[LiveEvent]:
    """A live session: ``AnalysisStart`` once the source connects, then per analysed frame a ``LiveUpdate``
    (its verdict, lag and every person now), the source's notices (reconnects) and ``PersonGone`` as they
    happen, and the session's ``Report`` last (``Report.session``; ``frames`` empty: stream the updates'
    rows where they should be kept).

    One frame at a time, newest first (the source drops what this cannot keep up with). Ends when the
    source ends: cleanly (``ENDED``), after ``source.close()`` with ``stopping()`` True (``STOPPED``), or
    when it fails mid-session (``FAILED``, the reason in ``session.end_message``: the report keeps what was
    analysed). A source that fails before it ever connects raises (SourceError, SourceTimeout, ...).
    """
    events = source.events()
    first = next(events, None)
    if first is None:
        raise SourceError(f"{source.name}: the source ended before it sent anything")
    if not isinstance(first, SourceConnected):
        raise TypeError(f"a live source must connect before its first frame, got {type(first).__name__}")
    strategy = strategy or settings.strategy
    threshold, threshold_source = settings.operating_threshold(engine.info, threshold)
    start = AnalysisStart(
        first.info,
        None,
        source.policy,
        engine.info,
        threshold,
        threshold_source,
        settings.inconclusive_band,
        engine.detector_infos,
    )
    started_s, started = time.time(), time.perf_counter()
    yield start
    yield first
    support = settings.min_track_frames if settings.face_gates else 1
    people = LivePeople(threshold, settings.inconclusive_band, settings.min_faces, options, min_track_frames=support)
    params = detect_params(first.info, settings)
    gates, rejected = face_gates(first.info, settings), RejectedLog()
    clock = _Clock()
    lags: deque[float] = deque(maxlen=LAG_SAMPLES)
    analysed = 0
    end, end_message = EndReason.ENDED, None
    try:
        while True:
            t0 = time.perf_counter()
            item = next(events, None)
            clock.add("decode", time.perf_counter() - t0)
            if item is None:
                break
            if not isinstance(item, Frame):
                yield item
                continue
            t0 = time.perf_counter()
            (boxes,) = engine.detector.detect([item], params.min_face_px, params.max_side_px)
            if gates is not None:
                boxes, refused = gates.split(item.index, item.time_s, boxes)
                rejected.add(refused)
            crops = engine.crop(item.image, boxes)
            t1 = time.perf_counter()
            scores = engine.score(crops, boxes) if crops else []
            clock.add("detect", t1 - t0)
            clock.add("classify", time.perf_counter() - t1)
            verdict, gone = people.assign(ScoredFrame(item.index, item.time_s, tuple(scores)))
            captured_s = item.captured_s if item.captured_s is not None else time.time()
            lag_s = max(0.0, time.time() - captured_s)
            lags.append(lag_s)
            analysed += 1
            yield LiveUpdate(verdict, captured_s, lag_s, people.now(), source.stats())
            yield from gone
    except (SourceError, MediaError) as err:
        end, end_message = EndReason.FAILED, str(err)
    if end is EndReason.ENDED and stopping():
        end = EndReason.STOPPED
    session = LiveSession(
        started_s=started_s,
        stopped_s=time.time(),
        end=end,
        end_message=end_message,
        stats=source.stats(),
        frames_analysed=analysed,
        lag_p50_s=_percentile(lags, 50),
        lag_p95_s=_percentile(lags, 95),
    )
    report = people.report(start, strategy, session, clock.timings(started), __version__)
    yield engine.describe(dataclasses.replace(report, rejected=rejected.kept, n_rejected=rejected.count))
