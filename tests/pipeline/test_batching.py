"""The batcher's flush rules, checked with a fake scorer that records every batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from pipeline.batching import chunk_frames, score_in_batches
from pipeline.types import CroppedFrame, FaceBox, FaceScore, Frame, ScoredFrame


def make_frame(index: int, n_faces: int) -> CroppedFrame:
    boxes = tuple(
        FaceBox(frame_index=index, face_index=i, xyxy=(10.0 * i, 0.0, 10.0 * i + 8, 8.0), detector_prob=0.99)
        for i in range(n_faces)
    )
    crops = tuple(np.full((4, 4, 3), (index * 7 + i) % 256, dtype=np.uint8) for i in range(n_faces))
    return CroppedFrame(index=index, time_s=index / 10, boxes=boxes, crops=crops)


def make_frames(faces_per_frame: Sequence[int]) -> list[CroppedFrame]:
    return [make_frame(i, n) for i, n in enumerate(faces_per_frame)]


class FakeScorer:
    """Scores each face as (frame_index + face_index/100) / 1000 so results can be traced to their face."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __call__(self, crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        assert len(crops) == len(boxes) > 0
        self.batches.append([(b.frame_index, b.face_index) for b in boxes])
        return [
            FaceScore(
                box=b,
                fake_prob=(b.frame_index + b.face_index / 100) / 1000,
                heatmap=np.zeros((8, 8), np.float32),
                embedding=np.ones(8, np.float32),
                crop=c,
            )
            for c, b in zip(crops, boxes, strict=True)
        ]

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def run(faces_per_frame: Sequence[int], batch: int, pending: int) -> tuple[list[ScoredFrame], FakeScorer]:
    scorer = FakeScorer()
    out = list(score_in_batches(make_frames(faces_per_frame), scorer, classify_batch=batch, max_pending_frames=pending))
    return out, scorer


@pytest.mark.parametrize(
    ("faces_per_frame", "batch", "pending", "sizes"),
    [
        ([], 4, 4, []),
        ([0, 0, 0], 4, 2, []),
        ([2, 2, 2, 2], 4, 10, [4, 4]),  # full batches only
        ([2, 2, 2], 4, 10, [4, 2]),  # partial last batch at end of input
        ([3, 3], 4, 10, [4, 2]),  # frame 1 split across two flushes
        ([10], 4, 10, [4, 4, 2]),  # one frame with more faces than a batch
        ([1, 1, 1, 1, 1], 8, 3, [3, 2]),  # latency flush after 3 waiting frames, then the end flush
        ([1, 0, 0, 1], 8, 3, [1, 1]),  # zero-face frames behind a face count as waiting
        ([0, 2, 0, 0, 3, 0], 2, 100, [2, 2, 1]),  # zero-face frames at start, between and at end
        ([5, 1], 4, 1, [4, 1, 1]),  # pending=1: no face waits for a later frame
        ([1, 1, 1], 1, 100, [1, 1, 1]),
    ],
)
def test_batch_sizes_and_completeness(faces_per_frame: list[int], batch: int, pending: int, sizes: list[int]) -> None:
    out, scorer = run(faces_per_frame, batch, pending)
    assert scorer.sizes == sizes
    # order kept, every frame exactly once
    assert [f.index for f in out] == list(range(len(faces_per_frame)))
    # every face scored exactly once and filed under its own frame, in face order
    flat = [face for b in scorer.batches for face in b]
    expected = [(i, j) for i, n in enumerate(faces_per_frame) for j in range(n)]
    assert sorted(flat) == expected and len(set(flat)) == len(flat)
    for frame in out:
        assert [s.box.face_index for s in frame.scores] == list(range(faces_per_frame[frame.index]))
        assert all(s.box.frame_index == frame.index for s in frame.scores)
        assert [s.fake_prob for s in frame.scores] == [(frame.index + j / 100) / 1000 for j in range(len(frame.scores))]
        assert frame.time_s == frame.index / 10
    # only the latency/end rules make short batches, and only as the last call of a flush
    assert all(0 < s <= batch for s in sizes)


def test_batches_are_exactly_classify_batch_when_no_latency_rule_fires() -> None:
    out, scorer = run([3] * 20, batch=7, pending=1000)
    assert scorer.sizes == [7] * 8 + [4]
    assert sum(len(f.scores) for f in out) == 60


def tracking_input(faces_per_frame: Sequence[int], pulled: list[int]) -> Iterator[CroppedFrame]:
    for frame in make_frames(faces_per_frame):
        pulled.append(frame.index)
        yield frame


