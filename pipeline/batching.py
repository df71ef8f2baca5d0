"""The one batcher: groups frames for detection and faces for classification, keeping frame order.

Detection (:func:`chunk_frames`): consecutive frames are grouped into lists of up to ``chunk`` frames that
all have the same image shape, because one MTCNN call takes one stacked array. A shape change or the end
of input closes the current chunk early.

Classification (:func:`score_in_batches`), the flush rules:

1. Faces are buffered across consecutive frames in arrival order. A frame's faces may be split across two
   (or more) flushes; a frame with more faces than ``classify_batch`` always is.
2. Full flush: whenever ``classify_batch`` or more faces are buffered, the oldest ``classify_batch`` are
   scored in one call.
3. Latency flush: when ``max_pending_frames`` frames are waiting (received but not yet emitted, counting
   zero-face frames queued behind an unscored face) and faces are buffered, everything buffered is scored.
4. End flush: at end of input everything buffered is scored.
5. After every flush, every leading frame whose faces are all scored is emitted, in input order. A
   zero-face frame needs no scoring: it comes out as soon as nothing is pending before it.

``score`` is never called with an empty list, and only rules 3 and 4 make calls shorter than
``classify_batch`` (after rule 2 has run, fewer than ``classify_batch`` faces remain, so those are one
call). No face is dropped or scored twice. Input is pulled lazily, one frame at a time.

:func:`score_with_fast_start` (what ``analyze()`` uses) adds one rule in front:

0. Start-up flush: the first frame that has faces is scored on its own the moment it arrives, so the first
   verdict does not wait for ``max_pending_frames`` frames to be decoded and detected. Every later frame
   follows rules 1-5 (as a fresh :func:`score_in_batches`). Measured by ``bench`` (P3, 720p, 3 faces, 1
   frame per second, warm engine, median of 3): the first FrameVerdict came 1.75 s after ``analyze()`` was
   called with rules 1-5 alone (4 frames = 3 s of video decoded and detected, then 12 faces) and 0.23-0.31
   s with rule 0 (1 frame, 3 faces; ~0.5 s in a fresh process); throughput is unchanged (one batch of 3
   instead of 12, once per video).

:class:`SharedBatches` (a Ray actor's jobs, stream/ray_actor.py) lets faces from *concurrent* jobs share one
classify+CAM call. Each job's thread runs its steps inside ``step()`` (the engine's turn: one step at a
time, FIFO, :class:`Turns`) and its ``score`` calls (what rules 0-4 above flush, at most ``classify_batch``
faces each) go to ``SharedBatches.score``, which gives the turn up while it waits:

S1. A call is a *request*; requests wait in arrival order and are never split: each job's faces come back
    from one call, in its own order, so rules 0-5 hold for each job as they are.
S2. The oldest request's thread is the *leader*. It starts the batch as soon as (a) the waiting faces reach
    ``max_faces``, or (b) every thread now inside ``step()`` is waiting here (nobody else can add a face:
    one job alone never waits), or (c) its request has waited ``gather_s``: the latency a job may lose to
    batching, on top of the other jobs' share of the engine.
S3. The leader takes the turn, then the oldest requests whose faces fit in ``max_faces`` (its own always
    goes), scores them in one call and hands each request its results.
S4. A shared call that raises is run again request by request, so an error reaches only the job whose
    faces caused it. No face is dropped or scored twice; ``score`` is never called with no faces.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from pipeline.types import CroppedFrame, FaceBox, FaceScore, Frame, ScoredFrame

T = TypeVar("T")
ScoreFn = Callable[[Sequence[np.ndarray], Sequence[FaceBox]], list[FaceScore]]
"""Scores one batch: crops (each crop_px×crop_px×3 uint8 RGB) and their boxes -> one FaceScore per crop."""


def chunk_frames(frames: Iterable[Frame], chunk: int) -> Iterator[list[Frame]]:
    """Group consecutive frames into lists of 1..``chunk`` frames whose images share one H×W×3 shape.

    Order is kept; a shape change or the end of input flushes the current (shorter) list. Lazy: at most
    ``chunk`` frames are held at a time.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 frames, got {chunk}")
    current: list[Frame] = []
    for frame in frames:
        if current and frame.image.shape != current[0].image.shape:
            yield current
            current = []
        current.append(frame)
        if len(current) == chunk:
            yield current
            current = []
    if current:
        yield current


@dataclass(slots=True)
class _Pending:
    """A received frame that has not been emitted yet; ``scores[i]`` fills in as face i is scored."""

    frame: CroppedFrame
    scores: list[FaceScore | None]
    missing: int


