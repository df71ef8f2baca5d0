"""Where faces are found, wired once: the detection parameters per kind of media, and the generator
frames -> (frame, boxes) that ``analyze()``, training (``train/data.py``) and the bench all use.

**Small-face recovery (file videos).** The fast pass detects on a copy whose long side is ``max_side_px``
(640): a 1080p frame shrinks 3×, and a 40-60 px face becomes 13-20 px, at the edge of what MTCNN's 12-px
cell can see. So after the fast pass, a frame gets one more detection pass, on the frame at full
resolution (capped at ``Recovery.max_side_px``, the photo side, 2048), with the same ``min_face_px``, when

1. the frame's long side is larger than ``max_side_px`` (the fast pass ran on a downscaled copy), and
2. the fast pass found no face, or fewer faces than *expected*: the number the previous frame ended with
   (a proxy for "a track was lost" that needs no tracker state). A frame that wanted a pass and was
   refused by the budget keeps the previous expectation, so the loss stays pending for the next frame;
   the first frame expects 0.
3. **Budget**: the pass runs only while ``passes so far <= budget × (frames before this one)``: the first
   frame may have one, and over any prefix of n sampled frames at most ``1 + budget·(n−1)`` passes run
   (a clip where the fast pass never finds a face gets them on frames 1, 5, 9, ... at budget 0.25).

Merge: a recovered box with IoU >= 0.5 against a fast-pass box is the same face, and the fast-pass box is
kept; the others are appended after the fast-pass faces (which keep their indices), left to right, with
their own detector probability. When no pass runs, a frame's boxes are the fast pass's, untouched.

Why full resolution, not tiles: on 1080p frames with eight 40-60 px faces (2 cores, ms per frame, median
of 6), the fast pass found 6 of 32 in 48 ms; full resolution 32 in 103 ms; 2×2 tiles overlapping by
200 px found 32 too, in 119 ms (each tile downscaled to 640) or 149 ms (to 960). MTCNN's pyramid starts
where a ``min_face_px`` face is 12 px whatever the input size, so tiles only add overlap and calls; what
the full-size frame adds is sharp crops for the refinement stages.

Photos get no recovery pass (their one pass already runs at up to ``photo_detect_max_side_px``), nor do
live sessions (one frame at a time, where a second pass would add its whole cost to that frame's lag).
A face the fast pass never sees in a frame where it finds the others is not searched for: the rule reacts
to losses and to empty frames only, so a frame the fast pass fully explains costs nothing extra.

**Face gates** (``pipeline/face_gates.py``), when given, run on each detector call's boxes before anything
else: the counts above are of faces that passed, a recovered box is merged only if it passed, and a rejected
detection is reported once: a fast-pass rejection that a passing recovered box overlaps (IoU >= 0.5) is
dropped (the face was found after all), and so is a recovered rejection that overlaps any box already there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pipeline.batching import chunk_frames
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.face_gates import FaceGates, face_gates
from pipeline.sources import Source
from pipeline.types import FaceBox, Frame, MediaInfo, MediaKind, RejectedFace

SAME_FACE_IOU = 0.5  # a recovered box overlapping a fast-pass box this much is that face


@dataclass(frozen=True, slots=True)
class Recovery:
    """The small-face recovery pass: ``budget`` is the fraction of sampled frames that may get one (see the
    module docstring for the rule); ``max_side_px`` the long side it detects at (frames are not upscaled)."""

    budget: float
    max_side_px: int

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0 or self.max_side_px < 1:
            raise ValueError(f"need budget in (0, 1] and max_side_px >= 1, got {self.budget}, {self.max_side_px}")


@dataclass(frozen=True, slots=True)
class DetectParams:
    """``chunk``: frames per MTCNN call; ``min_face_px``: smallest face side; ``max_side_px``: detect on a
    downscaled copy when the frame's long side is larger (boxes are mapped back); ``recover``: the
    small-face recovery pass, or None for none."""

    chunk: int
    min_face_px: int
    max_side_px: int
    recover: Recovery | None = None


def detect_params(info: MediaInfo, settings: Settings) -> DetectParams:
    """Photos go one at a time with MTCNN's small faces and a large detection side (people in a photo are
    often small and seen once); videos go in ``detect_chunk`` frames with larger faces, cheaper per frame,
    and file videos recover small faces (module docstring) unless ``recover_small_faces`` is off."""
    if info.is_image:
        return DetectParams(1, settings.min_face_px, settings.photo_detect_max_side_px)
    recover = None
    side = settings.photo_detect_max_side_px  # a pass no sharper than the fast one would find nothing new
    wanted = settings.recover_small_faces and settings.recover_budget > 0 and side > settings.detect_max_side_px
    if wanted and info.kind is not MediaKind.LIVE:
        recover = Recovery(settings.recover_budget, side)
    return DetectParams(settings.detect_chunk, settings.video_min_face_px, settings.detect_max_side_px, recover)


def merge_recovered(fast: Sequence[FaceBox], recovered: Sequence[FaceBox]) -> list[FaceBox]:
    """``fast`` unchanged, then every recovered box that is not one of them (IoU < SAME_FACE_IOU with each),
    left to right (x1, then y1), numbered on from ``len(fast)``."""
    new = [r for r in recovered if all(_iou(r.xyxy, f.xyxy) < SAME_FACE_IOU for f in fast)]
    new.sort(key=lambda b: (b.xyxy[0], b.xyxy[1]))
    return [*fast, *(dataclasses.replace(b, face_index=len(fast) + k) for k, b in enumerate(new))]


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect_faces(
    frames: Iterable[Frame],
    detector: FaceDetector,
    params: DetectParams,
    on_detect_s: Callable[[float], None] | None = None,
    *,
    gates: FaceGates | None = None,
    on_reject: Callable[[Sequence[RejectedFace]], None] | None = None,
) -> Iterator[tuple[Frame, list[FaceBox]]]:
    """Each frame with its boxes (pixels of the frame), in order; detection runs on chunks of equal-size
    frames, then the recovery pass (one frame per call) where ``params.recover`` says so. ``on_detect_s``
    gets the wall seconds of each detector call. With ``gates``, a frame's boxes are those that pass them
    (renumbered 0..k-1) and ``on_reject`` gets each frame's rejected detections (module docstring)."""

    def timed_detect(group: Sequence[Frame], max_side_px: int) -> list[list[FaceBox]]:
        t0 = time.perf_counter()
        try:
            return detector.detect(group, params.min_face_px, max_side_px)
        finally:
            if on_detect_s is not None:
                on_detect_s(time.perf_counter() - t0)

    def gated(frame: Frame, boxes: list[FaceBox]) -> tuple[list[FaceBox], list[RejectedFace]]:
        return (boxes, []) if gates is None else gates.split(frame.index, frame.time_s, boxes)

    recover = params.recover
    seen = passes = expected = 0
    for group in chunk_frames(frames, params.chunk):
        for frame, found in zip(group, timed_detect(group, params.max_side_px), strict=True):
            boxes, rejected = gated(frame, found)
            if recover is not None:
                frames_before, seen = seen, seen + 1
                wanted = max(frame.image.shape[:2]) > params.max_side_px and (not boxes or len(boxes) < expected)
                if not wanted:
                    expected = len(boxes)
                elif passes <= recover.budget * frames_before + 1e-9:
                    passes += 1
                    (again,) = timed_detect([frame], recover.max_side_px)
                    recovered, rejected_again = gated(frame, again)
                    boxes = merge_recovered(boxes, recovered)
                    rejected = _once(rejected, rejected_again, boxes)
                    expected = len(boxes)
                # else: refused by the budget; the expectation stays, so the next frame may try
            if rejected and on_reject is not None:
                on_reject(rejected)
            yield frame, boxes


