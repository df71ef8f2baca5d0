"""Calibration: temperature + threshold fitting, and re-scoring a report under a temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.classify import FaceClassifier
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.engine import Engine
from pipeline.models import load_model
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.train.calibrate import apply_temperature, fit_calibration, rescore
from pipeline.train.metrics import sigmoid
from pipeline.types import Report, Strategy
from tests.media import moving_faces_clip
from tests.weights import calibrated_model


def test_fit_calibration_reaches_the_target_fpr_on_its_data():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    x = np.r_[rng.normal(-1, 1, 300), rng.normal(1, 1, 300)]
    # the true log-odds of N(±1, 1) classes are 2x: a model saying 4x is over-confident by T = 2
    cal = fit_calibration(y, sigmoid(4 * x), target_fpr=0.05)
    assert cal.temperature == pytest.approx(2, rel=0.2)
    assert cal.achieved_fpr <= 0.05 and cal.achieved_fpr > 0.03
    assert 0 < cal.threshold < 1 and 0 < cal.tpr < 1
    assert (cal.n_real, cal.n_fake) == (300, 300)


def test_apply_temperature():
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p)
    np.testing.assert_allclose(apply_temperature(p, 2.0), sigmoid(np.log(p / (1 - p)) / 2))
    assert apply_temperature([0.5], 3.0)[0] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def video_report(tmp_path_factory) -> Report:
    clip = moving_faces_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=2.0, fps=10, n_faces=2)
    model = load_model(None, torch.device("cpu"), allow_untrained=True)
    model.module.load_state_dict(calibrated_model().state_dict())  # scores that differ between faces
    settings = Settings(device="cpu", every_s=0.3, min_faces=2)
    detector = FaceDetector(torch.device("cpu"), min_face_px=20)
    with Engine(model=model, detector=detector, classifier=FaceClassifier(model)) as engine:
        with open_media_for(clip, settings) as source:
            *_, report = analyze(source, engine, settings)
    assert isinstance(report, Report) and report.n_faces >= 4
    return report


def test_rescore_without_temperature_reproduces_every_strategy(video_report):
    scores = rescore(video_report, 1.0, video_report.threshold, min_faces=2)
    assert set(scores) == set(Strategy)
    assert scores[video_report.strategy] == pytest.approx(video_report.score)
    probs = [f.fake_prob for r in video_report.frames for f in r.faces]
    assert scores[Strategy.MEAN] == pytest.approx(np.mean(probs))
    assert scores[Strategy.MAX_FRAME] == pytest.approx(max(probs))


def test_rescore_with_temperature_moves_scores_towards_one_half(video_report):
    plain = rescore(video_report, 1.0, 0.5, min_faces=2)
    soft = rescore(video_report, 5.0, 0.5, min_faces=2)
    probs = np.array([f.fake_prob for r in video_report.frames for f in r.faces])
    assert soft[Strategy.MEAN] == pytest.approx(apply_temperature(probs, 5.0).mean())
    for s in (Strategy.MEAN, Strategy.MAX_FRAME):
        assert abs(soft[s] - 0.5) <= abs(plain[s] - 0.5) + 1e-12
