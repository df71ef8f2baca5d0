"""Scores, segments and labels on hand-made tables with hand-computed answers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipeline.aggregate import (
    build_tracks,
    confident_score,
    decide_label,
    find_segments,
    frame_score,
    is_confident_fake,
    track_label,
    track_probs_by_frame,
    track_score,
    video_score,
)
from pipeline.types import FaceRow, FrameRow, Label, Segment, Strategy, Track, TrackObservations


def rows(table: Sequence[Sequence[tuple[float, int]]]) -> list[FrameRow]:
    """One FrameRow per entry; each face is (fake_prob, track_id)."""
    out = []
    for i, faces in enumerate(table):
        face_rows = tuple(FaceRow(j, (0.0, 0.0, 10.0, 10.0), 0.99, p, t) for j, (p, t) in enumerate(faces))
        out.append(FrameRow(i, float(i), frame_score([p for p, _ in faces]), face_rows))
    return out


def observations(table: Sequence[Sequence[tuple[float, int]]]) -> list[TrackObservations]:
    by_track: dict[int, list[tuple[int, float]]] = {}
    for i, faces in enumerate(table):
        for p, t in faces:
            by_track.setdefault(t, []).append((i, p))
    return [
        TrackObservations(t, tuple(i for i, _ in obs), tuple(float(i) for i, _ in obs), tuple(p for _, p in obs))
        for t, obs in by_track.items()
    ]


def score_of(table: Sequence[Sequence[tuple[float, int]]], strategy: Strategy, threshold: float = 0.5) -> float | None:
    tracks = build_tracks(observations(table), threshold)
    return video_score(rows(table), tracks, strategy, threshold)


@pytest.mark.parametrize(("probs", "expected"), [([], None), ([0.3], 0.3), ([0.1, 0.7, 0.4], 0.7)])
def test_frame_score(probs: list[float], expected: float | None) -> None:
    assert frame_score(probs) == expected


# person 0 is real-looking, person 1 is a swap that leaks in 4 of 6 frames
TWO_PEOPLE = [
    [(0.1, 0), (0.9, 1)],
    [(0.2, 0), (0.8, 1)],
    [(0.1, 0), (0.3, 1)],
    [(0.2, 0), (0.9, 1)],
    [(0.1, 0), (0.2, 1)],
    [(0.1, 0), (0.7, 1)],
]
NO_FACES: list[list[tuple[float, int]]] = [[], []]


@pytest.mark.parametrize(
    ("table", "strategy", "expected"),
    [
        # mean of all 12 faces: (0.8 + 3.8) / 12
        (TWO_PEOPLE, Strategy.MEAN, 4.6 / 12),
        (TWO_PEOPLE, Strategy.MAX_FRAME, 0.9),
        # 3 of 12 >= 0.8 (not > 11); 7 of 12 <= 0.2 (not > 10.8) -> mean of all
        (TWO_PEOPLE, Strategy.CONFIDENT, 4.6 / 12),
        # person 1: 4 of 6 >= 0.5 (>= max(3, 2)), top half {0.9, 0.9, 0.8} mean 2.6/3 -> confidently fake
        (TWO_PEOPLE, Strategy.PER_PERSON, 2.6 / 3),
        # a zero-face frame in between changes nothing
        ([[(0.4, 0)], [], [(0.6, 0)]], Strategy.MEAN, 0.5),
        ([[(0.4, 0)], [], [(0.6, 0)]], Strategy.MAX_FRAME, 0.6),
        # one person, not confident (1 of 2 agree < 3): the plain mean
        ([[(0.4, 0)], [], [(0.6, 0)]], Strategy.PER_PERSON, 0.5),
        # no person confidently fake: face-weighted mean of track means = mean of all faces
        ([[(0.2, 0), (0.6, 1)], [(0.4, 0)], [(0.3, 0)]], Strategy.PER_PERSON, 1.5 / 4),
        (NO_FACES, Strategy.MEAN, None),
        (NO_FACES, Strategy.MAX_FRAME, None),
        (NO_FACES, Strategy.CONFIDENT, None),
        (NO_FACES, Strategy.PER_PERSON, None),
    ],
)
def test_video_score(table: list[list[tuple[float, int]]], strategy: Strategy, expected: float | None) -> None:
    got = score_of(table, strategy)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_per_person_one_swapped_face_in_a_group_is_not_diluted() -> None:
    # three real people with 5 faces each, one fake with 5 faces all at 0.9
    table = [[(0.1, 0), (0.1, 1), (0.1, 2), (0.9, 3)] for _ in range(5)]
    assert score_of(table, Strategy.PER_PERSON) == pytest.approx(0.9)
    assert score_of(table, Strategy.MEAN) == pytest.approx(0.3)


def test_per_person_short_spurious_track_does_not_decide() -> None:
    # person 1 appears twice at 0.95: too few faces to be confidently fake, so it only weighs in
    table = [[(0.1, 0)] for _ in range(8)] + [[(0.1, 0), (0.95, 1)], [(0.1, 0), (0.95, 1)]]
    assert score_of(table, Strategy.PER_PERSON) == pytest.approx((10 * 0.1 + 2 * 0.95) / 12)


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        # 12 of 25 >= 0.8: 12 > 25/2.5 = 10 and 12 > 11 -> mean of the 12
        ([0.9] * 12 + [0.5] * 13, 0.9),
        # 11 of 25 >= 0.8: 11 is not > 11 -> falls through to the mean of all
        ([0.9] * 11 + [0.5] * 14, (11 * 0.9 + 14 * 0.5) / 25),
        # 12 of 30 >= 0.8: 12 is not > 30/2.5 = 12 -> mean of all
        ([0.8] * 12 + [0.5] * 18, (12 * 0.8 + 18 * 0.5) / 30),
        # 13 of 30: > 12 and > 11 -> mean of those (0.8 counts: >= 0.8)
        ([0.8] * 13 + [0.5] * 17, 0.8),
        # 19 of 20 <= 0.2: 19 > 18 -> mean of the low ones (0.2 counts: <= 0.2)
        ([0.2] * 10 + [0.0] * 9 + [0.6], 2.0 / 19),
        # 18 of 20 <= 0.2: 18 is not > 18 -> mean of all
        ([0.1] * 18 + [0.6, 0.6], (1.8 + 1.2) / 20),
        # few faces: never the high rule (needs > 11), the low rule still applies
        ([0.95] * 5, 0.95),
        ([0.1] * 5, 0.1),
        ([], None),
    ],
)
def test_confident_dfdc_rule(probs: list[float], expected: float | None) -> None:
    got = confident_score(probs)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("probs", "confident", "score", "label"),
    [
        ([], False, None, Label.NO_FACE),
        ([0.1, 0.2, 0.3], False, 0.2, Label.REAL),
        # 3 agree (>= max(3, ceil(6/3)=2)), top half {0.9, 0.8, 0.7} = 0.8
        ([0.9, 0.8, 0.7, 0.1, 0.1, 0.1], True, 0.8, Label.FAKE),
        # only 2 agree: not confident; mean 0.5 >= threshold -> inconclusive
        ([0.9, 0.9, 0.2, 0.0], False, 0.5, Label.INCONCLUSIVE),
        # 3 of 12 agree but a third of 12 is 4: not confident; mean 3.0/12
        ([0.9, 0.9, 0.9] + [0.1] * 9, False, (2.7 + 0.9) / 12, Label.REAL),
        # 4 of 12 agree, but top half {0.9 x4, 0.1 x2} = 3.8/6 -> confident
        ([0.9] * 4 + [0.1] * 8, True, 3.8 / 6, Label.FAKE),
        # 4 agree at exactly the threshold, top half {0.5 x4, 0.0 x2} = 2/6 < 0.5 -> not confident
        ([0.5] * 4 + [0.0] * 8, False, 2.0 / 12, Label.REAL),
        # 9 faces, 3 agree (a third of 9), top half {0.9 x3, 0.1 x2} = 2.9/5
        ([0.9] * 3 + [0.1] * 6, True, 2.9 / 5, Label.FAKE),
    ],
)
def test_track_rule(probs: list[float], confident: bool, score: float | None, label: Label) -> None:
    assert is_confident_fake(probs, 0.5) is confident
    got = track_score(probs, 0.5)
    assert got == pytest.approx(score) if score is not None else got is None
    assert track_label(probs, 0.5) is label


def test_agree_fraction_has_no_float_round_up() -> None:
    # 0.1 * 30 is 3.0000000000000004 in floats: 3 agreeing faces must still be enough
    probs = [1.0] * 3 + [0.49] * 27
    assert is_confident_fake(probs, 0.5, min_agree=1, agree_frac=0.1)
    assert track_score(probs, 0.5, min_agree=1, agree_frac=0.1) == pytest.approx((3 + 12 * 0.49) / 15)
    assert not is_confident_fake(probs, 0.5, min_agree=1, agree_frac=0.11)


def test_single_face_person_needs_min_agree_one() -> None:
    assert track_label([0.9], 0.5) is Label.INCONCLUSIVE
    assert track_label([0.9], 0.5, min_agree=1) is Label.FAKE
    assert track_label([0.3], 0.5, min_agree=1) is Label.REAL


def test_build_tracks() -> None:
    obs = [
        TrackObservations(1, (2, 4, 6), (1.0, 2.0, 3.0), (0.9, 0.8, 0.7)),
        TrackObservations(0, (2,), (1.0,), (0.2,)),
    ]
    assert build_tracks(obs, 0.5) == (
        Track(0, (2,), 1.0, 1.0, (0.2,), 0.2, Label.REAL),
        Track(1, (2, 4, 6), 1.0, 3.0, (0.9, 0.8, 0.7), pytest.approx(0.85), Label.FAKE, confident_fake=True),
    )


@pytest.mark.parametrize(
    ("probs", "band", "label", "confident"),
    [
        # the issue-10 bug: a confidently fake person at exactly 0.50 was FAKE on a video that is INCONCLUSIVE
        ([0.5, 0.5, 0.5], 0.05, Label.INCONCLUSIVE, True),
        ([0.5, 0.5, 0.5], 0.0, Label.FAKE, True),  # no band: at the threshold is fake, as for the video
        ([0.52] * 4, 0.05, Label.INCONCLUSIVE, True),  # inside the band above the threshold
        ([0.48] * 4, 0.05, Label.INCONCLUSIVE, False),  # inside the band below it
        ([0.55] * 4, 0.05, Label.FAKE, True),  # the band's edge is decided, as for the video
        ([0.45] * 4, 0.05, Label.REAL, False),
        ([0.9, 0.9, 0.2, 0.0], 0.05, Label.INCONCLUSIVE, False),  # mean 0.5: in the band
        ([0.9, 0.9, 0.3, 0.3], 0.05, Label.INCONCLUSIVE, False),  # mean 0.6, fake-looking, too few agree
        ([0.1, 0.2, 0.3], 0.05, Label.REAL, False),
        ([0.9], 0.05, Label.INCONCLUSIVE, False),  # one face cannot make a video person fake (min_agree 3)
        ([], 0.05, Label.NO_FACE, False),
    ],
)
def test_person_labels_follow_the_video_rule(probs: list[float], band: float, label: Label, confident: bool) -> None:
    """A person's label is :func:`decide_label` on the person's score (threshold and band), FAKE needing
    agreeing faces; a single person's label equals the video's when the person is confidently fake."""
    assert track_label(probs, 0.5, band=band) is label
    assert is_confident_fake(probs, 0.5) is confident
    if probs:
        (track,) = build_tracks([TrackObservations(0, tuple(range(len(probs))), (0.0,) * len(probs), tuple(probs))],
                                0.5, band=band)  # fmt: skip
        assert (track.label, track.confident_fake) == (label, confident)
        video = video_score(rows([[(q, 0)] for q in probs]), [track], Strategy.PER_PERSON, 0.5)
        assert video == pytest.approx(track.score)
        if confident:  # one person: the video's verdict is the person's
            assert decide_label(video, len(probs), is_image=False, threshold=0.5, band=band, min_faces=3) is label


def test_a_confident_fake_in_the_band_still_leads_the_per_person_score() -> None:
    """The per_person video score takes confidently fake persons by confidence, not by their (banded) label."""
    obs = [
        TrackObservations(0, (0, 1, 2), (0.0, 1.0, 2.0), (0.52, 0.52, 0.52)),
        TrackObservations(1, (0, 1, 2), (0.0, 1.0, 2.0), (0.1, 0.1, 0.1)),
    ]
    tracks = build_tracks(obs, 0.5, band=0.05)
    assert [t.label for t in tracks] == [Label.INCONCLUSIVE, Label.REAL]
    frames = rows([[(0.52, 0), (0.1, 1)]] * 3)
    assert video_score(frames, tracks, Strategy.PER_PERSON, 0.5) == pytest.approx(0.52)  # not diluted to 0.31


def test_per_person_without_tracks_but_with_faces_raises() -> None:
    with pytest.raises(ValueError, match="tracks"):
        video_score(rows([[(0.3, 0)]]), [], Strategy.PER_PERSON, 0.5)


T = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.1] * 7, []),
        ([None] * 7, []),
        # one run in the middle, peak inside
        ([0.1, 0.6, 0.9, 0.7, 0.2, 0.1, 0.1], [(0.5, 1.5, 1.0, 0.9, 3)]),
        # exactly the threshold is not above it
        ([0.5, 0.6, 0.5, 0.1, 0.1, 0.1, 0.1], [(0.5, 0.5, 0.5, 0.6, 1)]),
        # a None (no face) breaks a run
        ([0.6, 0.7, None, 0.8, 0.1, 0.1, 0.1], [(0.0, 0.5, 0.5, 0.7, 2), (1.5, 1.5, 1.5, 0.8, 1)]),
        # run at the end; tie for the peak goes to the earliest frame
        ([0.1, 0.1, 0.1, 0.1, 0.9, 0.6, 0.9], [(2.0, 3.0, 2.0, 0.9, 3)]),
        # run at the start, single-frame runs
        (
            [0.9, 0.1, 0.7, 0.1, 0.6, None, 0.1],
            [(0.0, 0.0, 0.0, 0.9, 1), (1.0, 1.0, 1.0, 0.7, 1), (2.0, 2.0, 2.0, 0.6, 1)],
        ),
        # everything above
        ([0.6, 0.7, 0.8, 0.9, 0.8, 0.7, 0.6], [(0.0, 3.0, 1.5, 0.9, 7)]),
    ],
)
def test_find_segments(scores: list[float | None], expected: list[tuple[float, float, float, float, int]]) -> None:
    got = find_segments(T, scores, 0.5, track_id=None)
    assert got == tuple(Segment(*e) for e in expected)


def test_find_segments_per_track() -> None:
    table = [[(0.9, 0), (0.2, 1)], [(0.8, 1)], [(0.7, 0), (0.9, 1)], [(0.6, 0)]]
    frames = rows(table)
    series = track_probs_by_frame(frames, 0)
    assert series == [0.9, None, 0.7, 0.6]
    got = find_segments([f.time_s for f in frames], series, 0.5, track_id=0)
    assert got == (Segment(0.0, 0.0, 0.0, 0.9, 1, 0), Segment(2.0, 3.0, 2.0, 0.7, 2, 0))
    with pytest.raises(ValueError):
        find_segments([0.0], [0.1, 0.2], 0.5)


@pytest.mark.parametrize(
    ("score", "n_faces", "is_image", "expected"),
    [
        (None, 0, False, Label.NO_FACE),
        (None, 0, True, Label.NO_FACE),
        (0.9, 2, False, Label.INCONCLUSIVE),  # fewer than min_faces=3 in a video
        (0.9, 3, False, Label.FAKE),
        (0.9, 1, True, Label.FAKE),  # an image needs one face
        (0.1, 1, True, Label.REAL),
        (0.5, 5, False, Label.INCONCLUSIVE),  # at the threshold
        (0.52, 5, False, Label.INCONCLUSIVE),
        (0.48, 5, False, Label.INCONCLUSIVE),
        (0.55, 5, False, Label.FAKE),  # band edges are decided, on both sides
        (0.45, 5, False, Label.REAL),
        (0.5500001, 5, False, Label.FAKE),
        (0.4499999, 5, False, Label.REAL),
        (0.5499, 5, False, Label.INCONCLUSIVE),
        (0.4501, 5, False, Label.INCONCLUSIVE),
        (1.0, 5, False, Label.FAKE),
        (0.0, 5, False, Label.REAL),
    ],
)
def test_decide_label(score: float | None, n_faces: int, is_image: bool, expected: Label) -> None:
    assert decide_label(score, n_faces, is_image=is_image, threshold=0.5, band=0.05, min_faces=3) is expected


@pytest.mark.parametrize(("score", "expected"), [(0.69, Label.REAL), (0.7, Label.FAKE), (0.71, Label.FAKE)])
def test_decide_label_without_band(score: float, expected: Label) -> None:
    assert decide_label(score, 5, is_image=False, threshold=0.7, band=0.0, min_faces=3) is expected


def test_decide_label_rejects_a_score_missing_with_faces() -> None:
    with pytest.raises(ValueError):
        decide_label(None, 2, is_image=False, threshold=0.5, band=0.05, min_faces=3)
