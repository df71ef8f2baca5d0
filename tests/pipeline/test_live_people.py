"""LivePeople: a verdict per person now (a window), people who leave closed once, memory that stays bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.live_people import LivePeople
from pipeline.live_types import EndReason, LiveOptions, LiveSession, LiveStats
from pipeline.report import report_from_dict, report_to_dict, report_to_json
from pipeline.types import (
    AnalysisStart,
    FaceBox,
    FaceScore,
    Label,
    MediaInfo,
    MediaKind,
    ModelInfo,
    PreprocessProfile,
    SampleMode,
    SamplingPolicy,
    ScoredFrame,
    StageTimings,
    Strategy,
)

EVERY_S = 0.5
OPTIONS = LiveOptions(rate_hz=1 / EVERY_S, window_s=5.0, gone_s=3.0)
_HEAT = np.zeros((4, 4), np.float32)


def person(index: int, x: float, prob: float, identity: int) -> FaceScore:
    embedding = np.zeros(8, np.float32)
    embedding[identity] = 1.0
    return FaceScore(FaceBox(index, 0, (x, 10.0, x + 50.0, 60.0), 0.99), prob, _HEAT, embedding)


def frame(index: int, *faces: tuple[float, float, int]) -> ScoredFrame:
    return ScoredFrame(index, index * EVERY_S, tuple(person(index, *f) for f in faces))


def start() -> AnalysisStart:
    info = MediaInfo("cam", None, None, "push", "jpeg", 640, 360, None, None, 0, False, None, MediaKind.LIVE)
    profile = PreprocessProfile("seed-v1", 160, 0, 160, "bilinear", 1 / 255)
    model = ModelInfo("m", "0" * 64, profile, "cpu", True)
    return AnalysisStart(info, None, SamplingPolicy(SampleMode.EVERY_S, EVERY_S, 1, None), model, 0.5)


def session(analysed: int) -> LiveSession:
    return LiveSession(0.0, 1.0, EndReason.STOPPED, "stopped by the user", LiveStats(), analysed, 0.1, 0.2)


def test_the_current_verdict_is_the_window_and_the_report_is_the_whole_life() -> None:
    people = LivePeople(0.5, 0.05, 3, OPTIONS)
    for i in range(60):  # 30 s real-looking, then 5 s fake-looking
        people.assign(frame(i, (100.0, 0.1, 0)))
    for i in range(60, 70):
        people.assign(frame(i, (100.0, 0.9, 0)))
    (now,) = people.now()
    assert (now.track_id, now.n_faces, now.window_faces) == (0, 70, 11)  # 5 s window at 2/s, both ends
    assert now.label is Label.FAKE and now.confident_fake and now.score == pytest.approx(0.9)
    report = people.report(start(), Strategy.PER_PERSON, session(70), StageTimings(), "t")
    (track,) = report.tracks
    assert track.n_faces == 70 and report.frames == () and report.session == session(70)
    assert report.segments[0].track_id is None and report.segments[0].start_s == pytest.approx(30.0)
    assert [s.track_id for s in report.segments] == [None, 0]
    assert report.label is Label.REAL and track.label is Label.REAL, "over the whole life 10 of 70 is under a third"


def test_a_person_who_leaves_is_closed_once_and_memory_stays_bounded() -> None:
    people = LivePeople(0.5, 0.05, 3, OPTIONS)
    gone_ids: list[int] = []
    for i in range(4000):  # a new person every 10 frames (5 s), each far from the last
        identity = (i // 10) % 8
        _, gone = people.assign(frame(i, (float((i // 10) % 2) * 300, 0.2, identity)))
        gone_ids += [g.person.track_id for g in gone]
        assert len(people.now()) <= 2, "only people seen within gone_s are tracked"
        assert len(people._tracker._tracks) <= 2
    assert gone_ids == list(range(len(gone_ids))) and len(gone_ids) == 399, "each person closed exactly once"
    report = people.report(start(), Strategy.PER_PERSON, session(4000), StageTimings(), "t")
    assert len(report.tracks) == 400 and sum(t.n_faces for t in report.tracks) == 4000
    assert report.label is Label.REAL


def test_a_person_back_after_gone_s_is_a_new_person_and_ids_are_never_reused() -> None:
    people = LivePeople(0.5, 0.05, 3, OPTIONS)
    for i in range(4):
        people.assign(frame(i, (100.0, 0.3, 0)))
    _, gone = people.assign(frame(12, (300.0, 0.3, 1)))  # 6 s later: person 0 has been gone > 3 s
    assert [g.person.track_id for g in gone] == [0] and gone[0].person.n_faces == 4
    people.assign(frame(13, (300.0, 0.3, 1), (100.0, 0.3, 0)))
    assert [p.track_id for p in people.now()] == [1, 2]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [(Strategy.MEAN, 0.5), (Strategy.MAX_FRAME, 0.9), (Strategy.PER_PERSON, 0.9)],
)
def test_the_session_score_follows_the_strategy(strategy: Strategy, expected: float) -> None:
    people = LivePeople(0.5, 0.05, 3, OPTIONS)
    for i in range(10):
        people.assign(frame(i, (100.0, 0.1, 0), (400.0, 0.9, 1)))
    report = people.report(start(), strategy, session(10), StageTimings(), "t")
    assert report.score == pytest.approx(expected)


def test_a_live_report_round_trips_through_json_with_its_session() -> None:
    people = LivePeople(0.5, 0.05, 3, OPTIONS)
    for i in range(6):
        people.assign(frame(i, (100.0, 0.7, 0)))
    live = LiveSession(10.0, 20.0, EndReason.FAILED, "gone", LiveStats(9, 8, 2, 6, 1), 6, 0.25, 0.5)
    report = people.report(start(), Strategy.PER_PERSON, live, StageTimings(), "t")
    data = report_to_dict(report)
    assert data["summary"]["n_frames"] == 6 and data["summary"]["n_faces"] == 6 and data["session"]["end"] == "failed"
    assert report_from_dict(data) == report
    assert report_from_dict(json.loads(report_to_json(report))) == report