def score_in_batches(
    frames: Iterable[CroppedFrame],
    score: ScoreFn,
    *,
    classify_batch: int,
    max_pending_frames: int,
) -> Iterator[ScoredFrame]:
    """Score the faces of ``frames`` in batches (flush rules in the module docstring), yielding each frame
    as a :class:`ScoredFrame` once all its faces are scored, in input order.

    ``classify_batch``: faces per ``score`` call (>= 1). ``max_pending_frames``: frames allowed to wait
    before a short batch is forced (>= 1; 1 means no face waits for a later frame).
    Raises RuntimeError if ``score`` returns the wrong number of results or results for other faces.
    """
    if classify_batch < 1:
        raise ValueError(f"classify_batch must be >= 1 faces, got {classify_batch}")
    if max_pending_frames < 1:
        raise ValueError(f"max_pending_frames must be >= 1 frames, got {max_pending_frames}")
    pending: deque[_Pending] = deque()
    queue: deque[tuple[_Pending, int]] = deque()  # unscored faces, oldest first: (their frame, face i)

    for frame in frames:
        entry = _Pending(frame, [None] * len(frame.boxes), len(frame.boxes))
        pending.append(entry)
        queue.extend((entry, i) for i in range(len(frame.boxes)))
        while len(queue) >= classify_batch:
            _flush(queue, classify_batch, score)
            yield from _ready(pending)
        if queue and len(pending) >= max_pending_frames:
            _flush(queue, len(queue), score)
        yield from _ready(pending)
    while queue:
        _flush(queue, min(classify_batch, len(queue)), score)
        yield from _ready(pending)
    yield from _ready(pending)


def score_with_fast_start(
    frames: Iterable[CroppedFrame],
    score: ScoreFn,
    *,
    classify_batch: int,
    max_pending_frames: int,
) -> Generator[ScoredFrame, None, None]:
    """:func:`score_in_batches` plus rule 0 (module docstring): the frames up to and including the first one
    with faces are scored and yielded at once, then the rest with rules 1-5. Same arguments and errors."""
    it = iter(frames)
    head: list[CroppedFrame] = []
    for frame in it:
        head.append(frame)
        if frame.boxes:
            break
    # rule 4 (end flush) scores the head's faces in one call; zero-face frames before it pass through
    yield from score_in_batches(head, score, classify_batch=classify_batch, max_pending_frames=max_pending_frames)
    yield from score_in_batches(it, score, classify_batch=classify_batch, max_pending_frames=max_pending_frames)


def _flush(queue: deque[tuple[_Pending, int]], n: int, score: ScoreFn) -> None:
    """Score the oldest ``n`` (>= 1) buffered faces in one call and file each result under its frame."""
    items = [queue.popleft() for _ in range(n)]
    crops = [entry.frame.crops[i] for entry, i in items]
    boxes = [entry.frame.boxes[i] for entry, i in items]
    results = score(crops, boxes)
    if len(results) != len(crops):
        raise RuntimeError(f"score returned {len(results)} results for a batch of {len(crops)} faces")
    for (entry, i), box, result in zip(items, boxes, results, strict=True):
        got = result.box
        # a reordering bug in the scorer would silently give faces each other's verdicts
        if got is not box and (got.frame_index, got.face_index) != (box.frame_index, box.face_index):
            raise RuntimeError(
                f"score returned a result for face {got.face_index} of frame {got.frame_index} "
                f"where face {box.face_index} of frame {box.frame_index} was expected"
            )
        entry.scores[i] = result
        entry.missing -= 1


def _ready(pending: deque[_Pending]) -> Iterator[ScoredFrame]:
    """Pop and yield the leading frames whose faces are all scored."""
    while pending and pending[0].missing == 0:
        entry = pending.popleft()
        scores = tuple(s for s in entry.scores if s is not None)
        yield ScoredFrame(index=entry.frame.index, time_s=entry.frame.time_s, scores=scores)


_END = object()


def prefetch(items: Iterable[T], depth: int) -> Generator[T, None, None]:
    """``items`` in order, pulled by a background thread that runs at most ``depth`` items ahead.

    Lets one stage (decode + detect) work while the caller does another (classify). An exception raised by
    ``items`` is re-raised here after the items before it. Closing this generator stops the thread, closes
    ``items`` *in that thread* (so a decoder it holds is released there) and waits for it: when this
    generator is closed, ``items`` is no longer running.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1 items, got {depth}")
    handoff: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as err:  # handed to the consumer, raised there
            put((False, err))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="dff-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                raise item  # type: ignore[misc]
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


class Turns:
    """A FIFO lock: threads get the engine in the order they asked (``threading.Lock`` is not fair, and a
    thread that re-acquires at once could starve the others)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @property
    def queued(self) -> int:
        """Threads holding the turn or waiting for it."""
        with self._cond:
            return len(self._queue)

    def acquire(self) -> None:
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._queue[0] is not me:
                self._cond.wait()

    def release(self) -> None:
        with self._cond:
            self._queue.popleft()
            self._cond.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(eq=False, slots=True)
