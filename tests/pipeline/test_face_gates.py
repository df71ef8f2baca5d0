"""Face gates (pipeline/face_gates.py): geometry and probability per detection, track support per person; the
refused detections in the report; false faces that MTCNN really detects, beside real faces, end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, cast

import cv2
import numpy as np
import pytest

from pipeline.aggregate import build_report, supported_rows
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.engine import Engine
from pipeline.errors import ConfigError
from pipeline.face_gates import MAX_REJECTED, FaceGates, RejectedLog, face_gates, support_frames
from pipeline.faces import DetectParams, Recovery, detect_faces
from pipeline.live_people import LivePeople
from pipeline.live_types import EndReason, LiveOptions, LiveSession, LiveStats
from pipeline.report import report_from_dict, report_to_dict, report_to_json
from pipeline.run import analyze, watch
from pipeline.sources import Source, open_media_for
from pipeline.sources.push import PushSource
from pipeline.types import (
    AnalysisStart,
    FaceBox,
    FaceRow,
    FaceScore,
    Frame,
    FrameRow,
    Label,
    MediaInfo,
    MediaKind,
    ModelInfo,
    PreprocessProfile,
    RejectedFace,
    Report,
    SampleMode,
    SamplingPolicy,
    ScoredFrame,
    StageTimings,
    Strategy,
    TrackObservations,
)
from tests.media import face_scene

# --- geometry on hand-made landmarks ------------------------------------------------------------------------

BOX = (100.0, 100.0, 200.0, 220.0)  # 100 × 120 px
UPRIGHT = np.array([[130, 145], [170, 145], [150, 170], [135, 195], [165, 195]], np.float32)  # eyes, nose, mouth


def rotated(marks: np.ndarray, deg: float) -> np.ndarray:
    """``marks`` turned by ``deg`` (clockwise on screen, y down) about the box centre."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    centre = np.array([150.0, 160.0])
    return ((marks - centre) @ np.array([[c, s], [-s, c]]) + centre).astype(np.float32)


def moved(marks: np.ndarray, **points: tuple[float, float]) -> np.ndarray:
    out = marks.copy()
    for name, xy in points.items():
        out[["left_eye", "right_eye", "nose", "mouth_l", "mouth_r"].index(name)] = xy
    return out


@pytest.mark.parametrize(
    "marks, reason",
    [
        (UPRIGHT, None),
        (rotated(UPRIGHT, 30), None),
        (rotated(UPRIGHT, -30), None),
        (rotated(UPRIGHT, 180), "roll 180° (limit ±60°)"),
        (rotated(UPRIGHT, 75), "roll 75° (limit ±60°)"),
        (moved(UPRIGHT, left_eye=(130, 200), right_eye=(170, 200)), "mouth above eyes (roll 0°)"),  # eyes below
        # below both eyes on screen, but above the eye line of a face rolled by 30°
        (moved(rotated(UPRIGHT, 30), mouth_l=(200, 160)), "mouth above eyes (roll 30°)"),
        (moved(UPRIGHT, nose=(150, 140)), "nose not between eyes and mouth (roll 0°)"),
        (moved(UPRIGHT, nose=(150, 210)), "nose not between eyes and mouth (roll 0°)"),
        (moved(UPRIGHT, left_eye=(148, 145), right_eye=(152, 145)), "eyes 0.04 of the box width apart (0.15-0.8)"),
        (moved(UPRIGHT, left_eye=(105, 145), right_eye=(195, 145)), "eyes 0.90 of the box width apart (0.15-0.8)"),
        (moved(UPRIGHT, mouth_l=(135, 250), mouth_r=(165, 250)), "landmark 0.25 of the box outside it (limit 0.15)"),
        (UPRIGHT + np.float32([0, 40]), None),  # the mouth 15 px (0.125 of 120) below the box: inside the pad
    ],
)
def test_geometry_rules(marks: np.ndarray, reason: str | None) -> None:
    assert FaceGates(prob_floor=0.9).geometry(FaceBox(0, 0, BOX, 0.99, marks)) == reason


