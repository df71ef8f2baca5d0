"""Persistent jobs and reports in PostgreSQL (psycopg 3): the ``Store`` of stream/store.py, same interface,
same guarantees, for a server that ``DFF_DATABASE_URL=postgresql://...`` points at a shared database.

    jobs            one row per accepted upload (``seq`` an identity column: paging newest first)
    frames          one row per analysed frame, written as frames arrive
    meta            small key/values (the active model's file name)
    schema_version  one row: the schema's version (``SCHEMA_VERSION`` of stream/store.py)

The tables are created on first open, idempotently, under an advisory lock (two servers may start at once).
Reports and faces are stored as the JSON *text* ``Store`` writes (not jsonb, which would re-render numbers
and reorder keys): ``report()`` returns exactly the dict that was stored, every float to the last digit;
``double precision`` columns round-trip Python floats exactly too.

One connection guarded by a lock, as in SQLite: writes are a few per frame and every reader is short. Each
write is one transaction, rolled back on error. A connection the server dropped (restart, failover) is
opened again on the next call; the call that found it broken fails with ``store_error``.

Every psycopg failure leaves as a ``StoreError`` by SQLSTATE: 53100 disk_full -> ``storage_full``; 25006
read_only_sql_transaction -> ``store_read_only``; 55P03 lock_not_available (``lock_timeout`` =
``busy_timeout_s``), 57014 query_canceled (``statement_timeout``), 40001 serialization_failure, 40P01
deadlock_detected -> ``store_busy``; anything else -> ``store_error``. A connection error names the user,
host, port and database; the password never appears in a message or a log line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from pipeline.report import report_to_dict
from pipeline.types import FrameRow, Report
from stream.state import ENDS_WITHOUT_REPORT, JobState
from stream.store import (
    _ROW_COLUMNS,
    _UNCHANGED,
    SCHEMA_VERSION,
    JobRow,
    Status,
    StoreError,
    _face_dict,
    frame_rows,
    job_page,
)

log = logging.getLogger("dff.store")

_SCHEMA_LOCK = 0x0D1F_F5C4  # pg_advisory_xact_lock key: one creator of the schema at a time
_BUSY = {"55P03", "57014", "40001", "40P01"}
_LOST = "08"  # SQLSTATE class: connection exception

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL UNIQUE,
    status        text NOT NULL,
    created_s     double precision NOT NULL,
    finished_s    double precision,
    name          text NOT NULL,
    size_bytes    bigint NOT NULL,
    media_sha256  text,
    model_name    text,
    model_sha256  text,
    label         text,
    score         double precision,
    n_frames      integer NOT NULL DEFAULT 0,
    error_code    text,
    error_message text,
    report_json   text,
    kind          text NOT NULL DEFAULT 'file'
);
CREATE TABLE IF NOT EXISTS frames (
    job_id     text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    time_s     double precision NOT NULL,
    score      double precision,
    faces_json text NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
"""


