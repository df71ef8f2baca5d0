"""Persistent jobs and reports: one SQLite file (stdlib ``sqlite3``, WAL) under the data directory.

    jobs    one row per accepted upload: status, media facts, verdict, error, the report JSON when done
    frames  one row per analysed frame (written as frames arrive, so an interrupted job keeps its part)
    meta    small key/values (the active model's file name)

``jobs.status`` holds ``JobState`` values (stream/state.py; ``Job`` owns the state in memory and moves it):
``queued -> running -> done | failed | cancelled | interrupted``; a server that starts and finds
``queued``/``running`` rows (it crashed or was killed) marks them ``interrupted``: nothing is silently lost.
A report is committed before the caller sends ``done``. Ids come from the caller (random, unguessable).
One connection guarded by a lock: writes are a few per frame, and every reader is short.

Every ``sqlite3`` failure leaves this module as a ``StoreError`` whose ``code`` says what happened
(``storage_full``, ``store_read_only``, ``store_busy`` after waiting ``busy_timeout_s`` for a lock,
``store_error``); a failed transaction is rolled back, so what was committed before stays intact.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pipeline.errors import DffError
from pipeline.report import report_to_dict
from pipeline.types import FaceRow, FrameRow, Report
from stream.state import ENDS_WITHOUT_REPORT, JobState

log = logging.getLogger("dff.store")

DB_NAME = "dff.sqlite3"
SCHEMA_VERSION = 2  # 2: jobs.kind (file | live); a version-1 database gets the column on open
Status = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]  # the stored JobState values


class StoreError(DffError, OSError):
    """The database refused a read or write. ``code``: storage_full | store_read_only | store_busy | store_error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_UNCHANGED = "the change was not saved; what was stored before is intact"