def test_lazy_pull_and_emission_right_after_flush() -> None:
    pulled: list[int] = []
    scorer = FakeScorer()
    gen = score_in_batches(tracking_input([2, 2, 2, 2, 2, 2], pulled), scorer, classify_batch=4, max_pending_frames=9)
    first = next(gen)
    # frames 0 and 1 fill one batch: both come out before frame 2 is read
    assert first.index == 0 and pulled == [0, 1]
    assert next(gen).index == 1 and pulled == [0, 1]
    assert next(gen).index == 2 and pulled == [0, 1, 2, 3]
    assert [f.index for f in gen] == [3, 4, 5]


def test_zero_face_frames_pass_straight_through_when_nothing_pending() -> None:
    pulled: list[int] = []
    scorer = FakeScorer()
    gen = score_in_batches(tracking_input([0, 0, 1, 0], pulled), scorer, classify_batch=4, max_pending_frames=9)
    assert next(gen).index == 0 and pulled == [0]
    assert next(gen).index == 1 and pulled == [0, 1]
    # frame 3 waits behind frame 2's unscored face until the end flush
    assert [f.index for f in gen] == [2, 3]
    assert scorer.sizes == [1]


def test_latency_flush_fires_before_batch_is_full() -> None:
    pulled: list[int] = []
    scorer = FakeScorer()
    gen = score_in_batches(tracking_input([1] * 6, pulled), scorer, classify_batch=32, max_pending_frames=2)
    assert next(gen).index == 0
    assert pulled == [0, 1] and scorer.sizes == [2]
    assert [f.index for f in gen] == [1, 2, 3, 4, 5]
    assert scorer.sizes == [2, 2, 2]


def test_split_frame_is_held_until_its_last_face_is_scored() -> None:
    pulled: list[int] = []
    scorer = FakeScorer()
    gen = score_in_batches(tracking_input([3, 3, 0], pulled), scorer, classify_batch=4, max_pending_frames=9)
    assert next(gen).index == 0
    # frame 1 had one face scored in the first batch; it waits for the end flush
    assert scorer.sizes == [4] and pulled == [0, 1]
    rest = list(gen)
    assert [f.index for f in rest] == [1, 2] and scorer.sizes == [4, 2]
    assert [s.box.face_index for s in rest[0].scores] == [0, 1, 2]


def test_wrong_result_count_raises() -> None:
    def short(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        return FakeScorer()(crops, boxes)[:-1]

    with pytest.raises(RuntimeError, match="2 results for a batch of 3"):
        list(score_in_batches(make_frames([3]), short, classify_batch=4, max_pending_frames=1))


def test_results_for_other_faces_raise() -> None:
    def reversed_scores(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        return FakeScorer()(crops, boxes)[::-1]

    with pytest.raises(RuntimeError, match="expected"):
        list(score_in_batches(make_frames([2]), reversed_scores, classify_batch=4, max_pending_frames=1))


@pytest.mark.parametrize(("batch", "pending"), [(0, 1), (1, 0)])
def test_bad_settings_raise(batch: int, pending: int) -> None:
    with pytest.raises(ValueError):
        list(score_in_batches(make_frames([1]), FakeScorer(), classify_batch=batch, max_pending_frames=pending))


def image_frame(index: int, h: int, w: int) -> Frame:
    return Frame(index=index, time_s=float(index), image=np.zeros((h, w, 3), np.uint8))


@pytest.mark.parametrize(
    ("shapes", "chunk", "expected"),
    [
        ([], 3, []),
        ([(4, 4)] * 5, 2, [[0, 1], [2, 3], [4]]),
        ([(4, 4)] * 3, 1, [[0], [1], [2]]),
        ([(4, 4)] * 3, 8, [[0, 1, 2]]),
        ([(4, 4), (4, 4), (6, 4), (6, 4), (6, 4), (4, 4)], 2, [[0, 1], [2, 3], [4], [5]]),
        ([(4, 4), (4, 6), (4, 4)], 4, [[0], [1], [2]]),
    ],
)
def test_chunk_frames(shapes: list[tuple[int, int]], chunk: int, expected: list[list[int]]) -> None:
    frames = [image_frame(i, h, w) for i, (h, w) in enumerate(shapes)]
    chunks = list(chunk_frames(frames, chunk))
    assert [[f.index for f in c] for c in chunks] == expected
    for c in chunks:
        assert len({f.image.shape for f in c}) == 1


def test_chunk_frames_is_lazy_and_checks_size() -> None:
    pulled: list[int] = []

    def source() -> Iterator[Frame]:
        for i in range(10):
            pulled.append(i)
            yield image_frame(i, 4, 4)

    gen = chunk_frames(source(), 3)
    assert [f.index for f in next(gen)] == [0, 1, 2] and pulled == [0, 1, 2]
    with pytest.raises(ValueError):
        list(chunk_frames([], 0))
