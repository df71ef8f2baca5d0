"""Report serialisation: JSON round trip and CSV rows, on a hand-built report."""

from __future__ import annotations

import csv
import io
import json

import pytest

from pipeline.models import SEED_PROFILE
from pipeline.report import CSV_COLUMNS, SCHEMA, report_from_dict, report_to_csv, report_to_dict, report_to_json
from pipeline.types import (
    FaceRow,
    FrameRow,
    Label,
    MediaInfo,
    ModelInfo,
    Report,
    SamplingPolicy,
    Segment,
    StageTimings,
    Strategy,
    Track,
)


@pytest.fixture
def report() -> Report:
    media = MediaInfo("clip.mp4", 1234, "ab" * 32, "mov,mp4", "h264", 640, 360, 30.0, 2.0, 0, False, 60)
    frames = (
        FrameRow(
            0,
            0.0,
            0.9,
            (FaceRow(0, (1.0, 2.0, 50.0, 60.0), 0.99, 0.9, 0), FaceRow(1, (100.0, 2.0, 150.0, 60.0), 0.98, 0.2, 1)),
        ),
        FrameRow(30, 1.0, None, ()),
        FrameRow(60, 2.0, 0.8, (FaceRow(0, (2.0, 2.0, 51.0, 60.0), 0.97, 0.8, 0),)),
    )
    tracks = (
        Track(0, (0, 60), 0.0, 2.0, (0.9, 0.8), 0.85, Label.FAKE),
        Track(1, (0,), 0.0, 0.0, (0.2,), 0.2, Label.REAL),
    )
    return Report(
        media=media,
        policy=SamplingPolicy(),
        model=ModelInfo("m.pth", "cd" * 32, SEED_PROFILE, "cpu", False),
        strategy=Strategy.PER_PERSON,
        threshold=0.5,
        score=0.85,
        label=Label.FAKE,
        frames=frames,
        tracks=tracks,
        segments=(Segment(0.0, 0.0, 0.0, 0.9, 1), Segment(2.0, 2.0, 2.0, 0.8, 1), Segment(0.0, 2.0, 0.0, 0.9, 2, 0)),
        timings=StageTimings(0.1, 0.2, 0.3, 0.7),
        version="0.1.0",
    )


def test_json_round_trip(report):
    text = report_to_json(report)
    data = json.loads(text)
    assert data["schema"] == SCHEMA
    assert data["summary"] == {"n_frames": 3, "n_faces": 3, "n_people": 2, "n_segments": 2, "untrained_model": False}
    assert report_from_dict(data) == report


def test_from_dict_refuses_other_schema(report):
    data = report_to_dict(report)
    data["schema"] = "something/9"
    with pytest.raises(ValueError, match="schema"):
        report_from_dict(data)
    data = report_to_dict(report)
    del data["frames"]
    with pytest.raises(ValueError, match="malformed"):
        report_from_dict(data)


def test_csv_has_one_row_per_face(report):
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert len(rows) == report.n_faces == 3
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["frame_index"] for r in rows] == ["0", "0", "60"]
    assert float(rows[1]["fake_prob"]) == pytest.approx(0.2)
    assert rows[2]["track_id"] == "0"


def test_round_trip_keeps_model_card_fields(report):
    import dataclasses

    model = dataclasses.replace(
        report.model,
        card_name="sbi-demo",
        card_summary="frame AUC 0.612 on ffpp (40 frames)",
        temperature=1.7,
        calibrated_threshold=0.83,
    )
    carded = dataclasses.replace(report, model=model)
    assert report_from_dict(json.loads(report_to_json(carded))) == carded


def test_reports_from_before_model_cards_still_load(report):
    data = report_to_dict(report)
    for key in ("card_name", "card_summary", "temperature", "calibrated_threshold"):
        del data["model"][key]
    loaded = report_from_dict(data)
    assert loaded == report
    assert (loaded.model.card_name, loaded.model.temperature, loaded.model.calibrated_threshold) == (None, 1.0, None)