def test_the_roll_is_measured_and_a_face_without_landmarks_passes_the_geometry_gate() -> None:
    gates = FaceGates(prob_floor=0.9, max_roll_deg=20)
    assert gates.geometry(FaceBox(0, 0, BOX, 0.99, rotated(UPRIGHT, 30))) == "roll 30° (limit ±20°)"
    assert gates.geometry(FaceBox(0, 0, BOX, 0.99, None)) is None
    assert gates.check(FaceBox(0, 0, BOX, 0.5, None)) == ("probability", "0.500 under the video floor 0.9")


def test_the_probability_floor_and_split_renumber_the_kept_faces() -> None:
    gates = FaceGates(prob_floor=0.95)
    boxes = [FaceBox(4, k, (10.0 + 100 * k, 0.0, 60.0 + 100 * k, 60.0), p) for k, p in enumerate((0.949, 0.95, 1.0))]
    kept, rejected = gates.split(4, 2.0, boxes)
    assert [(b.face_index, b.detector_prob) for b in kept] == [(0, 0.95), (1, 1.0)]
    assert rejected == [RejectedFace(4, 2.0, boxes[0].xyxy, 0.949, "probability", "0.949 under the video floor 0.95")]


def _info(is_image: bool) -> MediaInfo:
    return MediaInfo("x", 1, "ab" * 32, "png", "png", 640, 360, None, None, 0, is_image, 1)


def test_gates_from_settings(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, detect_prob_floor=0.9, video_face_prob_floor=0.97, face_max_roll_deg=40)
    photo, video = face_gates(_info(True), settings), face_gates(_info(False), settings)
    assert photo is not None and video is not None
    assert (photo.prob_floor, photo.floor_name, video.prob_floor, video.floor_name) == (0.9, "photo", 0.97, "video")
    assert video.max_roll_deg == 40 and video.min_eye_frac == 0.15 and video.box_pad_frac == 0.15
    assert face_gates(_info(False), dataclasses.replace(settings, face_gates=False)) is None
    for bad in ({"video_face_prob_floor": 1.5}, {"face_min_eye_frac": 0.9}, {"min_track_frames": 0}):
        with pytest.raises(ConfigError):
            Settings(data_dir=tmp_path, **bad)


@pytest.mark.parametrize(
    "k, n_sampled, is_image, needed",
    [(2, 10, False, 2), (3, 2, False, 2), (2, 1, False, 1), (5, 0, False, 1), (3, 1, True, 1)],
)
def test_support_needs_k_frames_but_never_more_than_were_sampled(k, n_sampled, is_image, needed) -> None:
    assert support_frames(k, n_sampled, is_image) == needed


def test_the_rejected_log_keeps_the_first_ones_and_counts_all() -> None:
    log = RejectedLog()
    log.add(RejectedFace(i, i / 10, (0.0, 0.0, 5.0, 5.0), 0.93, "probability", "low") for i in range(MAX_REJECTED + 50))
    assert len(log.kept) == MAX_REJECTED and log.count == MAX_REJECTED + 50 and log.kept[-1].frame_index == 199


def test_detect_faces_gates_each_pass_and_reports_a_detection_once() -> None:
    """The fast pass finds two detections under the floor, so no face: the recovery pass runs, refuses the one
    at x=100 again and finds the one at x=500 at P 0.99. Each is in the report once, and the found one not."""

    class Stub:
        def __init__(self) -> None:
            self.calls: list[int] = []

        def detect(self, frames: Sequence[Frame], min_face_px: int, max_side_px: int) -> list[list[FaceBox]]:
            self.calls.append(max_side_px)
            full = max_side_px > 640
            f = frames[0]
            return [
                [
                    FaceBox(f.index, 0, (100.0, 100.0, 160.0, 170.0), 0.90),  # refused by both passes
                    FaceBox(f.index, 1, (500.0, 100.0, 560.0, 170.0), 0.99 if full else 0.91),  # sharp: kept
                ]
            ]

    frames = [Frame(0, 0.0, np.zeros((1080, 1920, 3), np.uint8))]
    got: list[RejectedFace] = []
    params = DetectParams(1, 40, 640, Recovery(1.0, 2048))
    stub = Stub()
    ((frame, boxes),) = detect_faces(
        frames, cast(FaceDetector, stub), params, gates=FaceGates(0.95), on_reject=got.extend
    )
    assert stub.calls == [640, 2048], "no face passed the fast pass: the recovery pass ran"
    assert [(b.face_index, b.xyxy[0], b.detector_prob) for b in boxes] == [(0, 500.0, 0.99)]
    assert [(r.xyxy[0], r.detector_prob) for r in got] == [(100.0, 0.90)], "once, and not the face found after all"


