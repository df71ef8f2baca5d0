"""The MTCNN adapter: boxes where faces were pasted, downscaled detection, chunks, and exact crops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import extract_face
from PIL import Image

from pipeline.config import Settings
from pipeline.detect import FaceDetector, crop_faces, pyramid_has_a_scale
from pipeline.engine import Engine
from pipeline.models import SEED_PROFILE
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import FaceBox, Frame, FrameVerdict, Label, PreprocessProfile, Report
from tests.media import ASTRONAUT_FACE_XYXY, astronaut, encode_video, face_scene, face_tile, shared_media

CPU = torch.device("cpu")
TILE_SRC = (140, 20, 310, 190)  # the astronaut crop that tests.media.face_tile resizes into a tile
SPOTS = [(20, 40, 150), (230, 60, 120), (420, 30, 180)]  # (x, y, size) in a 640×360 scene


def pasted_face(i: int, x: int, y: int, size: int) -> np.ndarray:
    """Where face i of face_scene lies in the scene: the astronaut face box mapped into its tile."""
    side = TILE_SRC[2] - TILE_SRC[0]
    fx1, fy1, fx2, fy2 = (ASTRONAUT_FACE_XYXY[k] - TILE_SRC[k % 2] for k in range(4))
    if i % 2:  # face_scene flips every other tile
        fx1, fx2 = side - fx2, side - fx1
    return np.array([fx1, fy1, fx2, fy2]) * size / side + np.array([x, y, x, y])


def iou(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(CPU)


def test_finds_every_pasted_face_left_to_right(detector: FaceDetector) -> None:
    (faces,) = detector.detect([Frame(7, 0.7, face_scene(640, 360, SPOTS))])
    assert len(faces) == len(SPOTS)
    for k, (face, spot) in enumerate(zip(faces, SPOTS, strict=True)):
        assert (face.frame_index, face.face_index) == (7, k)
        assert iou(face.xyxy, pasted_face(k, *spot)) > 0.75, (face.xyxy, pasted_face(k, *spot))
        assert isinstance(face.detector_prob, float) and 0.9 <= face.detector_prob <= 1.0
        assert all(isinstance(v, float) for v in face.xyxy)
        assert face.landmarks is not None and face.landmarks.dtype == np.float32
        x1, y1, x2, y2 = face.xyxy
        assert ((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])).all()


def test_large_frame_is_detected_on_a_downscaled_copy_in_original_pixels(detector: FaceDetector) -> None:
    big = [(3 * x, 3 * y, 3 * s) for x, y, s in SPOTS]
    frame = Frame(0, 0.0, face_scene(1920, 1080, big))
    (small,) = detector.detect([frame])
    (full,) = FaceDetector(CPU, max_side_px=4096).detect([frame])
    assert len(small) == len(full) == len(SPOTS)
    for k, (a, b) in enumerate(zip(small, full, strict=True)):
        assert iou(a.xyxy, b.xyxy) > 0.85
        assert iou(a.xyxy, pasted_face(k, *big[k])) > 0.75
        assert a.landmarks is not None and b.landmarks is not None
        assert np.abs(a.landmarks - b.landmarks).max() < 0.05 * b.width_px


def test_min_face_size_stays_in_original_pixels_when_downscaled() -> None:
    # 60-px faces in a 1920-wide frame are 20 px in the 640-px copy: found only if min_face_px=40
    # was scaled down with the image (unscaled, MTCNN's pyramid would start at 40 px and miss them).
    spots = [(300, 300, 75), (1200, 500, 75)]
    frame = Frame(0, 0.0, face_scene(1920, 1080, spots))
    (found,) = FaceDetector(CPU, min_face_px=40).detect([frame])
    assert len(found) == 2
    for k, face in enumerate(found):
        assert iou(face.xyxy, pasted_face(k, *spots[k])) > 0.6


def test_empty_frames_give_empty_lists(detector: FaceDetector) -> None:
    grey = np.full((360, 640, 3), 128, np.uint8)
    assert detector.detect([Frame(0, 0.0, grey)]) == [[]]
    assert detector.detect([Frame(0, 0.0, grey), Frame(1, 0.1, grey)]) == [[], []]
    assert detector.detect([]) == []


@pytest.mark.parametrize("counts", [[1, 0, 2], [2, 2], [3, 1, 0, 3]])
def test_chunk_gives_per_frame_lists(detector: FaceDetector, counts: list[int]) -> None:
    # Equal face counts per frame make MTCNN return a 3-D object array rather than a list of arrays.
    frames = [Frame(10 + i, i / 10, face_scene(640, 360, SPOTS[:n])) for i, n in enumerate(counts)]
    result = detector.detect(frames)
    assert [len(faces) for faces in result] == counts
    for frame, faces in zip(frames, result, strict=True):
        assert [f.frame_index for f in faces] == [frame.index] * len(faces)
        assert [f.face_index for f in faces] == list(range(len(faces)))


def test_chunk_of_mixed_sizes_is_refused(detector: FaceDetector) -> None:
    frames = [Frame(0, 0.0, np.zeros((360, 640, 3), np.uint8)), Frame(1, 0.1, np.zeros((480, 640, 3), np.uint8))]
    with pytest.raises(ValueError, match="one size"):
        detector.detect(frames)


def test_boxes_are_clipped_to_the_frame(detector: FaceDetector) -> None:
    image = face_scene(640, 360, [(530, 230, 160), (0, 0, 100)])
    (faces,) = detector.detect([Frame(0, 0.0, image)])
    assert faces
    for face in faces:
        x1, y1, x2, y2 = face.xyxy
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360


def _profile(crop_px: int, margin_px: int) -> PreprocessProfile:
    return PreprocessProfile("t", crop_px, margin_px, 256, "bilinear", 1 / 255)


@pytest.mark.parametrize(("crop_px", "margin_px"), [(160, 0), (160, 32), (224, 14)])
def test_crop_faces_equals_facenet_extract_face(crop_px: int, margin_px: int) -> None:
    image = astronaut()
    pil = Image.fromarray(image)
    boxes = [
        FaceBox(0, 0, (181.05140686035156, 62.156131744384766, 267.747314453125, 172.05015563964844), 0.99),
        FaceBox(0, 1, (0.0, 3.7, 90.2, 120.9), 0.99),  # at the edge: the margin gets clamped
        FaceBox(0, 2, (430.5, 400.25, 512.0, 512.0), 0.99),
    ]
    crops = crop_faces(image, boxes, _profile(crop_px, margin_px))
    assert len(crops) == len(boxes)
    for crop, box in zip(crops, boxes, strict=True):
        expected = extract_face(pil, np.array(box.xyxy), crop_px, margin_px)  # 3×S×S float 0..255
        assert crop.shape == (crop_px, crop_px, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, expected.permute(1, 2, 0).numpy().astype(np.uint8))


def test_crop_faces_of_no_boxes() -> None:
    assert crop_faces(astronaut(), [], SEED_PROFILE) == []


def test_shared_multiface_photo_finds_all_six(detector: FaceDetector) -> None:
    path = shared_media("multiface.jpg")
    image = np.asarray(Image.open(path).convert("RGB"))
    (faces,) = detector.detect([Frame(0, 0.0, image)])
    assert len(faces) == 6
    xs = [f.xyxy[0] for f in faces]
    assert xs == sorted(xs)


@pytest.mark.parametrize("min_face_px", [20, 40, 57])
def test_pyramid_rule_matches_facenet(min_face_px: int) -> None:
    # the rule's edge is exactly where facenet-pytorch's own detect starts to work
    mtcnn = MTCNN(keep_all=True, min_face_size=min_face_px, device=CPU)
    side = next(s for s in range(1, 200) if pyramid_has_a_scale(s, s, min_face_px))
    assert side == min_face_px
    with pytest.raises((RuntimeError, ValueError), match="non-empty list"):
        mtcnn.detect(np.zeros((side - 1, side - 1, 3), np.uint8))
    assert mtcnn.detect(np.zeros((side, side, 3), np.uint8))[0] is None  # runs, finds nothing


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (2, 2), (19, 19), (38, 38), (39, 39), (1, 4000), (4000, 1), (40, 5000)]
)
def test_frames_too_small_for_the_pyramid_have_no_face(detector: FaceDetector, height: int, width: int) -> None:
    frames = [Frame(i, i / 10, np.full((height, width, 3), 128, np.uint8)) for i in range(2)]
    assert detector.detect(frames) == [[], []]  # 40×5000: 5×640 once downscaled to the 640-px side


def test_a_frame_at_the_threshold_still_runs_mtcnn(detector: FaceDetector) -> None:
    assert detector.min_face_px == 40
    (faces,) = detector.detect([Frame(0, 0.0, np.ascontiguousarray(face_tile(40)))])
    assert len(faces) == 1  # a 40×40 frame that is all face: found
    assert detector.detect([Frame(0, 0.0, np.ascontiguousarray(face_tile(39)))]) == [[]]
    assert detector.detect([Frame(0, 0.0, np.full((40, 40, 3), 128, np.uint8))]) == [[]]


@pytest.fixture(scope="module")
def engine_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Settings]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu")
    with Engine.open(settings, allow_untrained=True) as engine:
        yield engine, settings


@pytest.mark.parametrize("size", [1, 2, 19])  # photos are searched for faces from 20 px (Settings.min_face_px)
def test_tiny_photo_reports_no_face(tmp_path: Path, engine_settings: tuple[Engine, Settings], size: int) -> None:
    path = tmp_path / f"tiny{size}.png"
    Image.fromarray(face_tile(size)).save(path)
    engine, settings = engine_settings
    with open_media_for(path, settings) as source:
        report = list(analyze(source, engine, settings))[-1]
    assert isinstance(report, Report) and report.label is Label.NO_FACE and report.score is None


@pytest.mark.parametrize("size", [16, 38])  # videos from 40 px (Settings.video_min_face_px)
def test_tiny_video_reports_no_face(tmp_path: Path, engine_settings: tuple[Engine, Settings], size: int) -> None:
    clip = encode_video(tmp_path / "tiny.mp4", [np.ascontiguousarray(face_tile(size))] * 10, fps=10)
    engine, settings = engine_settings
    with open_media_for(clip, settings) as source:
        events = list(analyze(source, engine, settings))
    report = events[-1]
    assert isinstance(report, Report) and report.label is Label.NO_FACE
    assert report.media.width == size and any(isinstance(e, FrameVerdict) and e.score is None for e in events)
