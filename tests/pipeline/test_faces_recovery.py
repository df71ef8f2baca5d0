"""Small-face recovery (pipeline/faces.py): a 1080p clip with 40-60 px faces that the 640-wide pass misses
is found with recovery, in full-frame pixels; frames the fast pass explains run no second pass; the budget
holds; recovery off gives exactly the fast pass's boxes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.errors import ConfigError
from pipeline.face_gates import face_gates
from pipeline.faces import DetectParams, Recovery, detect_faces, detect_params, merge_recovered, source_faces
from pipeline.sources import open_media_for
from pipeline.types import FaceBox, Frame, MediaInfo, MediaKind, SampleMode, SamplingPolicy
from tests.media import encode_video, face_scene

ALL = SamplingPolicy(SampleMode.ALL, max_frames=None)
SIZES_PX = (40, 44, 48, 52, 56, 60)  # face tiles painted on the 1080p frames (the bench paints the same)


def small_face_spots(t: int) -> list[tuple[int, int, int]]:
    """(x, y, size_px) of the six small faces in frame ``t``: two rows of three, drifting right 3 px a frame."""
    return [(260 + 600 * (i % 3) + 3 * t, 300 + 400 * (i // 3) + 40 * (i % 3), s) for i, s in enumerate(SIZES_PX)]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(torch.device("cpu"))


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recovery") / "small_1080p.mp4"
    return encode_video(path, (face_scene(1920, 1080, small_face_spots(t)) for t in range(4)), fps=4)


class Counting:
    """A detector that records (frames per call, max_side_px) of every call and delegates to ``inner``."""

    def __init__(self, inner: Callable[[Sequence[Frame], int, int], list[list[FaceBox]]]) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []

    def detect(self, frames: Sequence[Frame], min_face_px: int, max_side_px: int) -> list[list[FaceBox]]:
        self.calls.append((len(frames), max_side_px))
        return self.inner(frames, min_face_px, max_side_px)


def facts(boxes: Sequence[FaceBox]) -> list[tuple[object, ...]]:
    """Everything a FaceBox holds, comparable (its landmarks are an array)."""
    marks = [None if b.landmarks is None else b.landmarks.tobytes() for b in boxes]
    return [(b.frame_index, b.face_index, b.xyxy, b.detector_prob, m) for b, m in zip(boxes, marks, strict=True)]


def _video_params(recover: Recovery | None) -> DetectParams:
    return DetectParams(chunk=1, min_face_px=40, max_side_px=640, recover=recover)


def _inside(box: FaceBox, spot: tuple[int, int, int], slack_px: float = 4.0) -> bool:
    x, y, s = spot
    x1, y1, x2, y2 = box.xyxy
    return x - slack_px <= x1 < x2 <= x + s + slack_px and y - slack_px <= y1 < y2 <= y + s + slack_px


def test_the_fast_pass_misses_the_small_faces_and_recovery_finds_them_in_frame_pixels(detector, small_clip, tmp_path):
    on = Settings(data_dir=tmp_path, device="cpu", recover_budget=1.0)
    off = dataclasses.replace(on, recover_small_faces=False)
    with open_media_for(small_clip, off, ALL) as source:
        fast = list(source_faces(source, detector, off))
    with open_media_for(small_clip, on, ALL) as source:
        found = list(source_faces(source, detector, on))
    assert len(fast) == len(found) == 4
    for (frame, fast_boxes), (_, boxes) in zip(fast, found, strict=True):
        assert frame.image.shape == (1080, 1920, 3)
        assert len(fast_boxes) <= 2  # of 6: the 640-wide copy is too coarse for them
        assert len(boxes) == 6
        assert facts(boxes[: len(fast_boxes)]) == facts(fast_boxes)  # fast-pass faces first, unchanged
        assert [b.face_index for b in boxes] == list(range(6))
        for spot in small_face_spots(frame.index):
            assert sum(_inside(b, spot) for b in boxes) == 1, (frame.index, spot, [b.xyxy for b in boxes])


def test_recovery_off_gives_exactly_the_fast_pass(detector, small_clip, tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu", recover_small_faces=False)
    with open_media_for(small_clip, settings, ALL) as source:
        params = detect_params(source.info, settings)
        gates = face_gates(source.info, settings)
        found = list(source_faces(source, detector, settings))
    assert params.recover is None and gates is not None
    for frame, boxes in found:
        # the fast pass's faces that pass the face gates (a 40-px face, 13 px in the 640 copy, scores P 0.92)
        fast, _ = gates.split(frame.index, frame.time_s, detector.detect([frame], 40, 640)[0])
        assert facts(boxes) == facts(fast)


def test_a_frame_the_fast_pass_explains_runs_no_second_pass(detector):
    counting = Counting(detector.detect)
    frames = [
        Frame(t, t / 4, face_scene(1920, 1080, [(300 + 5 * t, 300, 220), (1200, 400 + 5 * t, 240)])) for t in range(3)
    ]
    found = list(detect_faces(frames, cast(FaceDetector, counting), _video_params(Recovery(1.0, 2048))))
    assert counting.calls == [(1, 640)] * 3
    assert [len(boxes) for _, boxes in found] == [2, 2, 2]
    assert [facts(boxes) for _, boxes in found] == [facts(detector.detect([f], 40, 640)[0]) for f in frames]


def test_a_lost_face_is_recovered_and_the_fast_pass_face_kept(detector):
    big, small = (300, 300, 220), (1300, 600, 50)
    frames = [
        Frame(0, 0.0, face_scene(1920, 1080, [big, (1200, 300, 220)])),
        Frame(1, 0.25, face_scene(1920, 1080, [big, small])),
    ]
    counting = Counting(detector.detect)
    (_, first), (_, second) = detect_faces(frames, cast(FaceDetector, counting), _video_params(Recovery(1.0, 2048)))
    assert counting.calls == [(1, 640), (1, 640), (1, 2048)]  # frame 1 found 1 face, frame 0 ended with 2
    (fast,) = detector.detect([frames[1]], 40, 640)
    assert len(first) == 2 and len(fast) == 1 and len(second) == 2
    assert facts(second[:1]) == facts(fast)  # the full-resolution copy of it was merged away
    assert second[1].face_index == 1 and _inside(second[1], small)


# --- the rule and the budget, with a stub detector (no MTCNN) -------------------------------------------------


def _box(frame: Frame, k: int, x: float) -> FaceBox:
    return FaceBox(frame.index, k, (x, 100.0, x + 40.0, 140.0), 0.99)


def stub(fast_counts: Callable[[int], int], recovered_counts: Callable[[int], int]) -> Counting:
    """Fast passes find ``fast_counts(frame.index)`` faces, recovery passes ``recovered_counts(...)`` (at the
    same places, so the first ones are the fast ones: x = 100, 300, 500, ...)."""

    def detect(frames: Sequence[Frame], min_face_px: int, max_side_px: int) -> list[list[FaceBox]]:
        count = fast_counts if max_side_px == 640 else recovered_counts
        return [[_box(f, k, 100.0 + 200 * k) for k in range(count(f.index))] for f in frames]

    return Counting(detect)


FRAME_1080P = np.zeros((1080, 1920, 3), np.uint8)


def _frames(n: int, image: np.ndarray = FRAME_1080P) -> list[Frame]:
    return [Frame(i, i / 4, image) for i in range(n)]


def _passes(counting: Counting) -> list[int]:
    return [k for k, (_, side) in enumerate(c for c in counting.calls) if side != 640]


@pytest.mark.parametrize(
    "budget, n, expected",
    [(0.25, 40, 10), (0.1, 40, 4), (0.5, 9, 5), (1.0, 12, 12), (0.3, 11, 4)],
)
def test_the_budget_caps_the_passes_on_a_clip_of_misses(budget, n, expected):
    counting = stub(lambda i: 0, lambda i: 0)
    found = list(detect_faces(_frames(n), cast(FaceDetector, counting), _video_params(Recovery(budget, 2048))))
    assert [f.index for f, _ in found] == list(range(n))
    recovered_frames = [counting.calls[: k + 1].count((1, 640)) - 1 for k in _passes(counting)]
    assert len(recovered_frames) == expected
    for passes, frame in enumerate(recovered_frames, start=1):  # every prefix: passes <= 1 + budget·(n-1)
        assert passes <= 1 + budget * frame + 1e-9
    assert recovered_frames[0] == 0


def test_a_refused_loss_stays_pending_until_the_budget_allows_a_pass():
    counting = stub(lambda i: 0 if i == 0 else 1, lambda i: 2)  # frame 0 recovers 2, the others show 1
    found = list(detect_faces(_frames(8), cast(FaceDetector, counting), _video_params(Recovery(0.25, 2048))))
    assert [len(boxes) for _, boxes in found] == [2, 1, 1, 1, 2, 1, 1, 1]  # passes on frames 0 and 4
    counting = stub(lambda i: 2 if i == 0 else 1, lambda i: 1)  # a face left: one pass confirms it, then none
    found = list(detect_faces(_frames(8), cast(FaceDetector, counting), _video_params(Recovery(1.0, 2048))))
    assert len(_passes(counting)) == 1 and [len(b) for _, b in found] == [2] + [1] * 7


def test_frames_no_larger_than_the_fast_side_and_chunks():
    counting = stub(lambda i: 0, lambda i: 3)
    small = np.zeros((360, 640, 3), np.uint8)
    found = list(detect_faces(_frames(5, small), cast(FaceDetector, counting), _video_params(Recovery(1.0, 2048))))
    assert counting.calls == [(1, 640)] * 5 and all(b == [] for _, b in found)
    counting = stub(lambda i: 0, lambda i: 3)
    params = dataclasses.replace(_video_params(Recovery(1.0, 2048)), chunk=4)
    found = list(detect_faces(_frames(6), cast(FaceDetector, counting), params))
    assert counting.calls == [(4, 640), (1, 2048), (1, 2048), (1, 2048), (1, 2048), (2, 640), (1, 2048), (1, 2048)]
    assert [f.index for f, _ in found] == list(range(6)) and all(len(b) == 3 for _, b in found)


def test_detect_seconds_count_both_passes():
    seconds: list[float] = []
    counting = stub(lambda i: 0, lambda i: 1)
    list(detect_faces(_frames(3), cast(FaceDetector, counting), _video_params(Recovery(1.0, 2048)), seconds.append))
    assert len(seconds) == len(counting.calls) == 6


def test_merge_keeps_fast_faces_and_numbers_new_ones_left_to_right():
    frame = Frame(7, 0.0, FRAME_1080P)
    fast = [_box(frame, 0, 500.0), _box(frame, 1, 900.0)]
    recovered = [
        FaceBox(7, 0, (1500.0, 10.0, 1530.0, 40.0), 0.95),
        FaceBox(7, 1, (502.0, 101.0, 542.0, 141.0), 0.999),  # fast face 0 again (IoU ~0.9)
        FaceBox(7, 2, (100.0, 10.0, 130.0, 40.0), 0.97),
        FaceBox(7, 3, (920.0, 100.0, 960.0, 140.0), 0.98),  # IoU 1/3 with fast face 1: another face
    ]
    merged = merge_recovered(fast, recovered)
    assert merged[:2] == fast
    assert [(b.face_index, b.xyxy[0], b.detector_prob) for b in merged[2:]] == [
        (2, 100.0, 0.97),
        (3, 920.0, 0.98),
        (4, 1500.0, 0.95),
    ]
    assert merge_recovered(fast, []) == fast and merge_recovered([], recovered[:1])[0].face_index == 0


_INFO = dict(
    name="x",
    container="mp4",
    codec="h264",
    width=1920,
    height=1080,
    fps=25.0,
    duration_s=4.0,
    frame_count=100,
    rotation_deg=0,
)


@pytest.mark.parametrize(
    "kind, is_image, overrides, expected",
    [
        (MediaKind.FILE, False, {}, Recovery(0.25, 2048)),
        (MediaKind.FILE, False, {"recover_budget": 0.1, "photo_detect_max_side_px": 1600}, Recovery(0.1, 1600)),
        (MediaKind.FILE, False, {"recover_small_faces": False}, None),
        (MediaKind.FILE, False, {"recover_budget": 0.0}, None),
        (MediaKind.FILE, False, {"detect_max_side_px": 2048}, None),  # the fast pass is already that sharp
        (MediaKind.FILE, True, {}, None),  # photos: one pass at up to photo_detect_max_side_px
        (MediaKind.LIVE, False, {}, None),  # live: a second pass would add to that frame's lag
    ],
)
def test_who_gets_a_recovery_pass(tmp_path, kind, is_image, overrides, expected):
    file_facts = (
        {"size_bytes": 1, "sha256": "ab" * 32} if kind is MediaKind.FILE else {"size_bytes": None, "sha256": None}
    )
    info = MediaInfo(**_INFO, **file_facts, kind=kind, is_image=is_image)  # type: ignore[arg-type]
    assert detect_params(info, Settings(data_dir=tmp_path, **overrides)).recover == expected


def test_budget_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="recover_budget"):
        Settings(data_dir=tmp_path, recover_budget=1.5)
    assert Settings.from_env({"DFF_RECOVER_SMALL_FACES": "off", "DFF_RECOVER_BUDGET": "0.5"}).recover_budget == 0.5
    with pytest.raises(ValueError, match="budget"):
        Recovery(0.0, 2048)
