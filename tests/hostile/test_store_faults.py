"""The database refuses: read-only, locked by another process, out of space. Each is made for real in SQLite
(``PRAGMA query_only`` and ``PRAGMA max_page_count`` on the server's own connection — chmod would not stop
root — and a second connection holding ``BEGIN EXCLUSIVE``). The client gets a clear ``error`` naming what
happened, the slot and the upload are freed, the server keeps serving, and what was stored before is
byte-identical with ``PRAGMA integrity_check`` ok."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from stream.store import DB_NAME
from tests.media import encode_video, face_scene
from tests.servers import Served, make_settings, serving
from tests.stream.conftest import get_json, http, wait_for
from ui.client import analyze_file


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = [face_scene(320, 240, [(40 + 3 * t, 50, 120)]) for t in range(40)]
    return encode_video(tmp_path_factory.mktemp("store_faults") / "clip.mp4", frames, fps=10)  # 4 s


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("store_faults_server")
    save_checkpoint(build_model(), root / "models" / "random.pth")
    with serving(make_settings(root / "data", root / "models", store_busy_timeout_s=1.0)) as server:
        yield server


@pytest.fixture(scope="module")
def earlier(served, clip) -> tuple[str, bytes]:
    """A report stored before any fault: its id and the exact bytes GET returns."""
    done = _run(served, clip)[-1]
    assert isinstance(done, p.Done)
    return done.job_id, _report_bytes(served, done.job_id)


def _run(server: Served, clip: Path, every_s: float = 0.5) -> list[p.Message]:
    async def go() -> list[p.Message]:
        return [m async for m in analyze_file(clip, server.ws, options=p.Options(every_s=every_s))]

    return asyncio.run(go())


def _report_bytes(server: Served, job_id: str) -> bytes:
    status, _, body = http("GET", f"{server.http}/v1/reports/{job_id}")
    assert status == 200
    return body


def _pragma(server: Served, sql: str) -> None:
    store = server.service.store
    with store._lock:  # the fault is made on the server's own connection, between its transactions
        store._db.execute(sql)


def _assert_intact(server: Served, earlier: tuple[str, bytes]) -> None:
    job_id, body = earlier
    assert _report_bytes(server, job_id) == body
    db = sqlite3.connect(f"file:{server.settings.data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    depth = get_json(f"{server.http}/healthz")[1]["queue"]
    assert depth["uploading"] == depth["waiting"] == depth["running"] == 0
    uploads = server.settings.data_dir / "uploads"
    wait_for(lambda: not uploads.exists() or not any(uploads.iterdir()), timeout_s=5)


def _still_serves(server: Served, clip: Path) -> None:
    assert get_json(f"{server.http}/healthz")[0] == 200
    assert isinstance(_run(server, clip, every_s=2.0)[-1], p.Done)


def test_read_only_database(served, clip, earlier):
    _pragma(served, "PRAGMA query_only=ON")
    try:
        error = _run(served, clip)[-1]
        assert isinstance(error, p.Error) and error.code == "store_read_only", error
        assert "read-only" in error.message and "intact" in error.message and error.job_id
        status, _, body = http("DELETE", f"{served.http}/v1/reports/{earlier[0]}")
        assert status == 503 and b'"store_read_only"' in body  # a refused write over HTTP: JSON, not a 500
        _assert_intact(served, earlier)
    finally:
        _pragma(served, "PRAGMA query_only=OFF")
    _still_serves(served, clip)


def _lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_locked_database_fails_after_the_busy_timeout(served, clip, earlier):
    other = _lock(served.settings.data_dir / DB_NAME)
    try:
        error = _run(served, clip)[-1]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert isinstance(error, p.Error) and error.code == "store_busy", error
    assert "locked" in error.message and "1 s" in error.message
    _assert_intact(served, earlier)
    _still_serves(served, clip)


def test_a_lock_released_within_the_busy_timeout_is_waited_out(served, clip, earlier):
    other = _lock(served.settings.data_dir / DB_NAME)
    release = threading.Timer(0.4, lambda: (other.execute("ROLLBACK"), other.close()))
    release.start()
    try:
        done = _run(served, clip)[-1]
    finally:
        release.join()
    assert isinstance(done, p.Done), done
    _assert_intact(served, earlier)


def test_full_database(served, clip, earlier):
    store = served.service.store
    with store._lock:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    _pragma(served, f"PRAGMA max_page_count={pages}")  # not one page more: the next growth is SQLITE_FULL
    try:
        error = _run(served, clip, every_s=0.1)[-1]
        assert isinstance(error, p.Error) and error.code == "storage_full", error
        assert "storage is full" in error.message and "intact" in error.message
        _assert_intact(served, earlier)
    finally:
        _pragma(served, "PRAGMA max_page_count=1073741823")
    _still_serves(served, clip)
