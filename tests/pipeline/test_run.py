"""analyze(): the wired pipeline on media the tests make, with random weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DecodeError, MediaNotFound, MediaTooLarge, UnsupportedMedia
from pipeline.models import save_checkpoint
from pipeline.report import report_from_dict, report_to_dict
from pipeline.run import analyze
from pipeline.sources import Source, open_media_for
from pipeline.types import (
    AnalysisStart,
    Frame,
    FrameVerdict,
    Label,
    MediaInfo,
    MediaKind,
    Report,
    SampleMode,
    SamplingPolicy,
)
from tests.media import astronaut, encode_video, face_scene, moving_faces_clip, shared_media
from tests.weights import calibrated_model, seed_recipe


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        device="cpu",
        sample_mode=SampleMode.EVERY_S,
        every_s=0.2,
        classify_batch=8,
        max_pending_frames=2,
    )


@pytest.fixture(scope="module")
def engine(settings):
    with Engine.open(settings, allow_untrained=True) as eng:
        yield eng


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return moving_faces_clip(tmp_path_factory.mktemp("media") / "three.mp4", seconds=2.0, fps=10, n_faces=3)


def _events(path, engine, settings, **kw):
    with open_media_for(path, settings) as source:
        return list(analyze(source, engine, settings, **kw))


class FramesSource(Source):
    """A Source with no file behind it (``MediaKind.LIVE``): frames the test made, in memory.

    ``pulled`` lists the indices handed out so far; ``break_at`` raises DecodeError instead of that frame.
    """

    def __init__(self, frames: list[Frame], *, break_at: int | None = None) -> None:
        h, w = frames[0].image.shape[:2]
        self.info = MediaInfo(
            "memory", None, None, "memory", "rawvideo", w, h, None, None, 0, False, None, MediaKind.LIVE
        )
        self.policy = SamplingPolicy(SampleMode.ALL, max_frames=None)
        self.planned_frames = len(frames)
        self.pulled: list[int] = []
        self.closed = False
        self._frames = frames
        self._break_at = break_at

    def frames(self):
        for n, frame in enumerate(self._frames):
            if n == self._break_at:
                raise DecodeError(f"corrupt packet at {frame.time_s} s", frames_decoded=n, last_time_s=frame.time_s)
            self.pulled.append(frame.index)
            yield frame

    def close(self) -> None:
        self.closed = True


def _drifting_faces(n: int = 10, n_faces: int = 3) -> list[Frame]:
    """What ``clip`` samples at every_s=0.2 (every other frame of 10 fps), made directly in memory."""
    spots = [(20 + 200 * i, 60 + 30 * (i % 2), 150) for i in range(n_faces)]
    return [Frame(2 * t, 0.2 * t, face_scene(640, 360, [(x + 4 * t, y, s) for x, y, s in spots])) for t in range(n)]


def test_video_event_order_faces_and_tracks(clip, engine, settings):
    events = _events(clip, engine, settings)
    assert isinstance(events[0], AnalysisStart)
    assert isinstance(events[-1], Report)
    verdicts = [e for e in events[1:-1]]
    assert all(isinstance(v, FrameVerdict) for v in verdicts)
    assert events[0].planned_frames == len(verdicts) == 10
    indices = [v.index for v in verdicts]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert [len(v.faces) for v in verdicts] == [3] * 10
    report = events[-1]
    assert report.n_faces == 30
    assert len(report.tracks) == 3
    assert sorted(t.n_faces for t in report.tracks) == [10, 10, 10]
    assert report.model.untrained
    for v in verdicts:
        assert v.score == pytest.approx(max(f.fake_prob for f in v.faces))
        for face in v.faces:
            assert face.heatmap.dtype == np.float32 and 0.0 <= face.heatmap.min() <= face.heatmap.max() <= 1.0
    # The same person keeps the same track across frames: ids ordered left to right as placed.
    for v in verdicts:
        by_x = sorted(v.faces, key=lambda f: f.box.xyxy[0])
        assert [f.track_id for f in by_x] == [0, 1, 2]


def test_report_is_deterministic(clip, engine, settings):
    def stable(report: Report) -> dict:
        d = report_to_dict(report)
        d.pop("timings")
        return d

    first = _events(clip, engine, settings)[-1]
    second = _events(clip, engine, settings)[-1]
    assert stable(first) == stable(second)


def test_frames_stream_before_decoding_ends(engine, settings):
    """The first verdict must come out while the source still has frames to give."""
    source = FramesSource(_drifting_faces())
    seen_at_first_verdict = None
    for event in analyze(source, engine, settings):
        if isinstance(event, FrameVerdict) and seen_at_first_verdict is None:
            seen_at_first_verdict = len(source.pulled)
    assert seen_at_first_verdict is not None
    assert seen_at_first_verdict < len(source.pulled) == 10


def test_a_source_with_no_file_is_analysed_and_its_report_round_trips(engine, settings):
    """analyze() needs no path: in-memory frames give the same faces and persons as the encoded clip, the
    report says the media is live (no size, no SHA-256), and the caller, not analyze(), closes the source."""
    source = FramesSource(_drifting_faces())
    with source:
        events = list(analyze(source, engine, settings))
        assert not source.closed
    assert source.closed
    start, report = events[0], events[-1]
    assert start.media is report.media and start.planned_frames == 10 and start.policy == source.policy
    assert (report.media.kind, report.media.size_bytes, report.media.sha256) == (MediaKind.LIVE, None, None)
    assert [len(r.faces) for r in report.frames] == [3] * 10 and len(report.tracks) == 3
    assert [r.time_s for r in report.frames] == pytest.approx([0.2 * t for t in range(10)])
    assert report_from_dict(report_to_dict(report)) == report
    assert report_to_dict(report)["media"]["kind"] == "live"


def test_the_caller_opens_with_its_settings_caps_and_a_file_report_says_file(clip, engine, settings):
    report = _events(clip, engine, settings)[-1]
    assert report.media.kind is MediaKind.FILE and report_to_dict(report)["media"]["kind"] == "file"
    assert report.media.size_bytes == clip.stat().st_size
    with pytest.raises(MediaTooLarge, match="the limit is 1 s"):
        open_media_for(clip, dataclasses.replace(settings, max_duration_s=1.0))


def test_zero_face_frames_stay_in_order_with_score_none(tmp_path, engine, settings):
    blank = np.full((240, 320, 3), 90, np.uint8)
    face = face_scene(320, 240, [(80, 40, 150)])
    frames = [face, face, blank, blank, face, face, face, blank, face, face]
    path = encode_video(tmp_path / "gaps.mp4", frames, fps=5)
    events = _events(path, engine, dataclasses.replace(settings, every_s=0.2))
    verdicts = [e for e in events if isinstance(e, FrameVerdict)]
    assert [v.score is None for v in verdicts] == [f is blank for f in frames]
    assert [len(v.faces) for v in verdicts] == [0 if f is blank else 1 for f in frames]
    # One person, re-joined after the gaps.
    assert {f.track_id for v in verdicts for f in v.faces} == {0}


def test_photo_is_one_frame(tmp_path, engine, settings):
    path = tmp_path / "astro.png"
    Image.fromarray(astronaut()).save(path)
    events = _events(path, engine, settings)
    start, verdict, report = events
    assert start.media.is_image and start.planned_frames == 1
    assert len(verdict.faces) == 1
    assert report.label in (Label.REAL, Label.FAKE, Label.INCONCLUSIVE)
    assert report.score == pytest.approx(verdict.score)


def test_no_face_photo_is_no_face_not_half(tmp_path, engine, settings):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(path)
    report = _events(path, engine, settings)[-1]
    assert report.label is Label.NO_FACE and report.score is None


def test_decode_error_mid_stream_keeps_frames_already_decoded(engine, settings):
    report = list(analyze(FramesSource(_drifting_faces(), break_at=4), engine, settings))[-1]
    assert len(report.frames) == 4
    assert report.n_faces == 12
    assert report.incomplete and "corrupt packet" in report.incomplete


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda d: d / "missing.mp4", MediaNotFound),
        (lambda d: (d / "text.mp4").write_text("hello, not a video") and d / "text.mp4", UnsupportedMedia),
    ],
)
def test_bad_media_raises_at_open_before_anything_is_analysed(tmp_path, engine, settings, make, error):
    with pytest.raises(error):
        open_media_for(make(tmp_path), settings)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.parametrize("name", ["astronaut", "obama.jpg", "two_people.jpg"])
def test_seed_parity_end_to_end_with_default_settings(tmp_path, name, precision):
    """A photo through analyze() gives the seed recipe's P(fake): to 1e-5 in fp32 (otherwise default
    Settings); the default precision (bf16 trunk on a CPU with native bf16) stays within 5e-3."""
    if name == "astronaut":
        image = astronaut()
    else:
        image = np.asarray(Image.open(shared_media(name)).convert("RGB"))
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    checkpoint = save_checkpoint(calibrated_model(), tmp_path / "calibrated.pth")
    settings = Settings(data_dir=tmp_path, checkpoint=checkpoint, device="cpu", precision=precision)
    with Engine.open(settings) as engine:
        report = _events(path, engine, settings)[-1]
        expected = seed_recipe(engine.model.module, image)
        tolerance = 1e-5 if engine.info.precision == "fp32" else 5e-3
    # The seed's MTCNN (select_largest=False) keeps the most probable face.
    best = max(report.frames[0].faces, key=lambda f: f.detector_prob)
    assert abs(best.fake_prob - expected) < tolerance, (engine.info.precision, best.fake_prob, expected)


def test_the_operating_threshold_comes_from_request_settings_model_card_or_default(tmp_path, engine, settings):
    """analyze() applies the model card's calibrated threshold unless the request or DFF_THRESHOLD set one,
    and says which (AnalysisStart, Report, report JSON)."""
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    plain = engine.model
    calibrated = dataclasses.replace(plain, info=dataclasses.replace(plain.info, calibrated_threshold=0.73))
    cases = [
        (calibrated, settings, None, 0.73, "model card"),
        (calibrated, dataclasses.replace(settings, threshold=0.6), None, 0.6, "settings"),
        (calibrated, settings, 0.4, 0.4, "request"),
        (plain, settings, None, 0.5, "default"),
    ]
    try:
        for model, s, requested, expected, source in cases:
            engine.model = model
            events = _events(photo, engine, s, threshold=requested)
            start, report = events[0], events[-1]
            assert (start.threshold, start.threshold_source) == (expected, source)
            assert (report.threshold, report.threshold_source) == (expected, source)
            assert report_to_dict(report)["threshold_source"] == source
    finally:
        engine.model = plain