class _Request:
    """One job's ``score`` call waiting for a shared batch (``since``: monotonic seconds)."""

    crops: Sequence[np.ndarray]
    boxes: Sequence[FaceBox]
    since: float
    done: bool = False
    results: list[FaceScore] = field(default_factory=list)
    error: Exception | None = None


class SharedBatches:
    """Faces of concurrent jobs scored together (rules S1-S4 in the module docstring).

    ``score``: the engine's classifier (one call at a time: it runs only inside the turn). ``turns``: the
    engine's lock, shared with whatever else steps on it. ``max_faces``: faces per shared call (>= 1);
    ``gather_s``: how long the oldest request waits for others (>= 0 seconds).
    """

    def __init__(
        self,
        score: ScoreFn,
        turns: Turns,
        *,
        max_faces: int,
        gather_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 faces, got {max_faces}")
        if gather_s < 0:
            raise ValueError(f"gather_s must be >= 0 seconds, got {gather_s}")
        self._score = score
        self._turns = turns
        self._max_faces = max_faces
        self._gather_s = gather_s
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._stepping = 0
        self.calls = 0  # shared calls made (for tests and the bench)
        self.faces = 0  # faces scored in them

    @property
    def stepping(self) -> int:
        """Threads inside ``step()`` now (holding the turn, waiting for it, or waiting here)."""
        with self._cond:
            return self._stepping

    @contextmanager
    def step(self) -> Iterator[None]:
        """One step of a job: holds the turn, and counts this thread as one that may still add faces."""
        with self._cond:
            self._stepping += 1
        try:
            with self._turns:
                yield
        finally:
            with self._cond:
                self._stepping -= 1
                self._cond.notify_all()  # a leader may be waiting for this thread (rule S2 b)

    def score(self, crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        """A ``ScoreFn`` for one job's thread, called inside ``step()``: the results of ``crops``, scored in
        a batch shared with other jobs' faces. Returns holding the turn, as it was called."""
        if not crops:
            return []
        request = _Request(crops, boxes, self._clock())
        with self._cond:
            self._waiting.append(request)
            self._cond.notify_all()
        self._turns.release()
        try:
            leader = self._wait(request)
        finally:
            self._turns.acquire()
        if leader:
            with self._cond:
                batch = self._take()
            self._run(batch)
            with self._cond:
                self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.results

    def _wait(self, request: _Request) -> bool:
        """Block until ``request`` is scored (False) or its thread is to lead a batch (True, rule S2)."""
        with self._cond:
            while not request.done:
                # a request another leader has taken (popped, being scored) is no longer in ``_waiting``
                if self._waiting and self._waiting[0] is request:
                    left = request.since + self._gather_s - self._clock()
                    faces = sum(len(r.crops) for r in self._waiting)
                    if faces >= self._max_faces or len(self._waiting) >= self._stepping or left <= 0:
                        return True
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            return False

    def _take(self) -> list[_Request]:
        """Pop the oldest requests whose faces fit in ``max_faces`` (the first always goes; rule S3)."""
        batch = [self._waiting.popleft()]
        faces = len(batch[0].crops)
        while self._waiting and faces + len(self._waiting[0].crops) <= self._max_faces:
            faces += len(self._waiting[0].crops)
            batch.append(self._waiting.popleft())
        return batch

    def _run(self, batch: list[_Request]) -> None:
        """Score ``batch`` in one call (rule S3), or request by request if that call raises (rule S4)."""
        try:
            results = self._call([c for r in batch for c in r.crops], [b for r in batch for b in r.boxes])
        except Exception as err:
            if len(batch) == 1:
                batch[0].error = err
            else:
                for request in batch:
                    self._run([request])
        else:
            start = 0
            for request in batch:
                request.results = results[start : start + len(request.crops)]
                start += len(request.crops)
        for request in batch:
            request.done = True

    def _call(self, crops: list[np.ndarray], boxes: list[FaceBox]) -> list[FaceScore]:
        results = self._score(crops, boxes)
        if len(results) != len(crops):
            raise RuntimeError(f"score returned {len(results)} results for a batch of {len(crops)} faces")
        self.calls += 1
        self.faces += len(crops)
        return results
