"""The store's contract, run against both stores (SQLite under a tmp dir; PostgreSQL: a real server started
by tests/pgserver.py, a fresh database per test): lifecycle, paging, recovery across a reopen, deletion,
exact floats, rolled-back failures, concurrent writers; then what only one of them has (SQLite's WAL,
PostgreSQL's schema table and its faults, made for real on the server)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from stream.store import SCHEMA_VERSION, Store, StoreError
from tests.pgserver import database_url


def _report(frames: tuple[FrameRow, ...], score: float = 0.8, timings: StageTimings | None = None) -> Report:
    media = MediaInfo("clip.mp4", 1234, "ab" * 32, "mov,mp4", "h264", 640, 360, 30.0, 2.0, 0, False, 60)
    model = ModelInfo("seed.pth", "cd" * 32, SEED_PROFILE, "cpu", untrained=False)
    return Report(
        media=media,
        policy=SamplingPolicy(),
        model=model,
        strategy=Strategy.MEAN,
        threshold=0.5,
        score=score,
        label=Label.FAKE,
        frames=frames,
        tracks=(),
        segments=(),
        timings=timings or StageTimings(total_s=1.0),
        version="0.1.0",
    )


FRAMES = (
    FrameRow(0, 0.0, 0.8, (FaceRow(0, (1.0, 2.0, 50.0, 60.0), 0.99, 0.8, 0),)),
    FrameRow(30, 1.0, None, ()),
)


@dataclass(frozen=True)
class Opener:
    """Opens a store on this test's database, the same one on every call (a second open is a restart)."""

    kind: str  # "sqlite" | "postgresql"
    where: str  # the data directory, or the database URL

    def __call__(self, busy_timeout_s: float = 10.0) -> Any:
        if self.kind == "sqlite":
            return Store(Path(self.where), busy_timeout_s)
        from stream.store_pg import PgStore

        return PgStore(self.where, busy_timeout_s)

    def set_schema_version(self, version: int) -> None:
        """What a newer program would have left (the store's own connection is not used)."""
        if self.kind == "sqlite":
            db = sqlite3.connect(Path(self.where) / "dff.sqlite3")
            db.execute(f"PRAGMA user_version={version}")
            db.close()
        else:
            import psycopg

            with psycopg.connect(self.where, autocommit=True) as db:
                db.execute("UPDATE schema_version SET version=%s", (version,))


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path) -> Opener:
    return Opener("sqlite", str(tmp_path)) if request.param == "sqlite" else Opener("postgresql", database_url(request))


@pytest.fixture
def store(open_store) -> Iterator[Any]:
    with open_store() as s:
        yield s


def _run_job(store: Any, job_id: str, frames=FRAMES, report: Report | None = None) -> dict:
    store.add_job(job_id, "clip.mp4", 1234)
    store.start_job(job_id, "ab" * 32, "seed.pth", "cd" * 32)
    for row in frames:
        store.add_frame(job_id, row)
    return store.finish_job(job_id, report or _report(frames))


# -- the contract: both stores ----------------------------------------------------------------------------


def test_lifecycle_and_reads(store):
    assert store.job("nope") is None and store.report("nope") is None
    store.add_job("job-a-000", "clip.mp4", 1234)
    assert store.job("job-a-000").status == "queued"
    assert store.report("job-a-000") is None  # no report until done
    body = _run_job(store, "job-b-000")
    row = store.job("job-b-000")
    assert (row.status, row.label, row.score, row.n_frames, row.kind) == ("done", "fake", 0.8, 2, "file")
    assert (row.media_sha256, row.model_name, row.model_sha256) == ("ab" * 32, "seed.pth", "cd" * 32)
    assert store.report("job-b-000") == body == report_to_dict(_report(FRAMES))
    frames = store.frames("job-b-000")
    assert [f["index"] for f in frames] == [0, 30]
    assert frames[1] == {"index": 30, "time_s": 1.0, "score": None, "faces": []}
    assert frames[0]["faces"][0]["track_id"] == 0
    assert store.frame_page("job-b-000", 0, 1 << 62) == list(FRAMES)  # the routes ask for "all" this way
    assert store.frame_page("job-b-000", 1, 5) == [FRAMES[1]] and store.frame_page("job-b-000", 2, 5) == []
    store.add_job("live-0000", "rtsp", 0, created_s=5.0, kind="live")
    assert (store.job("live-0000").kind, store.job("live-0000").created_s) == ("live", 5.0)


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
    assert store.list_jobs(5)[1] is None and len(store.list_jobs(4)[0]) == 4


def test_recover_marks_unfinished_jobs_interrupted_and_survives_reopen(open_store):
    with open_store() as store:
        body = _run_job(store, "job-done-00")
        store.add_job("job-queued", "q.mp4", 1)
        store.add_job("job-running", "r.mp4", 1)
        store.start_job("job-running", "ab" * 32, "m", "cd" * 32)
        store.add_frame("job-running", FRAMES[0])
        store.set_meta("active_model", "a.pth")
    with open_store() as store:  # a new process on the same database (the schema is not created twice)
        assert store.recover() == 2
        assert store.job("job-running").status == "interrupted"
        assert store.job("job-running").error_code == "interrupted"
        assert store.job("job-running").finished_s is not None
        assert len(store.frames("job-running")) == 1  # the part analysed before the crash is kept
        assert store.job("job-queued").status == "interrupted"
        assert store.report("job-done-00") == body
        assert store.get_meta("active_model") == "a.pth"
        assert [r.id for r in store.list_jobs(10)[0]] == ["job-running", "job-queued", "job-done-00"]
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


