"""Cross-job batching (pipeline.batching.SharedBatches, rules S1-S4): threads that step on one engine share
score calls, each gets its own faces' results, and two analyses at once give the reports they give alone."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from pipeline.batching import SharedBatches, Turns
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.report import report_to_dict
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import FaceBox, FaceScore, Report, SampleMode
from tests.media import moving_faces_clip
from tests.pipeline.test_batching import FakeScorer, make_frame

JOIN_S = 20.0  # a thread that has not finished by then is stuck (the tests' own work takes milliseconds)
LONG_GATHER_S = 60.0  # a gather long enough that finishing at all shows rule S2 (a) or (b) fired, not (c)


def faces(frame_index: int, n: int) -> tuple[list[np.ndarray], list[FaceBox]]:
    frame = make_frame(frame_index, n)
    return list(frame.crops), list(frame.boxes)


class Jobs:
    """Threads that each run one step on ``shared``: ``body(shared)`` inside ``shared.step()``."""

    def __init__(self, shared: SharedBatches) -> None:
        self.shared = shared
        self.threads: list[threading.Thread] = []
        self.results: dict[str, list[FaceScore]] = {}
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, body: Callable[[SharedBatches], list[FaceScore]]) -> None:
        def run() -> None:
            try:
                with self.shared.step():
                    self.results[name] = body(self.shared)
            except BaseException as err:
                self.errors[name] = err

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(JOIN_S)
            assert not thread.is_alive(), f"{thread.name} is stuck"


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def scores_once_stepping(
    entered: threading.Event, stepping: int, *, frame_index: int, n: int
) -> Callable[[SharedBatches], list[FaceScore]]:
    """The first job's step: says it holds the turn (``entered``), waits until ``stepping`` threads are in
    ``step()`` (the others queue for the turn it holds), then scores ``n`` faces of ``frame_index``."""

    def body(s: SharedBatches) -> list[FaceScore]:
        entered.set()
        wait_until(lambda: s.stepping == stepping)
        return s.score(*faces(frame_index, n))

    return body


def scores_for(frame_index: int, n: int) -> Callable[[SharedBatches], list[FaceScore]]:
    return lambda shared: shared.score(*faces(frame_index, n))


def test_a_job_alone_never_waits_for_others() -> None:
    scorer = FakeScorer()
    jobs = Jobs(SharedBatches(scorer, Turns(), max_faces=8, gather_s=LONG_GATHER_S))
    jobs.start("a", scores_for(1, 3))
    jobs.join()
    assert scorer.batches == [[(1, 0), (1, 1), (1, 2)]]
    assert [s.box.frame_index for s in jobs.results["a"]] == [1, 1, 1]


def test_jobs_stepping_together_share_one_call_and_each_gets_its_own_faces() -> None:
    scorer = FakeScorer()
    shared = SharedBatches(scorer, Turns(), max_faces=32, gather_s=LONG_GATHER_S)
    jobs = Jobs(shared)
    entered = threading.Event()

    first = scores_once_stepping(entered, 3, frame_index=1, n=2)

    jobs.start("a", first)
    entered.wait(JOIN_S)
    jobs.start("b", scores_for(2, 3))
    jobs.start("c", scores_for(3, 1))
    jobs.join()
    assert not jobs.errors
    assert len(scorer.batches) == 1  # rule S2 (b): everyone stepping was waiting, so nobody waited 60 s
    assert sorted(scorer.batches[0]) == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0)]
    for name, frame_index, n in (("a", 1, 2), ("b", 2, 3), ("c", 3, 1)):
        got = jobs.results[name]
        assert [(s.box.frame_index, s.box.face_index) for s in got] == [(frame_index, i) for i in range(n)]
        assert [s.fake_prob for s in got] == [(frame_index + i / 100) / 1000 for i in range(n)]
    assert (shared.calls, shared.faces) == (1, 6)


def test_a_request_taken_by_another_leader_waits_for_its_results_through_any_wake_up() -> None:
    """While the leader scores, the others' requests are out of the queue but not done; a wake-up then
    (another job's step ending, a new request) must not make them lead or fail."""
    recorder = FakeScorer()
    shared: SharedBatches

    def score(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        with shared._cond:  # what other jobs' steps do while a batch is scored
            shared._cond.notify_all()
        time.sleep(0.05)
        return recorder(crops, boxes)

    shared = SharedBatches(score, Turns(), max_faces=32, gather_s=LONG_GATHER_S)
    jobs = Jobs(shared)
    entered = threading.Event()

    first = scores_once_stepping(entered, 3, frame_index=1, n=2)

    jobs.start("a", first)
    entered.wait(JOIN_S)
    jobs.start("b", scores_for(2, 1))
    jobs.start("c", scores_for(3, 1))
    jobs.join()
    assert not jobs.errors, jobs.errors
    assert len(recorder.batches) == 1 and sorted(recorder.batches[0]) == [(1, 0), (1, 1), (2, 0), (3, 0)]
    assert [s.box.frame_index for s in jobs.results["c"]] == [3]


def test_requests_are_never_split_and_a_call_holds_at_most_max_faces() -> None:
    scorer = FakeScorer()
    shared = SharedBatches(scorer, Turns(), max_faces=4, gather_s=LONG_GATHER_S)
    jobs = Jobs(shared)
    entered = threading.Event()

    first = scores_once_stepping(entered, 3, frame_index=1, n=2)

    jobs.start("a", first)
    entered.wait(JOIN_S)
    jobs.start("b", scores_for(2, 3))
    wait_until(lambda: shared.stepping == 2)
    jobs.start("c", scores_for(3, 2))
    jobs.join()
    assert not jobs.errors
    assert all(len(batch) <= 4 for batch in scorer.batches), scorer.batches
    assert sorted(f for batch in scorer.batches for f in batch) == [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (2, 2),
        (3, 0),
        (3, 1),
    ]
    for batch in scorer.batches:  # each request's faces sit together, in order, in one call
        frames = [f for f, _ in batch]
        for frame_index in set(frames):
            mine = [i for f, i in batch if f == frame_index]
            assert mine == list(range(len(mine)))
            assert len(mine) == {1: 2, 2: 3, 3: 2}[frame_index]


def test_the_oldest_request_queues_for_the_turn_once_it_has_waited_gather_s() -> None:
    """Job "b" is stepping but its step scores nothing (it decodes): "a" stops waiting for "b"'s faces after
    gather_s and takes its place in line, so it is scored as soon as "b"'s step ends, before "b"'s next."""
    scorer = FakeScorer()
    turns = Turns()
    shared = SharedBatches(scorer, turns, max_faces=32, gather_s=0.05)
    jobs = Jobs(shared)
    entered = threading.Event()
    holding = threading.Event()
    release = threading.Event()

    first = scores_once_stepping(entered, 2, frame_index=1, n=2)

    def decoding_then_scoring() -> None:
        with shared.step():
            holding.set()  # "a" has given the turn up: it is waiting for faces, or in line for the turn
            release.wait(JOIN_S)
        with shared.step():
            jobs.results["b"] = shared.score(*faces(2, 1))

    jobs.start("a", first)
    entered.wait(JOIN_S)
    b = threading.Thread(target=decoding_then_scoring, daemon=True)
    b.start()
    holding.wait(JOIN_S)
    wait_until(lambda: turns.queued == 2)  # "b" holds the turn, "a" (done waiting) is in line for it
    release.set()
    b.join(JOIN_S)
    jobs.join()
    assert scorer.batches == [[(1, 0), (1, 1)], [(2, 0)]]
    assert [s.box.frame_index for s in jobs.results["b"]] == [2]


def test_a_failing_shared_call_is_retried_per_request_so_only_its_job_fails() -> None:
    recorder = FakeScorer()

    def score(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        if any(b.frame_index == 9 for b in boxes):
            raise ValueError("frame 9 is poison")
        return recorder(crops, boxes)

    shared = SharedBatches(score, Turns(), max_faces=32, gather_s=LONG_GATHER_S)
    jobs = Jobs(shared)
    entered = threading.Event()

    first = scores_once_stepping(entered, 2, frame_index=1, n=2)

    jobs.start("good", first)
    entered.wait(JOIN_S)
    jobs.start("bad", scores_for(9, 1))
    jobs.join()
    assert set(jobs.results) == {"good"} and [s.box.frame_index for s in jobs.results["good"]] == [1, 1]
    assert isinstance(jobs.errors["bad"], ValueError) and "poison" in str(jobs.errors["bad"])
    assert recorder.batches == [[(1, 0), (1, 1)]]


def test_no_faces_makes_no_call_and_bad_settings_raise() -> None:
    scorer = FakeScorer()
    shared = SharedBatches(scorer, Turns(), max_faces=4, gather_s=0)
    with shared.step():
        assert shared.score([], []) == []
    assert scorer.batches == [] and shared.stepping == 0
    with pytest.raises(ValueError, match="max_faces"):
        SharedBatches(scorer, Turns(), max_faces=0, gather_s=0)
    with pytest.raises(ValueError, match="gather_s"):
        SharedBatches(scorer, Turns(), max_faces=4, gather_s=-1)


def test_turns_are_first_come_first_served() -> None:
    turns = Turns()
    order: list[int] = []
    turns.acquire()
    threads = []
    for i in range(4):
        thread = threading.Thread(target=lambda i=i: (turns.acquire(), order.append(i), turns.release()), daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # thread i is queued before thread i+1 asks
    turns.release()
    for thread in threads:
        thread.join(JOIN_S)
    assert order == [0, 1, 2, 3]


# -- two real analyses at once on one engine, sharing batches ---------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        device="cpu",
        sample_mode=SampleMode.EVERY_S,
        every_s=0.2,
        classify_batch=16,
        max_pending_frames=2,
    )


@pytest.fixture(scope="module")
def engine(settings):
    with Engine.open(settings, allow_untrained=True) as eng:
        yield eng


def comparable(report: Report) -> dict[str, object]:
    return {k: v for k, v in report_to_dict(report).items() if k not in ("timings", "media")}


def test_two_analyses_sharing_batches_give_the_reports_they_give_alone(engine, settings, tmp_path) -> None:
    clips = [
        moving_faces_clip(tmp_path / "three.mp4", seconds=2.0, fps=10, n_faces=3),
        moving_faces_clip(tmp_path / "two.mp4", seconds=1.6, fps=10, n_faces=2),
    ]

    def report(path, eng: Engine) -> Report:
        with open_media_for(path, settings) as source:
            *_, last = analyze(source, eng, settings)
        assert isinstance(last, Report)
        return last

    calls_alone: list[int] = []

    def counted(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        calls_alone.append(len(crops))
        return engine.classifier.score(crops, boxes)

    alone = [report(path, dataclasses.replace(engine, scorer=counted)) for path in clips]
    shared = SharedBatches(engine.classifier.score, Turns(), max_faces=16, gather_s=1.0)
    batched = dataclasses.replace(engine, scorer=shared.score)
    together: dict[int, Report] = {}

    def job(i: int) -> None:  # steps the way an actor's job thread does: one event per turn
        with open_media_for(clips[i], settings) as source:
            events = analyze(source, batched, settings)
            while True:
                with shared.step():
                    event = next(events, None)
                if event is None:
                    return
                if isinstance(event, Report):
                    together[i] = event

    threads = [threading.Thread(target=job, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    assert set(together) == {0, 1}
    for i in range(2):
        a, b = comparable(alone[i]), comparable(together[i])
        assert a.keys() == b.keys()
        assert _close(a, b), f"clip {i}: the shared-batch report differs from the solo one"
    # the two jobs' faces met in shared calls: fewer calls than the jobs' requests would make alone
    assert shared.faces == sum(calls_alone) == sum(len(f.faces) for r in alone for f in r.frames)
    assert shared.calls < len(calls_alone), (shared.calls, calls_alone)


def _close(a: object, b: object, tol: float = 1e-6) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b
