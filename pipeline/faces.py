"""Where faces are found, wired once: the detection parameters per kind of media, and the generator
frames -> (frame, boxes) that ``analyze()``, training (``train/data.py``) and the bench all use."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pipeline.batching import chunk_frames
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.sources import Source
from pipeline.types import FaceBox, Frame, MediaInfo


@dataclass(frozen=True, slots=True)
class DetectParams:
    """``chunk``: frames per MTCNN call; ``min_face_px``: smallest face side; ``max_side_px``: detect on a
    downscaled copy when the frame's long side is larger (boxes are mapped back)."""

    chunk: int
    min_face_px: int
    max_side_px: int


def detect_params(info: MediaInfo, settings: Settings) -> DetectParams:
    """Photos go one at a time with MTCNN's small faces and a large detection side (people in a photo are
    often small and seen once); videos go in ``detect_chunk`` frames with larger faces, cheaper per frame."""
    if info.is_image:
        return DetectParams(1, settings.min_face_px, settings.photo_detect_max_side_px)
    return DetectParams(settings.detect_chunk, settings.video_min_face_px, settings.detect_max_side_px)


def detect_faces(
    frames: Iterable[Frame],
    detector: FaceDetector,
    params: DetectParams,
    on_detect_s: Callable[[float], None] | None = None,
) -> Iterator[tuple[Frame, list[FaceBox]]]:
    """Each frame with its boxes (pixels of the frame), in order; detection runs on chunks of equal-size
    frames. ``on_detect_s`` gets the wall seconds of each detector call."""
    for group in chunk_frames(frames, params.chunk):
        t0 = time.perf_counter()
        boxes_per_frame = detector.detect(group, params.min_face_px, params.max_side_px)
        if on_detect_s is not None:
            on_detect_s(time.perf_counter() - t0)
        yield from zip(group, boxes_per_frame, strict=True)


def source_faces(source: Source, detector: FaceDetector, settings: Settings) -> Iterator[tuple[Frame, list[FaceBox]]]:
    """Every sampled frame of ``source`` with its faces, found as the service finds them. Raises what
    ``source.frames()`` raises (DecodeError after the good frames when the input breaks)."""
    return detect_faces(source.frames(), detector, detect_params(source.info, settings))