ODD = (0.1 + 0.2, 1 / 3, 2 / 3, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, -0.0, 123456.78901234567)


def test_floats_round_trip_to_the_last_digit(store):
    """Report, frames and job columns give back the very floats that went in (not a rounded decimal)."""
    frames = (
        FrameRow(0, 1 / 3, 0.1 + 0.2, (FaceRow(0, ODD[:4], 0.9999999999999999, 1 / 7, 0),)),
        FrameRow(1, 2 / 3, 2.2250738585072014e-308, (FaceRow(0, ODD[4:], 1e-17, 0.5000000000000001, 3),)),
    )
    timings = StageTimings(decode_s=1 / 3, detect_s=5e-324, classify_s=0.1 + 0.2, total_s=1.7976931348623157e308)
    report = _report(frames, score=0.30000000000000004, timings=timings)
    store.add_job("job-f-0000", "f.mp4", 1, created_s=1_700_000_000.1234567)
    for row in frames:
        store.add_frame("job-f-0000", row)
    body = store.finish_job("job-f-0000", report)
    stored = store.report("job-f-0000")
    assert stored == body and json.dumps(stored) == json.dumps(report_to_dict(report))  # the same digits
    assert stored["timings"]["detect_s"] == 5e-324 and stored["score"] == 0.30000000000000004
    assert store.frame_page("job-f-0000", 0, 10) == list(frames)
    got = store.frames("job-f-0000")
    assert [f["time_s"] for f in got] == [1 / 3, 2 / 3] and [f["score"] for f in got] == [
        0.1 + 0.2,
        2.2250738585072014e-308,
    ]
    assert math.copysign(1.0, got[1]["faces"][0]["xyxy"][2]) == -1.0  # -0.0 stays negative
    row = store.job("job-f-0000")
    assert (row.created_s, row.score) == (1_700_000_000.1234567, 0.30000000000000004)


def test_a_failed_write_changes_nothing(store):
    """Each write is one transaction: the part that failed is rolled back, the store goes on working."""
    _run_job(store, "job-ok-0000")
    with pytest.raises(StoreError) as err:
        store.add_job("job-ok-0000", "again.mp4", 9)  # ids are unique
    assert err.value.code == "store_error" and isinstance(err.value, OSError)
    with pytest.raises(StoreError):
        store.add_frame("job-none-00", FRAMES[0])  # no such job (foreign key): nothing half-written
    assert store.frames("job-none-00") == [] and store.job("job-none-00") is None
    row = store.job("job-ok-0000")
    assert (row.name, row.size_bytes, row.n_frames, row.status) == ("clip.mp4", 1234, 2, "done")
    store.add_job("job-next-00", "n.mp4", 1)
    assert store.job("job-next-00").status == "queued"


def test_a_frame_stored_again_replaces_the_first(store):
    store.add_job("job-r-0000", "r.mp4", 1)
    store.add_frame("job-r-0000", FRAMES[0])
    store.add_frame("job-r-0000", dataclasses.replace(FRAMES[0], score=0.25))
    assert [(f["index"], f["score"]) for f in store.frames("job-r-0000")] == [(0, 0.25)]


def _in_threads(*targets: Callable[[], object], timeout_s: float = 60.0) -> list[object]:
    """Run each target in a thread of its own, all at once; what each returned (or raised), in order."""
    results: list[object] = [None] * len(targets)

    def run(i: int) -> None:
        try:
            results[i] = targets[i]()
        except Exception as err:  # noqa: BLE001 - returned to the test
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return results


def test_concurrent_writers_and_readers(store):
    """The worker thread writes while HTTP threads read: no write is lost, no reader sees an error."""
    n_jobs, n_frames = 4, 25

    def write(j: int) -> None:
        store.add_job(f"job-c-{j}", "c.mp4", j)
        for i in range(n_frames):
            store.add_frame(f"job-c-{j}", dataclasses.replace(FRAMES[0], index=i))

    def read() -> None:
        for _ in range(50):
            store.list_jobs(10)
            store.frames("job-c-0")

    assert _in_threads(*(functools.partial(write, j) for j in range(n_jobs)), read) == [None] * (n_jobs + 1)
    assert [store.job(f"job-c-{j}").n_frames for j in range(n_jobs)] == [n_frames] * n_jobs
    assert [f["index"] for f in store.frames("job-c-3")] == list(range(n_frames))


def test_a_newer_schema_is_refused(open_store):
    with open_store() as store:
        store.add_job("job-s-0000", "s.mp4", 1)
    open_store.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_store()


# -- SQLite only ------------------------------------------------------------------------------------------


def test_sqlite_is_in_wal_mode(tmp_path):
    with Store(tmp_path) as store:
        store.add_job("job-w-0000", "w.mp4", 1)
        assert sqlite3.connect(tmp_path / "dff.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