def store_error(err: sqlite3.Error, busy_timeout_s: float) -> StoreError:
    """The typed error for a ``sqlite3`` failure, by SQLite's primary result code."""
    primary = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return StoreError("storage_full", f"the server's storage is full ({err}); {_UNCHANGED}")
    if primary == sqlite3.SQLITE_READONLY:
        return StoreError("store_read_only", f"the server's database is read-only ({err}); {_UNCHANGED}")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            "store_busy",
            f"the server's database stayed locked by another process for {busy_timeout_s:g} s ({err}); {_UNCHANGED}",
        )
    return StoreError("store_error", f"the server's database failed ({err}); {_UNCHANGED}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,   -- insertion order: paging newest first
    id            TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL,
    created_s     REAL NOT NULL,                       -- unix time
    finished_s    REAL,
    name          TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    media_sha256  TEXT,
    model_name    TEXT,
    model_sha256  TEXT,
    label         TEXT,
    score         REAL,
    n_frames      INTEGER NOT NULL DEFAULT 0,
    error_code    TEXT,
    error_message TEXT,
    report_json   TEXT,
    kind          TEXT NOT NULL DEFAULT 'file'         -- 'file' | 'live' (a live session has no upload)
);
CREATE TABLE IF NOT EXISTS frames (
    job_id     TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,                       -- frame index in the decoded stream
    time_s     REAL NOT NULL,
    score      REAL,                                   -- NULL = no face in the frame
    faces_json TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the report list shows it (no per-frame data, no report body). Times in unix seconds."""

    id: str
    status: Status
    created_s: float
    finished_s: float | None
    name: str
    size_bytes: int
    media_sha256: str | None
    model_name: str | None
    model_sha256: str | None
    label: str | None
    score: float | None
    n_frames: int
    error_code: str | None
    error_message: str | None
    kind: str = "file"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created_s": round(self.created_s, 3),
            "finished_s": None if self.finished_s is None else round(self.finished_s, 3),
            "name": self.name,
            "size_bytes": self.size_bytes,
            "media_sha256": self.media_sha256,
            "model": None if self.model_name is None else {"name": self.model_name, "sha256": self.model_sha256},
            "label": self.label,
            "score": self.score,
            "n_frames": self.n_frames,
            "error": None if self.error_code is None else {"code": self.error_code, "message": self.error_message},
            "kind": self.kind,
        }


_ROW_COLUMNS = (
    "id, status, created_s, finished_s, name, size_bytes, media_sha256, model_name, model_sha256, "
    "label, score, n_frames, error_code, error_message, kind"
)


def frame_rows(rows: Iterable[Mapping[str, Any]]) -> list[FrameRow]:
    """Stored ``frames`` rows (idx, time_s, score, faces_json) -> FrameRows (both stores read them so)."""
    return [
        FrameRow(
            r["idx"],
            r["time_s"],
            r["score"],
            tuple(
                FaceRow(
                    f["face_index"],
                    tuple(f["xyxy"]),
                    f["detector_prob"],
                    f["fake_prob"],
                    f["track_id"],
                    tuple(f.get("detector_probs", ())),
                )
                for f in json.loads(r["faces_json"])
            ),
        )
        for r in rows
    ]


def job_page(rows: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[JobRow], int | None]:
    """``limit + 1`` rows (``seq`` + the row columns, newest first) -> one page and the next page's cursor."""
    page = rows[:limit]
    cursor = page[-1]["seq"] if len(rows) > limit else None
    return [JobRow(**{k: v for k, v in r.items() if k != "seq"}) for r in page], cursor


def _face_dict(face: Any) -> dict[str, Any]:
    """Floats exact, as in the report JSON, so /frames and the report agree to the last digit."""
    return {
        "face_index": face.face_index,
        "xyxy": [float(v) for v in face.xyxy],
        "detector_prob": float(face.detector_prob),
        "fake_prob": float(face.fake_prob),
        "track_id": face.track_id,
    }


class Store:
    """The SQLite store. A context manager; every method is thread-safe and commits before returning."""

    def __init__(self, data_dir: Path, busy_timeout_s: float = 10.0) -> None:
        """Open (creating) ``data_dir/dff.sqlite3``; WAL journal, foreign keys on. A write that finds the
        database locked by another process retries for ``busy_timeout_s`` before raising ``store_busy``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        # check_same_thread=False: the worker thread writes, HTTP handler threads read; the lock serialises.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash can lose the last ones.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            self._db.close()
            raise RuntimeError(f"{self.path} has schema version {version}; this program knows {SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        if version == 1:
            self._db.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'file'")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise store_error(err, self.busy_timeout_s) from err

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._mapped():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # inside: a failed COMMIT (disk full) must roll back too
            except BaseException:
                # SQLite may already have rolled back by itself (SQLITE_FULL, SQLITE_BUSY, ...)
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("rollback failed after an error (the error itself is raised)")
                raise

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, self._mapped():
            return self._db.execute(sql, args).fetchall()

    # -- the job lifecycle (called by the worker thread) --------------------------------------------------

    def recover(self) -> int:
        """Mark jobs left ``queued``/``running`` by a previous process as ``interrupted``; how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='interrupted', finished_s=?, error_code='interrupted', "
                "error_message='the server stopped before this job finished' "
                "WHERE status IN ('queued', 'running')",
                (time.time(),),
            )
            return cur.rowcount

    def add_job(
        self, job_id: str, name: str, size_bytes: int, created_s: float | None = None, kind: str = "file"
    ) -> None:
        """A fully uploaded file (or a live session about to start) waiting for the worker (``queued``)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, status, created_s, name, size_bytes, kind) VALUES (?, 'queued', ?, ?, ?, ?)",
                (job_id, time.time() if created_s is None else created_s, name, size_bytes, kind),
            )

    def start_job(self, job_id: str, media_sha256: str | None, model_name: str, model_sha256: str) -> None:
        """The file opened as media and analysis began (status ``running``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status='running', media_sha256=?, model_name=?, model_sha256=? WHERE id=?",
                (media_sha256, model_name, model_sha256, job_id),
            )

    def add_frame(self, job_id: str, row: FrameRow) -> None:
        """One analysed frame, committed at once."""
        faces = json.dumps([_face_dict(f) for f in row.faces], separators=(",", ":"))
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO frames (job_id, idx, time_s, score, faces_json) VALUES (?, ?, ?, ?, ?)",
                (job_id, row.index, row.time_s, row.score, faces),
            )
            db.execute("UPDATE jobs SET n_frames = n_frames + 1 WHERE id=?", (job_id,))

    def finish_job(self, job_id: str, report: Report) -> dict[str, Any]:
        """Store the final report (status ``done``) and return it as the JSON dict that was stored."""
        body = report_to_dict(report)
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status='done', finished_s=?, label=?, score=?, n_frames=?, report_json=? WHERE id=?",
                (time.time(), report.label.value, report.score, body["summary"]["n_frames"], text, job_id),
            )
        return body

    def end_job(self, job_id: str, status: JobState | Status, code: str, message: str) -> None:
        """A job that ended without a report: ``failed``, ``cancelled`` or ``interrupted``, with why."""
        state = JobState(status)  # ValueError for a status that is no state
        if state not in ENDS_WITHOUT_REPORT:
            raise ValueError(f"end_job is for jobs without a report, got status {status!r}")
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status=?, finished_s=?, error_code=?, error_message=? WHERE id=?",
                (state.value, time.time(), code, message, job_id),
            )

    # -- reading (HTTP routes) ------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobRow | None:
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return JobRow(**dict(rows[0])) if rows else None

    def report(self, job_id: str) -> dict[str, Any] | None:
        """The stored report JSON (schema ``dff.report/1``) of a ``done`` job, else None."""
        rows = self._read("SELECT report_json FROM jobs WHERE id=? AND status='done'", (job_id,))
        return json.loads(rows[0]["report_json"]) if rows else None

    def frames(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored frame of a job in stream order: index, time_s, score (None = no face), faces."""
        rows = self._read("SELECT idx, time_s, score, faces_json FROM frames WHERE job_id=? ORDER BY idx", (job_id,))
        return [
            {"index": r["idx"], "time_s": r["time_s"], "score": r["score"], "faces": json.loads(r["faces_json"])}
            for r in rows
        ]

    def frame_page(self, job_id: str, offset: int, limit: int) -> list[FrameRow]:
        """Stored frames ``offset`` .. ``offset + limit - 1`` in stream order (frame index order, which is the
        order they were sent in: the ``seq`` of a frame message is its position here)."""
        rows = self._read(
            "SELECT idx, time_s, score, faces_json FROM frames WHERE job_id=? ORDER BY idx LIMIT ? OFFSET ?",
            (job_id, limit, offset),
        )
        return frame_rows(rows)

    def list_jobs(self, limit: int, before: int | None = None) -> tuple[list[JobRow], int | None]:
        """Newest first, ``limit`` rows older than the ``before`` cursor; returns (rows, next cursor or None)."""
        if before is None:
            rows = self._read(f"SELECT seq, {_ROW_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ?", (limit + 1,))
        else:
            rows = self._read(
                f"SELECT seq, {_ROW_COLUMNS} FROM jobs WHERE seq < ? ORDER BY seq DESC LIMIT ?", (before, limit + 1)
            )
        return job_page([dict(r) for r in rows], limit)

    def delete(self, job_id: str) -> bool:
        """Delete a job, its frames and report; False when there was no such job."""
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE id=?", (job_id,)).rowcount > 0

    # -- meta -----------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