def describe(url: str) -> str:
    """``user@host:port/dbname`` of a libpq URL or conninfo string: what a message may say (no password)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable database URL"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or '(default database)'}"


def store_error(err: psycopg.Error, busy_timeout_s: float, target: str, secret: str | None = None) -> StoreError:
    """The typed error for a psycopg failure, by its SQLSTATE. ``secret``: a password to scrub from the text."""
    text = str(err).strip().replace("\n", " ")
    if secret:
        text = text.replace(secret, "***")
    state = err.sqlstate or ""
    if state == "53100":
        return StoreError("storage_full", f"the server's storage is full ({text}); {_UNCHANGED}")
    if state == "25006":
        return StoreError("store_read_only", f"the server's database is read-only ({text}); {_UNCHANGED}")
    if state in _BUSY:
        return StoreError(
            "store_busy",
            f"the server's database stayed busy (locked or overloaded) for {busy_timeout_s:g} s ({text}); {_UNCHANGED}",
        )
    if not state or state.startswith(_LOST) or (isinstance(err, psycopg.OperationalError) and state.startswith("57P")):
        # no SQLSTATE: libpq itself failed (refused, timed out, dropped); 57P0x: the server shut the session
        return StoreError("store_error", f"the PostgreSQL database {target} cannot be reached ({text}); {_UNCHANGED}")
    return StoreError("store_error", f"the server's database failed ({state}: {text}); {_UNCHANGED}")


class PgStore:
    """The PostgreSQL store. A context manager; every method is thread-safe and commits before returning."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0) -> None:
        """Connect to ``url`` (``postgresql://user[:password]@host[:port]/dbname``) and create the schema if
        it is not there. A statement that waits for a lock longer than ``busy_timeout_s`` (``lock_timeout``)
        fails with ``store_busy``; so does one that runs past twice that plus 5 s (``statement_timeout``:
        the database is overloaded). ``StoreError`` when the database cannot be reached; RuntimeError when
        it holds another schema version."""
        self.busy_timeout_s = busy_timeout_s
        self.target = describe(url)
        parts = conninfo_to_dict(url)
        self._secret = parts.get("password") or None
        # libpq waits forever to connect unless told; the URL's own choice wins
        defaults = {"connect_timeout": max(5, round(busy_timeout_s))} if "connect_timeout" not in parts else {}
        self._conninfo = make_conninfo(url, application_name=parts.get("application_name") or "dff", **defaults)
        self._lock = threading.Lock()
        self._closed = False
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        with self._lock:
            try:
                self._create_schema()
            except BaseException:
                if self._conn is not None:
                    self._conn.close()
                raise
        log.info("store: PostgreSQL %s", self.target)

    # -- the connection ---------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        """The open connection (caller holds the lock); a broken one is replaced."""
        if self._closed:
            raise StoreError("store_error", f"the store ({self.target}) is closed; {_UNCHANGED}")
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._conn is not None:
            log.warning("store: the connection to %s was lost; connecting again", self.target)
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.Error as err:
            raise self._error(err) from None  # from None: the chained error's args hold nothing more
        lock_ms = max(1, round(self.busy_timeout_s * 1000))  # 0 would mean "wait forever" in PostgreSQL
        try:
            conn.execute(
                "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                (f"{lock_ms}ms", f"{2 * lock_ms + 5000}ms"),
            )
        except psycopg.Error as err:
            conn.close()
            raise self._error(err) from None
        self._conn = conn
        return conn

    def _create_schema(self) -> None:
        """Check the schema's version; create the schema when there is none. A database that has it is only
        read (it may be read-only: the reads still work, each write fails with ``store_read_only``)."""
        with self._mapped():
            conn = self._connection()
            if self._schema_version(conn) is None:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(_SCHEMA)  # idempotent (IF NOT EXISTS): another server may have just made it
                    if self._schema_version(conn) is None:
                        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
            version = self._schema_version(conn)
            if version != SCHEMA_VERSION:
                raise RuntimeError(f"{self.target} has schema version {version}; this program knows {SCHEMA_VERSION}")

    @staticmethod
    def _schema_version(conn: psycopg.Connection[dict[str, Any]]) -> int | None:
        if conn.execute("SELECT to_regclass('schema_version') AS t").fetchone()["t"] is None:  # type: ignore[index]
            return None
        row = conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
        return None if row is None else row["v"]

    def _error(self, err: psycopg.Error) -> StoreError:
        return store_error(err, self.busy_timeout_s, self.target, self._secret)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as err:
            raise self._error(err) from err

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One transaction: committed when the block ends, rolled back when it raises (a failed COMMIT too)."""
        with self._lock, self._mapped():
            conn = self._connection()
            with conn.transaction():
                yield conn

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock, self._mapped():
            return self._connection().execute(sql, args).fetchall()

    # -- the job lifecycle (called by the worker thread) --------------------------------------------------

    def recover(self) -> int:
        """Mark jobs left ``queued``/``running`` by a previous process as ``interrupted``; how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='interrupted', finished_s=%s, error_code='interrupted', "
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
                "INSERT INTO jobs (id, status, created_s, name, size_bytes, kind) "
                "VALUES (%s, 'queued', %s, %s, %s, %s)",
                (job_id, time.time() if created_s is None else created_s, name, size_bytes, kind),
            )

    def start_job(self, job_id: str, media_sha256: str | None, model_name: str, model_sha256: str) -> None:
        """The file opened as media and analysis began (status ``running``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status='running', media_sha256=%s, model_name=%s, model_sha256=%s WHERE id=%s",
                (media_sha256, model_name, model_sha256, job_id),
            )

    def add_frame(self, job_id: str, row: FrameRow) -> None:
        """One analysed frame, committed at once (a frame stored again replaces the earlier row)."""
        faces = json.dumps([_face_dict(f) for f in row.faces], separators=(",", ":"))
        with self._tx() as db:
            db.execute(
                "INSERT INTO frames (job_id, idx, time_s, score, faces_json) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (job_id, idx) DO UPDATE SET time_s=EXCLUDED.time_s, score=EXCLUDED.score, "
                "faces_json=EXCLUDED.faces_json",
                (job_id, row.index, row.time_s, row.score, faces),
            )
            db.execute("UPDATE jobs SET n_frames = n_frames + 1 WHERE id=%s", (job_id,))

    def finish_job(self, job_id: str, report: Report) -> dict[str, Any]:
        """Store the final report (status ``done``) and return it as the JSON dict that was stored."""
        body = report_to_dict(report)
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status='done', finished_s=%s, label=%s, score=%s, n_frames=%s, report_json=%s "
                "WHERE id=%s",
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
                "UPDATE jobs SET status=%s, finished_s=%s, error_code=%s, error_message=%s WHERE id=%s",
                (state.value, time.time(), code, message, job_id),
            )

    # -- reading (HTTP routes) ------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobRow | None:
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM jobs WHERE id=%s", (job_id,))
        return JobRow(**rows[0]) if rows else None

    def report(self, job_id: str) -> dict[str, Any] | None:
        """The stored report JSON (schema ``dff.report/1``) of a ``done`` job, else None."""
        rows = self._read("SELECT report_json FROM jobs WHERE id=%s AND status='done'", (job_id,))
        return json.loads(rows[0]["report_json"]) if rows else None

    def frames(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored frame of a job in stream order: index, time_s, score (None = no face), faces."""
        rows = self._read("SELECT idx, time_s, score, faces_json FROM frames WHERE job_id=%s ORDER BY idx", (job_id,))
        return [
            {"index": r["idx"], "time_s": r["time_s"], "score": r["score"], "faces": json.loads(r["faces_json"])}
            for r in rows
        ]

    def frame_page(self, job_id: str, offset: int, limit: int) -> list[FrameRow]:
        """Stored frames ``offset`` .. ``offset + limit - 1`` in stream order (frame index order)."""
        rows = self._read(
            "SELECT idx, time_s, score, faces_json FROM frames WHERE job_id=%s ORDER BY idx LIMIT %s OFFSET %s",
            (job_id, limit, offset),
        )
        return frame_rows(rows)

    def list_jobs(self, limit: int, before: int | None = None) -> tuple[list[JobRow], int | None]:
        """Newest first, ``limit`` rows older than the ``before`` cursor; returns (rows, next cursor or None)."""
        if before is None:
            rows = self._read(f"SELECT seq, {_ROW_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT %s", (limit + 1,))
        else:
            rows = self._read(
                f"SELECT seq, {_ROW_COLUMNS} FROM jobs WHERE seq < %s ORDER BY seq DESC LIMIT %s", (before, limit + 1)
            )
        return job_page(rows, limit)

    def delete(self, job_id: str) -> bool:
        """Delete a job, its frames and report; False when there was no such job."""
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE id=%s", (job_id,)).rowcount > 0

    # -- meta -----------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key=%s", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