# --- track support in the report --------------------------------------------------------------------------


def _start(is_image: bool = False) -> AnalysisStart:
    profile = PreprocessProfile("seed-v1", 160, 0, 160, "bilinear", 1 / 255)
    return AnalysisStart(_info(is_image), 10, SamplingPolicy(), ModelInfo("m", "0" * 64, profile, "cpu", True), 0.5)


def _rows(n: int, lone_at: int | None) -> tuple[list[FrameRow], list[TrackObservations]]:
    """``n`` frames with two real-looking people (P 0.1, 0.2) and, at frame ``lone_at``, a third at P 0.99."""
    rows, tracks = [], {0: [], 1: [], 2: []}
    for i in range(n):
        faces = [(0, 0.1), (1, 0.2)] + ([(2, 0.99)] if i == lone_at else [])
        rows.append(
            FrameRow(
                i, i * 1.0, max(p for _, p in faces), tuple(FaceRow(k, (0, 0, 9, 9), 0.99, p, k) for k, p in faces)
            )
        )
        for k, p in faces:
            tracks[k].append((i, p))
    obs = [
        TrackObservations(k, tuple(i for i, _ in v), tuple(float(i) for i, _ in v), tuple(p for _, p in v))
        for k, v in tracks.items()
        if v
    ]
    return rows, obs


def _report(rows, obs, strategy: Strategy, k: int = 2, is_image: bool = False, **extra: Any) -> Report:
    return build_report(
        _start(is_image),
        strategy,
        rows,
        obs,
        band=0.05,
        min_faces=3,
        timings=StageTimings(),
        version="t",
        min_track_frames=k,
        **extra,
    )


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_one_frame_track_is_kept_but_decides_nothing(strategy: Strategy) -> None:
    rows, obs = _rows(10, lone_at=3)
    report = _report(rows, obs, strategy)
    lone = report.tracks[2]
    assert (lone.supported, lone.label, lone.confident_fake, lone.n_faces) == (False, Label.INCONCLUSIVE, False, 1)
    assert all(t.supported for t in report.tracks[:2])
    assert report.label is Label.REAL and report.score is not None and report.score <= 0.2
    assert report.segments == (), "no frame-level segment from the lone face, and none of its own"
    assert len(report.frames[3].faces) == 3 and report.frames[3].score == 0.99, "the rows keep it, as streamed"
    assert _report(rows, obs, strategy, k=1).tracks[2].supported, "k=1: every track is a person"
    if strategy in (Strategy.MAX_FRAME, Strategy.MEAN):
        assert _report(rows, obs, strategy, k=1).score != report.score, "it would have counted"


def test_support_in_short_videos_photos_and_when_nobody_is_supported() -> None:
    rows, obs = _rows(1, lone_at=0)  # a 1-frame video: 1 frame is all a person can have
    assert all(t.supported for t in _report(rows, obs, Strategy.PER_PERSON, k=3).tracks)
    assert all(t.supported for t in _report(rows, obs, Strategy.PER_PERSON, k=3, is_image=True).tracks)
    lone_rows = [FrameRow(0, 0.0, 0.9, (FaceRow(0, (0, 0, 9, 9), 0.99, 0.9, 0),)), FrameRow(1, 1.0, None, ())]
    report = _report(lone_rows, [TrackObservations(0, (0,), (0.0,), (0.9,))], Strategy.MAX_FRAME)
    assert (report.label, report.score, report.tracks[0].supported) == (Label.INCONCLUSIVE, None, False)
    assert supported_rows(lone_rows, report.tracks)[0].score is None


