"""analyze(): the wired pipeline on media the tests make, with random weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.run as run_module
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DecodeError, MediaNotFound, UnsupportedMedia
from pipeline.models import save_checkpoint
from pipeline.report import report_to_dict
from pipeline.run import analyze
from pipeline.types import AnalysisStart, FrameVerdict, Label, Report, SampleMode
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
    return list(analyze(path, engine, settings, **kw))


class _WrappedReader:
    """Stands in for the sampler's MediaReader, passing its frames through ``through(frames)``."""

    def __init__(self, reader, through):
        self._reader = reader
        self._through = through
        self.info = reader.info
        self.planned_frames = reader.planned_frames

    def frames(self):
        return self._through(self._reader.frames())

    def __enter__(self):
        self._reader.__enter__()
        return self

    def __exit__(self, *exc):
        return self._reader.__exit__(*exc)


def _wrap_sampler(monkeypatch, through) -> None:
    real_open = run_module.open_media
    monkeypatch.setattr(run_module, "open_media", lambda *a, **k: _WrappedReader(real_open(*a, **k), through))


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


def test_frames_stream_before_decoding_ends(clip, engine, settings, monkeypatch):
    """The first verdict must come out while the sampler still has frames to give."""
    decoded: list[int] = []

    def record(frames):
        for frame in frames:
            decoded.append(frame.index)
            yield frame

    _wrap_sampler(monkeypatch, record)
    seen_at_first_verdict = None
    for event in analyze(clip, engine, settings):
        if isinstance(event, FrameVerdict) and seen_at_first_verdict is None:
            seen_at_first_verdict = len(decoded)
    assert seen_at_first_verdict is not None
    assert seen_at_first_verdict < len(decoded) == 10


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


def test_decode_error_mid_stream_keeps_frames_already_decoded(clip, engine, settings, monkeypatch):
    def breaks(frames):
        for n, frame in enumerate(frames):
            if n == 4:
                raise DecodeError("corrupt packet at 0.8 s", frames_decoded=4, last_time_s=0.6)
            yield frame

    _wrap_sampler(monkeypatch, breaks)
    report = _events(clip, engine, settings)[-1]
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
def test_bad_media_raises_before_anything_is_yielded(tmp_path, engine, settings, make, error):
    gen = analyze(make(tmp_path), engine, settings)
    with pytest.raises(error):
        next(gen)


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