def _once(fast: Sequence[RejectedFace], again: Sequence[RejectedFace], kept: Sequence[FaceBox]) -> list[RejectedFace]:
    """A frame's rejections after a recovery pass: each detection once, none that is a kept face."""
    out = [r for r in fast if all(_iou(r.xyxy, b.xyxy) < SAME_FACE_IOU for b in kept)]
    taken = [b.xyxy for b in kept] + [r.xyxy for r in fast]
    return out + [r for r in again if all(_iou(r.xyxy, xyxy) < SAME_FACE_IOU for xyxy in taken)]


def detection_key(settings: Settings) -> dict[str, object]:
    """What decides the faces ``source_faces`` finds in a photo and in a file video under ``settings``
    (detection parameters and face gates, from the functions that apply them) and the detector's own
    probability floor: a cache of found faces is valid only for an equal key."""
    key: dict[str, object] = {"detect_prob_floor": settings.detect_prob_floor}
    for name, is_image in (("photo", True), ("video", False)):
        info = MediaInfo(name, 0, "0" * 64, "", "", 1, 1, None, None, 0, is_image, None, MediaKind.FILE)
        gates = face_gates(info, settings)
        key[name] = {
            "detect": dataclasses.asdict(detect_params(info, settings)),
            "gates": None if gates is None else dataclasses.asdict(gates),
        }
    return key


def source_faces(source: Source, detector: FaceDetector, settings: Settings) -> Iterator[tuple[Frame, list[FaceBox]]]:
    """Every sampled frame of ``source`` with its faces, found as the service finds them (its face gates
    included; rejected detections are left out). Raises what ``source.frames()`` raises (DecodeError after
    the good frames when the input breaks)."""
    return detect_faces(
        source.frames(), detector, detect_params(source.info, settings), gates=face_gates(source.info, settings)
    )