def test_live_people_mark_short_tracks_too() -> None:
    people = LivePeople(0.5, 0.05, 3, LiveOptions(rate_hz=2.0, gone_s=3.0), min_track_frames=2)
    heat, identity = np.zeros((4, 4), np.float32), np.eye(8, dtype=np.float32)
    for i in range(6):
        faces = [(10.0, 0.1)] + ([(300.0, 0.99)] if i == 2 else [])
        scores = tuple(
            FaceScore(FaceBox(i, k, (x, 10.0, x + 50, 60.0), 0.99), p, heat, identity[k])
            for k, (x, p) in enumerate(faces)
        )
        people.assign(ScoredFrame(i, i * 0.5, scores))
    session = LiveSession(0.0, 3.0, EndReason.ENDED, None, LiveStats(6, 6, 0, 6, 0), 6, 0.1, 0.2)
    report = people.report(_start(), Strategy.MAX_FRAME, session, StageTimings(), "t")
    assert [(t.n_faces, t.supported) for t in report.tracks] == [(6, True), (1, False)]
    assert report.score == pytest.approx(0.1) and report.label is Label.REAL


def test_rejected_and_support_round_trip_and_old_reports_still_load() -> None:
    rows, obs = _rows(4, lone_at=1)
    refused = (RejectedFace(2, 2.0, (1.0, 2.0, 30.0, 40.0), 0.962, "geometry", "landmark 0.32 of the box outside it"),)
    report = _report(rows, obs, Strategy.PER_PERSON, rejected=refused, n_rejected=7)
    back = report_from_dict(json.loads(report_to_json(report)))
    assert back == report and back.n_rejected == 7 and not back.tracks[2].supported
    old = report_to_dict(report)
    del old["rejected"], old["n_rejected"]
    for t in old["tracks"]:
        del t["supported"]
    loaded = report_from_dict(old)
    assert loaded.rejected == () and loaded.n_rejected == 0 and all(t.supported for t in loaded.tracks)


# --- end to end: MTCNN on real and false faces --------------------------------------------------------------


def skin_noise(seed: int, sigma_px: float) -> np.ndarray:
    """768×768×3 uint8 RGB: blurred Gaussian noise in skin tones, where MTCNN finds faces at P 0.9-0.99."""
    n = cv2.GaussianBlur(np.random.default_rng(seed).standard_normal((768, 768)).astype(np.float32), (0, 0), sigma_px)
    n = np.clip(((n - n.min()) / (n.max() - n.min()) - 0.5) * 2.5 + 0.5, 0, 1)
    return np.stack([60 + 180 * n, 40 + 150 * n, 30 + 130 * n], -1).astype(np.uint8)


# A blob cut by the frame's top-right corner (MTCNN: P ≈ 0.96, landmarks 0.32 of the box beyond it) and a
# face-shaped blob (P ≈ 0.97 in the scene below, landmarks of an upright face: only track support stops it).
CORNER_BLOB = skin_noise(2, 6)[0:160, 608:768]
FACE_BLOB = skin_noise(17, 6)[140:340, 320:520]


def scene(t: int, *, corner: bool = True, blob: bool = False) -> np.ndarray:
    """640×360: two real face tiles drifting right 4 px a frame, the corner blob, the face blob at x 420."""
    img = face_scene(640, 360, [(20 + 4 * t, 60, 150), (200 + 4 * t, 90, 150)])
    if corner:
        img[0:160, 480:640] = CORNER_BLOB
    if blob:
        img[80:280, 420:620] = FACE_BLOB
    return img


class Frames(Source):
    """In-memory frames (a video with no file: ``MediaKind.LIVE``, no recovery pass)."""

    def __init__(self, images: list[np.ndarray]) -> None:
        h, w = images[0].shape[:2]
        self.info = MediaInfo("mem", None, None, "mem", "raw", w, h, None, None, 0, False, None, MediaKind.LIVE)
        self.policy, self.planned_frames, self._images = (
            SamplingPolicy(SampleMode.ALL, max_frames=None),
            len(images),
            images,
        )

    def frames(self) -> Iterator[Frame]:
        for i, image in enumerate(self._images):
            yield Frame(i, 0.5 * i, image)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu", classify_batch=8)


@pytest.fixture(scope="module")
def engine(settings):
    with Engine.open(settings, allow_untrained=True) as eng:
        yield eng


