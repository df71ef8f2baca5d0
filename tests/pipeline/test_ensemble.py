"""Several detectors at once (pipeline/ensemble.py): every face scored by each, with its own crop, Grad-CAM
and P(fake); the fused P(fake) is their mean; reports (JSON, CSV) name every detector and round-trip;
and the same server streams each detector's score and overlay."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.ensemble import FUSION_MEAN
from pipeline.errors import ConfigError
from pipeline.models import load_model
from pipeline.report import CSV_COLUMNS, report_from_dict, report_to_csv, report_to_dict
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import Report, SampleMode
from tests.media import face_scene, moving_faces_clip
from tests.mesonet_h5 import two_detectors


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, Path]:
    return two_detectors(tmp_path_factory.mktemp("members"), seed=1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, members) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        device="cpu",
        sample_mode=SampleMode.EVERY_S,
        every_s=0.5,
        ensemble=members,
    )


@pytest.fixture(scope="module")
def engine(settings):
    with Engine.open(settings) as eng:
        yield eng


def run(path: Path, engine: Engine, settings: Settings) -> Report:
    with open_media_for(path, settings) as source:
        *_, report = analyze(source, engine, settings)
    assert isinstance(report, Report)
    return report


def test_each_face_has_every_detectors_score_and_the_fused_one_is_their_mean(engine, settings, members, tmp_path):
    photo = tmp_path / "two.png"
    Image.fromarray(face_scene(640, 480, [(120, 200, 150), (420, 200, 150)])).save(photo)
    report = run(photo, engine, settings)
    assert [d.name for d in report.detectors] == ["seed.pth", "Meso4_random.h5"]
    assert [d.detector for d in report.detectors] == ["seed-irv1", "mesonet4"]
    assert report.fusion == FUSION_MEAN and report.model.detector == "ensemble"
    assert report.model.name == "ensemble(seed.pth + Meso4_random.h5)"
    faces = [f for frame in report.frames for f in frame.faces]
    assert len(faces) == 2
    alone = [load_model(path, torch.device("cpu")) for path in members]
    for face in faces:
        assert len(face.detector_probs) == 2
        assert face.fake_prob == pytest.approx(float(np.mean(face.detector_probs)), abs=1e-12)
    # each member's score is what that detector alone gives the face (its own crop and profile)
    with Engine.from_model(alone[0], settings) as seed_only, Engine.from_model(alone[1], settings) as meso_only:
        for i, single in enumerate((seed_only, meso_only)):
            solo = run(photo, single, settings)
            solo_faces = [f for frame in solo.frames for f in frame.faces]
            assert [f.detector_probs[i] for f in faces] == pytest.approx([f.fake_prob for f in solo_faces], abs=1e-5)


def test_an_ensemble_report_round_trips_and_its_csv_has_a_column_per_detector(engine, settings, tmp_path):
    clip = moving_faces_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10, n_faces=2)
    report = run(clip, engine, settings)
    again = report_from_dict(report_to_dict(report))
    assert again.detectors == report.detectors and again.fusion == report.fusion
    assert again.frames == report.frames
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert rows and set(rows[0]) >= {"fake_prob", "fake_prob:seed.pth", "fake_prob:Meso4_random.h5"}
    for row in rows:
        members = [float(row["fake_prob:seed.pth"]), float(row["fake_prob:Meso4_random.h5"])]
        assert float(row["fake_prob"]) == pytest.approx(np.mean(members), abs=2e-6)


def test_a_single_detector_report_has_no_ensemble_fields(tmp_path, members):
    settings = Settings(data_dir=tmp_path, device="cpu", checkpoint=members[1])
    photo = tmp_path / "one.png"
    Image.fromarray(face_scene(320, 320, [(160, 160, 150)])).save(photo)
    with Engine.open(settings) as single:
        report = run(photo, single, settings)
    assert report.detectors == () and report.fusion is None and report.model.detector == "mesonet4"
    assert all(f.detector_probs == () for frame in report.frames for f in frame.faces)
    assert list(csv.reader(io.StringIO(report_to_csv(report))))[0] == list(CSV_COLUMNS)  # no detector columns


def test_an_ensemble_of_one_is_refused():
    with pytest.raises(ConfigError, match="2 or more"):
        Settings(ensemble=(Path("a.pth"),))
    assert Settings.from_env({"DFF_ENSEMBLE": "a.pth, b.h5"}).ensemble == (Path("a.pth"), Path("b.h5"))
    with pytest.raises(ConfigError, match="local backend only"):
        Settings(ensemble=(Path("a.pth"), Path("b.h5")), backend="ray")
