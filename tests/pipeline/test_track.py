"""The online tracker on synthetic boxes and embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.track import Tracker, iou
from pipeline.types import FaceBox, FaceScore, ScoredFrame, TrackObservations

RNG = np.random.default_rng(0)
PEOPLE = {name: RNG.standard_normal(512).astype(np.float32) for name in "ABCD"}


def person(name: str, noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """An embedding of ``name``: its identity vector plus a little per-face noise (cosine dist ~0.04)."""
    rng = np.random.default_rng(seed)
    return (PEOPLE[name] + noise * rng.standard_normal(512)).astype(np.float32)


Face = tuple[float, float, str]  # (x, y, person) for a 40×40 box at (x, y)


def scored(index: int, faces: Sequence[Face], prob: float = 0.1) -> ScoredFrame:
    scores = []
    for i, (x, y, who) in enumerate(faces):
        box = FaceBox(frame_index=index, face_index=i, xyxy=(x, y, x + 40, y + 40), detector_prob=0.99)
        scores.append(
            FaceScore(
                box=box,
                fake_prob=prob,
                heatmap=np.zeros((8, 8), np.float32),
                embedding=person(who, seed=index * 10 + i),
                crop=np.zeros((4, 4, 3), np.uint8),
            )
        )
    return ScoredFrame(index=index, time_s=index * 0.5, scores=tuple(scores))


def ids(tracker: Tracker, frames: Sequence[Sequence[Face]]) -> list[list[int]]:
    return [[f.track_id for f in tracker.assign(scored(i, faces)).faces] for i, faces in enumerate(frames)]


def test_two_faces_moving_slowly_keep_their_ids() -> None:
    frames = [[(0 + 3 * t, 0, "A"), (200 - 3 * t, 10, "B")] for t in range(10)]
    assert ids(Tracker(), frames) == [[0, 1]] * 10


def test_slow_motion_keeps_ids_even_without_identity() -> None:
    # a zero embedding carries no identity: IoU alone must carry the track
    tracker = Tracker()
    for t in range(5):
        face = scored(t, [(5.0 * t, 0, "A")])
        zero = FaceScore(box=face.scores[0].box, fake_prob=0.2, heatmap=face.scores[0].heatmap, embedding=np.zeros(512))
        verdict = tracker.assign(ScoredFrame(t, t * 0.5, (zero,)))
        assert verdict.faces[0].track_id == 0


def test_face_returns_elsewhere_after_gap_rejoins_by_embedding() -> None:
    frames: list[list[Face]] = (
        [[(0, 0, "A"), (300, 0, "B")]] * 3  # both present
        + [[(300, 0, "B")]] * 4  # A gone for 4 frames
        + [[(150, 200, "A"), (300, 0, "B")]]  # A back, far from where it was
    )
    assert ids(Tracker(), frames) == [[0, 1]] * 3 + [[1]] * 4 + [[0, 1]]


def test_new_person_gets_new_id() -> None:
    frames: list[list[Face]] = [[(0, 0, "A")], [(0, 0, "A")], [(0, 0, "A"), (200, 0, "C")], [(200, 0, "C")]]
    assert ids(Tracker(), frames) == [[0], [0], [0, 1], [1]]


def test_new_person_at_the_same_place_after_a_cut_gets_new_id() -> None:
    # same box, different identity: the embedding vetoes the IoU match
    frames: list[list[Face]] = [[(0, 0, "A")], [(0, 0, "A")], [(2, 0, "D")], [(0, 0, "A")]]
    assert ids(Tracker(), frames) == [[0], [0], [1], [0]]


def test_crossing_faces_keep_identity() -> None:
    # A moves right, B moves left; at t=2 each overlaps the other's previous box (IoU 1.0 there)
    xs = [0, 20, 40, 60]
    frames = [[(xs[t], 0, "A"), (xs[3 - t], 0, "B")] for t in range(4)]
    assert ids(Tracker(), frames) == [[0, 1]] * 4
    # and with the faces listed in swapped order
    frames = [[(xs[3 - t], 0, "B"), (xs[t], 0, "A")] for t in range(4)]
    assert ids(Tracker(), frames) == [[0, 1]] * 4


def test_one_face_per_track_per_frame() -> None:
    # two detections of the same person on top of each other: only one may continue the track
    frames: list[list[Face]] = [[(0, 0, "A")], [(0, 0, "A"), (2, 2, "A")], [(0, 0, "A"), (2, 2, "A")]]
    out = ids(Tracker(), frames)
    assert out[0] == [0]
    for row in out[1:]:
        assert len(set(row)) == len(row)
    assert out[1] == [0, 1] and out[2] == [0, 1]


def test_verdict_fields_and_observations() -> None:
    tracker = Tracker()
    v0 = tracker.assign(scored(0, [(0, 0, "A"), (200, 0, "B")], prob=0.3))
    v1 = tracker.assign(ScoredFrame(index=3, time_s=1.5, scores=()))
    v2 = tracker.assign(scored(5, [(205, 0, "B")], prob=0.9))
    assert v0.score == pytest.approx(0.3) and v1.score is None and v1.faces == ()
    assert v2.score == pytest.approx(0.9) and v2.faces[0].track_id == 1
    face = v0.faces[0]
    assert face.crop is not None and face.heatmap.shape == (8, 8)
    assert face.embedding is not None and face.embedding.shape == (512,)
    assert tracker.tracks() == [
        TrackObservations(0, (0,), (0.0,), (0.3,)),
        TrackObservations(1, (0, 5), (0.0, 2.5), (0.3, 0.9)),
    ]


def test_frames_out_of_order_raise() -> None:
    tracker = Tracker()
    tracker.assign(scored(4, []))
    with pytest.raises(ValueError, match="in order"):
        tracker.assign(scored(4, []))


def test_max_gap_frames_limits_iou_matching() -> None:
    # without identity (zero embeddings) only IoU can link; a 2-frame gap is too long for max_gap_frames=2
    def anonymous(index: int, present: bool) -> ScoredFrame:
        if not present:
            return ScoredFrame(index, float(index), ())
        box = FaceBox(index, 0, (0.0, 0.0, 40.0, 40.0), 0.99)
        return ScoredFrame(index, float(index), (FaceScore(box, 0.1, np.zeros((2, 2), np.float32), np.zeros(8)),))

    tracker = Tracker(max_gap_frames=2)
    pattern = [True, False, True, False, False, True]
    got = [[f.track_id for f in tracker.assign(anonymous(i, p)).faces] for i, p in enumerate(pattern)]
    assert got == [[0], [], [0], [], [], [1]]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),
    ],
)
def test_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)