def fake_blob_scorer(engine: Engine) -> Engine:
    """``engine`` scoring every face at x >= 400 (the blobs) 0.99 fake and the real faces 0.1."""

    def score(crops, boxes):
        return [
            dataclasses.replace(s, fake_prob=0.99 if s.box.xyxy[0] >= 400 else 0.1) for s in engine.score(crops, boxes)
        ]

    return dataclasses.replace(engine, scorer=score)


def _analysed(source: Source, engine: Engine, settings: Settings, **kw) -> Report:
    return [e for e in analyze(source, engine, settings, **kw) if isinstance(e, Report)][-1]


def test_a_photo_with_a_false_face_at_its_corner(engine, settings, tmp_path) -> None:
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene(0), cv2.COLOR_RGB2BGR))
    with open_media_for(path, settings) as source:
        report = _analysed(source, fake_blob_scorer(engine), settings)
    (refused,) = report.rejected
    assert refused.gate == "geometry" and refused.reason.startswith("landmark 0.3") and refused.xyxy[2] == 640.0
    assert refused.detector_prob >= settings.detect_prob_floor, "MTCNN took it for a face"
    assert report.n_rejected == 1 and len(report.tracks) == 2 and all(t.supported for t in report.tracks)
    assert report.label is Label.REAL and report.score == pytest.approx(0.1)


def test_a_video_with_false_faces(engine, settings) -> None:
    """The corner blob in every frame is refused every time; the face blob, seen in 1 of 6 frames, is a track
    that is not a person: with it scored 0.99, the video is still REAL by every strategy."""
    images = [scene(t, blob=t == 3) for t in range(6)]
    for strategy in (Strategy.PER_PERSON, Strategy.MAX_FRAME):
        report = _analysed(Frames(images), fake_blob_scorer(engine), settings, strategy=strategy)
        assert [r.frame_index for r in report.rejected] == list(range(6)), "the corner blob, in every frame"
        assert {r.gate for r in report.rejected} == {"geometry"}
        real = [t for t in report.tracks if t.supported]
        assert [t.n_faces for t in real] == [6, 6]
        (blob,) = [t for t in report.tracks if not t.supported]
        assert blob.frame_indices == (3,) and blob.fake_probs == (0.99,) and blob.label is Label.INCONCLUSIVE
        assert report.label is Label.REAL and report.score == pytest.approx(0.1), strategy
        assert report.segments == ()
    # the same clip with track support off: the blob face makes the video fake under max_frame
    loose = dataclasses.replace(settings, min_track_frames=1)
    assert _analysed(Frames(images), fake_blob_scorer(engine), loose, strategy=Strategy.MAX_FRAME).label is Label.FAKE


def test_the_video_probability_floor_refuses_the_face_blob(engine, settings) -> None:
    strict = dataclasses.replace(settings, video_face_prob_floor=0.99)  # the blob scores ~0.97, real faces > 0.999
    report = _analysed(Frames([scene(t, corner=False, blob=True) for t in range(3)]), engine, strict)
    assert [(r.frame_index, r.gate) for r in report.rejected] == [
        (0, "probability"),
        (1, "probability"),
        (2, "probability"),
    ]
    assert all(r.reason.endswith("under the video floor 0.99") for r in report.rejected)
    assert [t.n_faces for t in report.tracks] == [3, 3]
    off = dataclasses.replace(strict, face_gates=False)
    report = _analysed(Frames([scene(t, blob=True) for t in range(3)]), engine, off)
    assert report.rejected == () and len(report.tracks) == 4, "no gates: both blobs are people"


def test_a_live_session_gates_its_frames_too(engine, settings) -> None:
    options = LiveOptions(rate_hz=2.0, queue_frames=16)
    source = PushSource("webcam", options)
    for t in range(4):
        source.push_image(scene(t, blob=t == 2), 0.5 * t)
    source.finish()
    report = list(watch(source, fake_blob_scorer(engine), settings, options))[-1]
    assert isinstance(report, Report) and report.session is not None
    assert [(r.frame_index, r.gate) for r in report.rejected] == [(i, "geometry") for i in range(4)]
    assert sorted((t.n_faces, t.supported) for t in report.tracks) == [(1, False), (4, True), (4, True)]
    assert report.label is Label.REAL and report.score == pytest.approx(0.1)
