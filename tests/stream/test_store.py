"""The SQLite store on its own: lifecycle, paging, recovery, reopening, deletion."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from pipeline.models import SEED_PROFILE
from pipeline.report import report_to_dict
from pipeline.types import (
    FaceRow,
    FrameRow,
    Label,
    MediaInfo,
    ModelInfo,
    Report,
    SamplingPolicy,
    StageTimings,
    Strategy,
)
from stream.store import Store


def _report(frames: tuple[FrameRow, ...]) -> Report:
    media = MediaInfo("clip.mp4", 1234, "ab" * 32, "mov,mp4", "h264", 640, 360, 30.0, 2.0, 0, False, 60)
    model = ModelInfo("seed.pth", "cd" * 32, SEED_PROFILE, "cpu", untrained=False)
    return Report(
        media=media,
        policy=SamplingPolicy(),
        model=model,
        strategy=Strategy.MEAN,
        threshold=0.5,
        score=0.8,
        label=Label.FAKE,
        frames=frames,
        tracks=(),
        segments=(),
        timings=StageTimings(total_s=1.0),
        version="0.1.0",
    )


FRAMES = (
    FrameRow(0, 0.0, 0.8, (FaceRow(0, (1.0, 2.0, 50.0, 60.0), 0.99, 0.8, 0),)),
    FrameRow(30, 1.0, None, ()),
)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path) as s:
        yield s


def _run_job(store: Store, job_id: str, frames=FRAMES) -> dict:
    store.add_job(job_id, "clip.mp4", 1234)
    store.start_job(job_id, "ab" * 32, "seed.pth", "cd" * 32)
    for row in frames:
        store.add_frame(job_id, row)
    return store.finish_job(job_id, _report(frames))


def test_lifecycle_and_reads(store, tmp_path):
    assert store.job("nope") is None and store.report("nope") is None
    store.add_job("job-a-000", "clip.mp4", 1234)
    assert store.job("job-a-000").status == "queued"
    assert store.report("job-a-000") is None  # no report until done
    body = _run_job(store, "job-b-000")
    row = store.job("job-b-000")
    assert (row.status, row.label, row.score, row.n_frames) == ("done", "fake", 0.8, 2)
    assert store.report("job-b-000") == body == report_to_dict(_report(FRAMES))
    frames = store.frames("job-b-000")
    assert [f["index"] for f in frames] == [0, 30]
    assert frames[1] == {"index": 30, "time_s": 1.0, "score": None, "faces": []}
    assert frames[0]["faces"][0]["track_id"] == 0
    # WAL mode, as promised
    assert sqlite3.connect(tmp_path / "dff.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_paging_is_newest_first_with_a_cursor(store):
    for i in range(5):
        store.add_job(f"job-{i}-0000", f"f{i}.mp4", i)
    seen, cursor = [], None
    while True:
        rows, cursor = store.list_jobs(2, cursor)
        seen += [r.id for r in rows]
        if cursor is None:
            break
    assert seen == [f"job-{i}-0000" for i in reversed(range(5))]


def test_recover_marks_unfinished_jobs_interrupted_and_survives_reopen(tmp_path):
    with Store(tmp_path) as store:
        _run_job(store, "job-done-00")
        store.add_job("job-queued", "q.mp4", 1)
        store.add_job("job-running", "r.mp4", 1)
        store.start_job("job-running", "ab" * 32, "m", "cd" * 32)
        store.add_frame("job-running", FRAMES[0])
    with Store(tmp_path) as store:  # a new process on the same data directory
        assert store.recover() == 2
        assert store.job("job-running").status == "interrupted"
        assert store.job("job-running").error_code == "interrupted"
        assert len(store.frames("job-running")) == 1  # the part analysed before the crash is kept
        assert store.job("job-queued").status == "interrupted"
        assert store.report("job-done-00")["label"] == "fake"
        assert store.recover() == 0


def test_end_job_and_delete(store):
    store.add_job("job-x-0000", "x.mp4", 1)
    store.end_job("job-x-0000", "failed", "unsupported_media", "not a video")
    row = store.job("job-x-0000")
    assert (row.status, row.error_code) == ("failed", "unsupported_media")
    assert row.to_json()["error"] == {"code": "unsupported_media", "message": "not a video"}
    with pytest.raises(ValueError):
        store.end_job("job-x-0000", "done", "x", "y")
    _run_job(store, "job-y-0000")
    assert store.delete("job-y-0000") and not store.delete("job-y-0000")
    assert store.job("job-y-0000") is None and store.frames("job-y-0000") == []


def test_meta(store):
    assert store.get_meta("active_model") is None
    store.set_meta("active_model", "a.pth")
    store.set_meta("active_model", "b.pth")
    assert store.get_meta("active_model") == "b.pth"


def test_incomplete_report_keeps_its_reason(store):
    store.add_job("job-i-0000", "i.mp4", 1)
    body = store.finish_job("job-i-0000", dataclasses.replace(_report(FRAMES), incomplete="corrupt at 1.2 s"))
    assert body["incomplete"] == "corrupt at 1.2 s" == store.report("job-i-0000")["incomplete"]
